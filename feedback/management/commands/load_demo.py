from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from cases.demo import demo_staff_ensure
from feedback.importer import ImportOptions, import_file

SAMPLE_DIR = Path(settings.BASE_DIR) / "sample"
SAMPLE_FILES = [
    ("tokopedia_reviews_id.csv", "review", "rating", "id"),
    ("clothing_reviews_en.csv", "review", "rating", "en"),
]


class Command(BaseCommand):
    help = (
        "Load the bundled real review sample (see sample/README.md) and create demo "
        "agents for each team. Running it again adds nothing."
    )

    def handle(self, *args, **options):
        created = demo_staff_ensure()
        if created:
            self.stdout.write(f"created {created} demo agents and leads")
        for name, source, kind, language in SAMPLE_FILES:
            summary = import_file(
                SAMPLE_DIR / name,
                ImportOptions(source=source, kind=kind, language=language),
            )
            self.stdout.write(f"{name}: {summary.line()}")
