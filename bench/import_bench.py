"""Time ``import_feedback`` on PostgreSQL beside two reference imports.

Generates N rows from the real data sets (``bench/make_data.py``), creates
and migrates a database of its own, and times the real command path. The
rating file and the NPS file each go through
``call_command("import_feedback")``, with customers, text analysis, rollups
and case evaluation included. Tasks run in-process (eager) unless
CELERY_BROKER_URL is set, so cases are opened inside the timed import.

References, measured afterwards on the same database with its tables
emptied:

- COPY: the same rows COPY'd into the customer and feedback tables by
  psycopg, with no analysis, rollups or cases.
- django-import-export: its ModelResource bulk import (``use_bulk``,
  ``skip_unchanged``, ``import_id_fields`` on the external id) of the first
  ``--subset`` rows of the rating file, customers created beforehand.

    .venv/bin/python bench/import_bench.py --rows 1000000
    .venv/bin/python bench/import_bench.py --rows 100000 --profile

``--worker`` measures the production mode instead: tasks go through Redis
(``--broker``, database 14 on 127.0.0.1 by default) to one Celery worker
process that this script starts and stops, and the time runs until every
feedback is evaluated. ``--profile`` runs the import under cProfile and
prints the top entries; its rows/s are lower than an unprofiled run's.
"""

import argparse
import cProfile
import csv
import io
import json
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchdb
from make_data import make_files

SOURCES = {"rating": "review", "nps": "survey"}
TABLES = (
    "cases_casefeedback",
    "cases_case",
    "feedback_feedbacktopic",
    "feedback_metricrollup",
    "feedback_feedback",
    "feedback_customer",
)
AGENTS_PER_TEAM = 4


def add_agents() -> None:
    """Give every team agents, so new cases are assigned as in production."""
    from django.contrib.auth import get_user_model

    from cases.models import Team, TeamMember

    user_model = get_user_model()
    for team in Team.objects.all():
        for number in range(AGENTS_PER_TEAM):
            user = user_model.objects.create(username=f"agent-{team.pk}-{number}")
            TeamMember.objects.create(team=team, user=user)


def run_import(files: dict[str, Path], *, profile: cProfile.Profile | None) -> float:
    from django.core.management import call_command

    started = time.perf_counter()
    for kind, path in files.items():
        output = io.StringIO()
        if profile:
            profile.enable()
        call_command(
            "import_feedback",
            str(path),
            source=SOURCES[kind],
            kind=kind,
            no_progress=True,
            stdout=output,
        )
        if profile:
            profile.disable()
        print(f"  {path.name}: {output.getvalue().strip()}")
    return time.perf_counter() - started


def start_worker(database_url: str, broker_url: str) -> subprocess.Popen:
    """Start one Celery worker process on the bench database and broker."""
    environment = {**os.environ, "DATABASE_URL": database_url,
                   "CELERY_BROKER_URL": broker_url, "LOG_LEVEL": "WARNING"}
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "oscm", "worker", "--concurrency", "1",
         "--loglevel", "WARNING", "--without-heartbeat", "--without-gossip", "--without-mingle"],
        cwd=benchdb.REPOSITORY, env=environment,
    )


def wait_until_evaluated(timeout: float) -> float:
    """Poll until every feedback is evaluated; return ``perf_counter()`` then."""
    from django.db import connection

    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM feedback_feedback WHERE evaluated_at IS NULL")
            if cursor.fetchone()[0] == 0:
                return time.perf_counter()
        time.sleep(0.2)
    raise SystemExit(f"feedback still unevaluated after {timeout:.0f} s; check that the worker started")


def table_counts() -> dict[str, int]:
    from django.db import connection

    counts = {}
    with connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(f"SELECT count(*) FROM {table}")
            counts[table] = cursor.fetchone()[0]
        cursor.execute(
            "SELECT count(*) FROM feedback_feedback WHERE evaluated_at IS NULL"
        )
        counts["unevaluated"] = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM cases_case WHERE assignee_id IS NOT NULL")
        counts["assigned"] = cursor.fetchone()[0]
    return counts


