from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from feedback.importer import ImportFileError, ImportOptions, import_file, parse_mapping
from feedback.intake import FIELDS, KINDS, LANGUAGE_CODE_RE, MAX_LENGTHS, SOURCES


class Command(BaseCommand):
    help = (
        "Import feedback from a CSV or JSON Lines file. Prints one summary line "
        "'imported N, duplicates N, rejected N' and writes rejected rows with their "
        "reason to FILE.rejected.csv, in row order; its 'line' column has the text of "
        "lines that could not be split into columns. A quoted field that never closes "
        "rejects only the line it opens on. Importing the same file again adds nothing. "
        "A JSON Lines line is an object with the API's fields: as in the API, a key "
        "that is no field and not 'metadata' rejects the line."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path, help="CSV or JSON Lines file to import.")
        parser.add_argument(
            "--source", required=True, choices=sorted(SOURCES),
            help="Source of every CSV row. A JSON Lines line may give its own source, "
            "as in the API; this one fills in for lines without.",
        )
        parser.add_argument(
            "--kind", required=True, choices=sorted(KINDS),
            help="Kind of every CSV row. A JSON Lines line may give its own kind, "
            "as in the API; this one fills in for lines without.",
        )
        parser.add_argument(
            "--format", choices=["csv", "jsonl"], default="",
            help="File format; by default .jsonl and .ndjson files are JSON Lines, others CSV.",
        )
        parser.add_argument(
            "--map", action="append", default=[], metavar="FIELD=COLUMN",
            help=(
                "Read FIELD from COLUMN (repeatable). Fields: "
                + ", ".join(name for name in FIELDS if name not in ("kind", "source"))
                + ". Join columns with +, for example comment=Title+Review Text. "
                "Unmapped fields read the column of the same name, if any."
            ),
        )
        parser.add_argument("--delimiter", default=",", help="CSV field delimiter; 'tab' for tabs.")
        parser.add_argument(
            "--date-format", default="",
            help="strptime format of occurred_at, for example '%%d/%%m/%%Y %%H:%%M'; "
            "ISO 8601 by default. Times without an offset are taken as UTC.",
        )
        parser.add_argument(
            "--language", default="",
            help="Language code of every row (en, id, pt, ...); detected per row by default.",
        )
        parser.add_argument(
            "--id-prefix", default="",
            help="Text put before every external id, to keep apart files of one source "
            "whose ids overlap (for example row numbers): --id-prefix shopee-2025:",
        )
        parser.add_argument(
            "--batch-size", type=int, default=0,
            help="Rows stored per transaction; 0 uses OSCM_BATCH_SIZE (default 2000).",
        )
        parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")

    def handle(self, *args, **options):
        path: Path = options["file"]
        if options["batch_size"] < 0:
            raise CommandError(f"--batch-size {options['batch_size']} must be 0 or more.")
        language = options["language"].lower()
        if language and not LANGUAGE_CODE_RE.match(language):
            raise CommandError(
                f"--language {options['language']!r} is not a language code such as en, id or pt."
            )
        id_limit = MAX_LENGTHS["external_id"]
        if len(options["id_prefix"]) >= id_limit:
            raise CommandError(
                f"--id-prefix is {len(options['id_prefix'])} characters long, but an "
                f"external id has at most {id_limit}, prefix included, so no row would "
                f"fit; use a prefix of at most {id_limit - 1} characters."
            )
        try:
            import_options = ImportOptions(
                source=options["source"],
                kind=options["kind"],
                format=options["format"],
                mapping=parse_mapping(options["map"]),
                delimiter=options["delimiter"],
                date_format=options["date_format"],
                language=language,
                batch_size=options["batch_size"],
                id_prefix=options["id_prefix"],
            )
            with tqdm(
                total=path.stat().st_size if path.exists() else 0,
                unit="B", unit_scale=True, desc=path.name,
                disable=options["no_progress"] or None, file=self.stderr._out,
            ) as bar:
                def on_progress(done: int, total: int) -> None:
                    bar.update(done - bar.n)

                summary = import_file(path, import_options, on_progress=on_progress)
        except ImportFileError as error:
            raise CommandError(f"{path}: {error} Nothing was imported.") from None

        self.stdout.write(summary.line())
        if summary.rejected_path:
            self.stderr.write(f"rejected rows and their reasons: {summary.rejected_path}")
