"""Time ``import_feedback`` on PostgreSQL beside two reference imports.

Generates N rows from the real data sets (``bench/make_data.py``), creates
and migrates a database of its own, and times the real command path: the
rating file and the NPS file each go through
``call_command("import_feedback")``, with customers, rollups, case rules,
cases, links and events included. As in production, the text analysis is
queued to Celery on Redis (``--broker``, database 14 on 127.0.0.1 by
default) and not done by the import. Then ``--workers`` Celery worker
processes, started and stopped by this script, work through it, and the
script times them until every row is analysed, giving texts/s per worker.

References, measured afterwards on the same database with its tables
emptied:

- COPY: the same rows COPY'd into the customer and feedback tables by
  psycopg, with no analysis, rollups or cases.
- django-import-export: its ModelResource bulk import (``use_bulk``,
  ``skip_unchanged``, ``import_id_fields`` on the external id) of the first
  ``--subset`` rows of the rating file, customers created beforehand.

    .venv/bin/python bench/import_bench.py --rows 1000000
    .venv/bin/python bench/import_bench.py --rows 100000 --profile --no-references

``--profile`` runs the import serially (no writer thread) under cProfile
and prints the top entries and the time of each SQL statement; its rows/s
are lower than an unprofiled run's.
"""

import argparse
import collections
import contextlib
import cProfile
import csv
import io
import json
import os
import pstats
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchdb
from make_data import OUT, make_files

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


class StatementTimes:
    """Wall time of each SQL statement of the import, summed by its text,
    and of COPY and COMMIT, on the serial (profiled) path."""

    def __init__(self):
        self.seconds: collections.Counter = collections.Counter()

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.seconds[" ".join(sql.split())[:80]] += time.perf_counter() - started

    @contextlib.contextmanager
    def watching(self):
        import psycopg
        from django.db import connection

        copy = psycopg.ClientCursor.copy
        commit = connection.connection.commit
        times = self.seconds

        @contextlib.contextmanager
        def timed_copy(cursor, statement, *args, **kwargs):
            started = time.perf_counter()
            with copy(cursor, statement, *args, **kwargs) as stream:
                yield stream
            times[" ".join(statement.split())[:80]] += time.perf_counter() - started

        def timed_commit():
            started = time.perf_counter()
            try:
                return commit()
            finally:
                times["COMMIT (deferred foreign key checks)"] += time.perf_counter() - started

        psycopg.ClientCursor.copy = timed_copy
        connection.connection.commit = timed_commit
        try:
            with connection.execute_wrapper(self):
                yield
        finally:
            psycopg.ClientCursor.copy = copy
            connection.connection.commit = commit

    def print(self, top: int) -> None:
        print(f"\nSQL statements, top {top} by total wall time:")
        for statement, seconds in self.seconds.most_common(top):
            print(f"  {seconds:7.2f} s  {statement}")


def run_import(
    files: dict[str, Path],
    *,
    profile: cProfile.Profile | None,
    statements: StatementTimes | None,
) -> float:
    from django.core.management import call_command
    from django.db import connection

    connection.ensure_connection()
    watching = statements.watching() if statements else contextlib.nullcontext()
    started = time.perf_counter()
    with watching:
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


def start_workers(count: int, database_url: str, broker_url: str) -> list[subprocess.Popen]:
    """Start ``count`` Celery worker processes (one task at a time each)."""
    environment = {**os.environ, "DATABASE_URL": database_url,
                   "CELERY_BROKER_URL": broker_url, "LOG_LEVEL": "WARNING"}
    return [
        subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "oscm", "worker", "--pool", "solo",
             "--hostname", f"bench{number}@%h", "--loglevel", "WARNING",
             "--without-heartbeat", "--without-gossip", "--without-mingle"],
            cwd=benchdb.REPOSITORY, env=environment,
            stdout=open(OUT / f"worker-{number}.log", "w"), stderr=subprocess.STDOUT,
        )
        for number in range(count)
    ]


def wait_until_analysed(timeout: float) -> float:
    """Poll until every feedback is analysed; return ``perf_counter()`` then."""
    from django.db import connection

    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM feedback_feedback WHERE analyzed_at IS NULL")
            if cursor.fetchone()[0] == 0:
                return time.perf_counter()
        time.sleep(0.2)
    raise SystemExit(f"feedback still unanalysed after {timeout:.0f} s; check that the workers started")


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
        cursor.execute("SELECT count(*) FROM feedback_feedback WHERE analyzed_at IS NULL")
        counts["unanalysed"] = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM cases_case WHERE topic_id IS NOT NULL")
        counts["cases with a topic"] = cursor.fetchone()[0]
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
                        help="Import serially under cProfile and print the top entries.")
    parser.add_argument("--top", type=int, default=25, help="Profile entries printed.")
    parser.add_argument("--workers", type=int, default=2,
                        help="Celery workers that analyse the imported text afterwards (0: none).")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/14",
                        help="Redis database for the analysis tasks; it is flushed before and after.")
    parser.add_argument("--no-references", action="store_true", help="Time only our import.")
    args = parser.parse_args()

    import redis

    files = make_files(rows=args.rows, data=args.data)
    os.environ["CELERY_BROKER_URL"] = args.broker
    if args.profile:
        os.environ["OSCM_IMPORT_WRITERS"] = "0"
    redis.Redis.from_url(args.broker).flushdb()
    benchdb.setup_django(args.database_url)
    from django.conf import settings

    workers = []
    try:
        add_agents()
        print("\n".join(benchdb.machine_summary()))
        print(f"chunk size {settings.OSCM_IMPORT_CHUNK_SIZE}, "
              f"writer threads: {settings.OSCM_IMPORT_WRITERS}, "
              f"eager tasks: {settings.CELERY_TASK_ALWAYS_EAGER}")
        print(f"import_feedback of {args.rows:,} rows:")
        profile = cProfile.Profile() if args.profile else None
        statements = StatementTimes() if args.profile else None
        cpu_before = resource.getrusage(resource.RUSAGE_SELF)
        seconds = run_import(files, profile=profile, statements=statements)
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
        counts = table_counts()
        print(f"  {counts}")
        ours = counts["feedback_feedback"] / seconds
        python_cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
        print(f"  {benchdb.load_average()}")
        print(f"ours: {counts['feedback_feedback']:,} rows in {seconds:.1f} s = {ours:,.0f} rows/s"
              + (" (serial, under cProfile)" if profile else "")
              + f"; Python process CPU {python_cpu:.1f} s")
        if profile:
            print_profile(profile, args.top)
            statements.print(args.top)
        if args.workers:
            started = time.perf_counter()
            workers = start_workers(args.workers, args.database_url, args.broker)
            analysed = counts["feedback_feedback"] - counts["unanalysed"]
            finished = wait_until_analysed(timeout=7200)
            analysis_seconds = finished - started
            texts = counts["feedback_feedback"] - analysed
            print(f"analysis: {texts:,} texts by {args.workers} workers in {analysis_seconds:.1f} s"
                  f" (worker start included) = {texts / analysis_seconds:,.0f} texts/s,"
                  f" {texts / analysis_seconds / args.workers:,.0f} texts/s per worker")
            print(f"  {table_counts()}")
            print(f"  {benchdb.load_average()}")
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
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
        redis.Redis.from_url(args.broker).flushdb()
        if not args.keep:
            benchdb.drop_database(args.database_url)


if __name__ == "__main__":
    main()