def empty_tables() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
        cursor.execute("VACUUM ANALYZE")


def copy_reference(files: dict[str, Path]) -> tuple[int, float]:
    """COPY the rows of the files into the customer and feedback tables.

    Reads the CSV files in Python, COPYs the distinct customers, reads back
    their ids and COPYs the feedback rows with the same columns that the
    import fills, ``raw`` included. Returns the rows and the seconds.
    """
    from django.db import connection
    from django.utils import timezone

    started = time.perf_counter()
    now = timezone.now()
    rows = []
    for kind, path in files.items():
        with open(path, encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                rows.append((kind, row))

    customers = {}
    for _, row in rows:
        customers.setdefault(row["customer"], row["email"])
    with connection.cursor() as cursor:
        raw_cursor = cursor.cursor
        with raw_cursor.copy(
            "COPY feedback_customer (external_id, email, name, language, segment,"
            " is_opted_out, time_zone, created_at) FROM STDIN"
        ) as copy:
            for external_id, email in customers.items():
                copy.write_row((external_id, email, "", "", "", False, "", now))
        raw_cursor.execute("SELECT external_id, id FROM feedback_customer")
        customer_ids = dict(raw_cursor.fetchall())
        with raw_cursor.copy(
            "COPY feedback_feedback (customer_id, kind, score, comment, source,"
            " touchpoint, product, language, occurred_at, received_at, external_id,"
            " raw, sentiment_label) FROM STDIN"
        ) as copy:
            for kind, row in rows:
                copy.write_row(
                    (
                        customer_ids[row["customer"]],
                        kind,
                        int(row["score"]),
                        row["comment"],
                        SOURCES[kind],
                        row["touchpoint"],
                        row["product"],
                        "",
                        row["occurred_at"],
                        now,
                        row["external_id"],
                        json.dumps(row, ensure_ascii=False),
                        "",
                    )
                )
    return len(rows), time.perf_counter() - started


def import_export_reference(path: Path, subset: int) -> tuple[int, float]:
    """Import the first ``subset`` rows of a rating file with django-import-export."""
    import tablib
    from import_export import fields, resources
    from import_export.widgets import DateTimeWidget, ForeignKeyWidget

    from feedback.models import Customer, Feedback

    class FeedbackResource(resources.ModelResource):
        customer = fields.Field(
            attribute="customer",
            column_name="customer",
            widget=ForeignKeyWidget(Customer, field="external_id"),
        )
        # The file's ISO 8601 times with an offset are not among Django's
        # default DATETIME_INPUT_FORMATS.
        occurred_at = fields.Field(
            attribute="occurred_at",
            column_name="occurred_at",
            widget=DateTimeWidget(format="%Y-%m-%dT%H:%M:%S%z"),
        )

        class Meta:
            model = Feedback
            fields = (
                "external_id",
                "customer",
                "kind",
                "source",
                "score",
                "comment",
                "occurred_at",
                "touchpoint",
                "product",
            )
            import_id_fields = ("external_id",)
            use_bulk = True
            skip_unchanged = True
            batch_size = 2000

    dataset = tablib.Dataset(headers=["kind", "source", "external_id", "customer", "score",
                                      "comment", "occurred_at", "touchpoint", "product"])
    customer_ids = set()
    with open(path, encoding="utf-8", newline="") as handle:
        for index, row in enumerate(csv.DictReader(handle)):
            if index >= subset:
                break
            dataset.append(
                ("rating", "review", row["external_id"], row["customer"], row["score"],
                 row["comment"], row["occurred_at"], row["touchpoint"], row["product"])
            )
            customer_ids.add(row["customer"])
    # Not timed: the resource looks customers up but cannot create them.
    Customer.objects.bulk_create([Customer(external_id=key) for key in customer_ids])

    started = time.perf_counter()
    result = FeedbackResource().import_data(dataset, dry_run=False, raise_errors=True)
    seconds = time.perf_counter() - started
    if result.has_errors() or result.has_validation_errors():
        raise SystemExit("django-import-export reported errors; see its result rows")
    return len(dataset), seconds


def print_profile(profile: cProfile.Profile, top: int) -> None:
    for order in ("tottime", "cumulative"):
        print(f"\nprofile, top {top} by {order}:")
        stream = io.StringIO()
        stats = pstats.Stats(profile, stream=stream)
        stats.strip_dirs().sort_stats(order).print_stats(top)
        text = stream.getvalue()
        print(text[text.find("   ncalls"):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="Rows over both files.")
    benchdb.add_common_arguments(parser)
    parser.add_argument("--subset", type=int, default=20_000,
                        help="Rows for the django-import-export reference.")
    parser.add_argument("--profile", action="store_true",
                        help="Run the import under cProfile and print the top entries.")
    parser.add_argument("--top", type=int, default=25, help="Profile entries printed.")
    parser.add_argument("--worker", action="store_true",
                        help="Evaluate on one Celery worker through Redis instead of in-process.")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/14",
                        help="Redis database for --worker; it is flushed at the end.")
    parser.add_argument("--no-references", action="store_true", help="Time only our import.")
    args = parser.parse_args()

    files = make_files(rows=args.rows, data=args.data)
    if args.worker:
        os.environ["CELERY_BROKER_URL"] = args.broker
    benchdb.setup_django(args.database_url)
    from django.conf import settings

    worker = None
    try:
        add_agents()
        if args.worker:
            worker = start_worker(args.database_url, args.broker)
            time.sleep(5)
        print("\n".join(benchdb.machine_summary()))
        print(f"batch size {settings.OSCM_BATCH_SIZE}, eager tasks: {settings.CELERY_TASK_ALWAYS_EAGER}")
        print(f"import_feedback of {args.rows:,} rows:")
        profile = cProfile.Profile() if args.profile else None
        started = time.perf_counter()
        seconds = run_import(files, profile=profile)
        if worker:
            print(f"  import returned after {seconds:.1f} s"
                  f" = {args.rows / seconds:,.0f} rows/s; waiting for the worker")
            seconds = wait_until_evaluated(timeout=3600) - started
        counts = table_counts()
        print(f"  {counts}")
        ours = counts["feedback_feedback"] / seconds
        print(f"  {benchdb.load_average()}")
        print(f"ours: {counts['feedback_feedback']:,} rows in {seconds:.1f} s = {ours:,.0f} rows/s"
              + (" (under cProfile)" if profile else ""))
        if profile:
            print_profile(profile, args.top)
        if args.no_references:
            return

        empty_tables()
        copied, copy_seconds = copy_reference(files)
        print(f"COPY: {copied:,} rows in {copy_seconds:.1f} s = {copied / copy_seconds:,.0f} rows/s")

        empty_tables()
        imported, ie_seconds = import_export_reference(files["rating"], args.subset)
        print(f"django-import-export (subset): {imported:,} rows in {ie_seconds:.1f} s"
              f" = {imported / ie_seconds:,.0f} rows/s")

        print("\n| rows | ours (rows/s) | COPY (rows/s) | django-import-export, "
              f"{args.subset:,}-row subset (rows/s) |")
        print(f"| {args.rows:,} | {ours:,.0f} | {copied / copy_seconds:,.0f} "
              f"| {imported / ie_seconds:,.0f} |")
    finally:
        if worker:
            worker.terminate()
            worker.wait(timeout=30)
            import redis

            redis.Redis.from_url(args.broker).flushdb()
        if not args.keep:
            benchdb.drop_database(args.database_url)


if __name__ == "__main__":
    main()
