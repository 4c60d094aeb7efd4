import time

from django.core.management.base import BaseCommand

from feedback.rollups import rollup_rebuild


class Command(BaseCommand):
    help = (
        "Recount every metric rollup row from the feedback table, for instance "
        "after feedback was changed outside the intake services."
    )

    def handle(self, *args, **options) -> None:
        started = time.monotonic()
        rows = rollup_rebuild()
        seconds = time.monotonic() - started
        self.stdout.write(f"rebuilt {rows} rollup rows in {seconds:.2f} s")
