"""Time the text analysis of stored feedback, in process and on Celery workers.

Stores N feedback rows from the benchmark files (``bench/make_data.py``) as
the bulk import leaves them: COPY'd with no analysis, evaluated against the
case rules, so the unhappy ones have cases without a topic, and with the
all-topics rollup rows counted. Then it times ``feedback_analyze`` over
all the rows three times, restoring the unanalysed state in between:

1. in process: ``feedback_analyze`` called on batches of ``--batch`` ids;
2. one Celery worker (solo pool), and then 3. two, on the Redis database
   in ``--broker``: one ``feedback_analyze_task`` per batch is queued, and
   the time runs from the first ``delay`` to the last ``analyzed_at``.

Each run includes the topic links, the topic rollups and the triage of the
cases (``cases.triage``). The script creates and migrates its own database
(``oscm_bench_analysis`` on 127.0.0.1:5432 as user postgres by default),
starts and stops the workers, flushes the Redis database at the end and
drops the database unless ``--keep`` is given.

    .venv/bin/python bench/analysis_bench.py --rows 100000
    .venv/bin/python bench/analysis_bench.py --rows 1000000 --workers 1
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchdb
from import_bench import copy_reference
from make_data import OUT, make_files

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/oscm_bench_analysis"
DEFAULT_BROKER = "redis://127.0.0.1:6379/12"
CELERY = Path(sys.executable).with_name("celery")
SOURCES = {"rating": "review", "nps": "survey"}
AGENTS_PER_TEAM = 4
WAIT_SECONDS = 3600


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, default=100_000, help="Rows over both files."
    )
    benchdb.add_common_arguments(parser)
    parser.set_defaults(database_url=DEFAULT_URL)
    parser.add_argument(
        "--broker",
        default=DEFAULT_BROKER,
        help="Redis database of the workers' queue; it is flushed before and after.",
    )
    parser.add_argument(
        "--batch", type=int, default=2000, help="Feedback ids per call or task."
    )
    parser.add_argument(
        "--workers",
        default="1,2",
        help="Comma-separated worker counts to time, one run each; empty for none.",
    )
    return parser.parse_args()


def input_files(rows: int, data: Path) -> dict[str, Path]:
    """Return the rating and NPS files, writing them only when missing, so a
    run never rewrites a file that another benchmark may be reading."""
    files = {kind: OUT / f"feedback_{rows}_{kind}.csv" for kind in SOURCES}
    if all(path.is_file() for path in files.values()):
        return files
    return make_files(rows=rows, data=data)


def add_agents() -> None:
    """Give every team agents, as ``import_bench.py`` does, so some cases are
    assigned at opening and keep their team."""
    from django.contrib.auth import get_user_model

    from cases.models import Team, TeamMember

    user_model = get_user_model()
    for team in Team.objects.all():
        for number in range(AGENTS_PER_TEAM):
            user = user_model.objects.create(username=f"agent-{team.pk}-{number}")
            TeamMember.objects.create(team=team, user=user)


def store_unanalysed(files: dict[str, Path]) -> list[int]:
    """COPY customers and feedback rows with no analysis; return the ids.

    ``import_bench.copy_reference`` writes the rows with the columns the
    import fills and leaves the analysis columns empty.
    """
    from django.db import connection

    copy_reference(files)
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM feedback_feedback ORDER BY id")
        return [pk for (pk,) in cursor.fetchall()]


def open_cases(ids: list[int], batch: int) -> None:
    """Evaluate every row, as the bulk import does before the analysis, and
    count the all-topics rollups; then keep a copy of the cases."""
    from django.db import connection

    from cases.services import feedback_evaluate
    from feedback.rollups import rollup_rebuild

    for start in range(0, len(ids), batch):
        feedback_evaluate(feedback_ids=ids[start : start + batch])
    rollup_rebuild()
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_case_before")
        cursor.execute("CREATE TABLE bench_case_before AS SELECT * FROM cases_case")


def reset_analysis() -> None:
    """Put the rows, rollups and cases back as they were before the analysis."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE feedback_feedback SET analyzed_at = NULL, sentiment = NULL,"
            " sentiment_label = '', primary_topic_id = NULL, language = ''"
        )
        cursor.execute("TRUNCATE feedback_feedbacktopic")
        cursor.execute("DELETE FROM feedback_metricrollup WHERE topic_key <> 0")
        cursor.execute("DELETE FROM cases_caseevent WHERE kind = 'team_changed'")
        columns = (
            "topic_id",
            "dedup_key",
            "team_id",
            "routing_rule_id",
            "routing_reason",
            "assignment_reason",
            "sla_policy_id",
            "first_response_due_at",
            "resolution_due_at",
            "updated_at",
        )
        assignments = ", ".join(f"{column} = before.{column}" for column in columns)
        # Every key first gets a unique placeholder, so no restored key can
        # collide with another case's current key during the UPDATE.
        cursor.execute("UPDATE cases_case SET dedup_key = 'reset-' || id")
        cursor.execute(
            f"UPDATE cases_case SET {assignments} FROM bench_case_before AS before"
            " WHERE cases_case.id = before.id"
        )
    vacuum()


def vacuum() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")


def run_in_process(ids: list[int], batch: int) -> float:
    from feedback.services import feedback_analyze

    started = time.perf_counter()
    analysed = 0
    for start in range(0, len(ids), batch):
        analysed += feedback_analyze(feedback_ids=ids[start : start + batch])
    seconds = time.perf_counter() - started
    if analysed != len(ids):
        raise SystemExit(f"in process: {analysed} of {len(ids)} rows analysed")
    return seconds


def analyzer_only(ids: list[int]) -> float:
    """Time ``Analyzer.analyze_many`` alone over the same texts, for the share
    that is not database work."""
    from feedback.analysis import Analyzer
    from feedback.models import Feedback

    texts = list(Feedback.objects.order_by("pk").values_list("comment", "language"))
    analyzer = Analyzer.from_database()
    started = time.perf_counter()
    analyzer.analyze_many(texts)
    return time.perf_counter() - started


def start_workers(
    args: argparse.Namespace, count: int, log_dir: Path
) -> list[subprocess.Popen]:
    env = {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "CELERY_BROKER_URL": args.broker,
        "LOG_LEVEL": "WARNING",
    }
    workers = []
    for number in range(count):
        log = (log_dir / f"worker-{count}-{number}.log").open("w")
        workers.append(
            subprocess.Popen(
                [
                    str(CELERY),
                    "-A",
                    "oscm",
                    "worker",
                    "--pool",
                    "solo",
                    "-l",
                    "warning",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "-n",
                    f"analysis-bench-{number}-{os.getpid()}@%h",
                ],
                cwd=benchdb.REPOSITORY,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    deadline = time.monotonic() + 60
    logs = [log_dir / f"worker-{count}-{number}.log" for number in range(count)]
    while not all(" ready." in log.read_text() for log in logs):
        if time.monotonic() > deadline:
            stop_workers(workers)
            raise SystemExit(
                f"{count} workers were not ready within 60 s; see {log_dir}"
            )
        time.sleep(0.2)
    return workers


def stop_workers(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def run_workers(
    args: argparse.Namespace, ids: list[int], count: int, log_dir: Path
) -> float:
    """Queue one task per batch for ``count`` workers; return the seconds from
    the first ``delay`` to the last ``analyzed_at``."""
    from django.db import connection
    from django.db.models import Max
    from django.utils import timezone

    from feedback.models import Feedback
    from feedback.tasks import feedback_analyze_task
    from oscm.celery import app

    app.control.purge()
    workers = start_workers(args, count, log_dir)
    try:
        started_at = timezone.now()
        for start in range(0, len(ids), args.batch):
            feedback_analyze_task.delay(ids[start : start + args.batch])
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            time.sleep(1)
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT 1 FROM feedback_feedback WHERE analyzed_at IS NULL LIMIT 1"
                )
                if cursor.fetchone() is None:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"rows still unanalysed after {WAIT_SECONDS} s; see {log_dir}"
                )
            if any(worker.poll() is not None for worker in workers):
                raise SystemExit(f"a worker exited early; see {log_dir}")
    finally:
        stop_workers(workers)
    finished_at = Feedback.objects.aggregate(last=Max("analyzed_at"))["last"]
    return (finished_at - started_at).total_seconds()


def outcome() -> str:
    """Return the counts that show what the analysis did, and check the
    topic rollups against the topic links."""
    from django.db import connection

    queries = {
        "topic links": "SELECT count(*) FROM feedback_feedbacktopic",
        "rows with a topic": (
            "SELECT count(*) FROM feedback_feedback WHERE primary_topic_id IS NOT NULL"
        ),
        "cases": "SELECT count(*) FROM cases_case",
        "cases with a topic": (
            "SELECT count(*) FROM cases_case WHERE topic_id IS NOT NULL"
        ),
        "cases moved": (
            "SELECT count(*) FROM cases_caseevent WHERE kind = 'team_changed'"
        ),
        "topic rollup total": (
            "SELECT coalesce(sum(count), 0) FROM feedback_metricrollup"
            " WHERE topic_key <> 0"
        ),
    }
    counts = {}
    with connection.cursor() as cursor:
        for name, sql in queries.items():
            cursor.execute(sql)
            counts[name] = cursor.fetchone()[0]
    if counts["topic rollup total"] != counts["topic links"]:
        raise SystemExit(f"topic rollups do not match the topic links: {counts}")
    return ", ".join(f"{name} {value:,}" for name, value in counts.items())


def main() -> None:
    args = parse_args()
    worker_counts = [int(value) for value in args.workers.split(",") if value.strip()]
    files = input_files(args.rows, args.data)
    # Tasks queued by this process go to the workers' broker.
    os.environ["CELERY_BROKER_URL"] = args.broker
    benchdb.setup_django(args.database_url)
    log_dir = (
        Path(os.environ.get("TMPDIR", "/tmp")) / f"oscm-analysis-bench-{os.getpid()}"
    )
    log_dir.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        add_agents()
        print("\n".join(benchdb.machine_summary()))
        started = time.perf_counter()
        ids = store_unanalysed(files)
        print(
            f"stored {len(ids):,} rows without analysis"
            f" in {time.perf_counter() - started:.1f} s"
        )
        started = time.perf_counter()
        open_cases(ids, args.batch)
        print(f"evaluated them in {time.perf_counter() - started:.1f} s")
        vacuum()

        seconds = analyzer_only(ids)
        print(
            f"Analyzer.analyze_many alone: {len(ids) / seconds:,.0f} texts/s"
            f" ({seconds:.1f} s)"
        )
        seconds = run_in_process(ids, args.batch)
        results.append(("in process", 1, seconds))
        print(
            f"in process: {len(ids) / seconds:,.0f} texts/s ({seconds:.1f} s);"
            f" {benchdb.load_average()}"
        )
        print(f"  {outcome()}")
        for count in worker_counts:
            reset_analysis()
            seconds = run_workers(args, ids, count, log_dir)
            results.append((f"{count} workers", count, seconds))
            rate = len(ids) / seconds
            print(
                f"{count} workers: {rate:,.0f} texts/s, {rate / count:,.0f} per worker"
                f" ({seconds:.1f} s); {benchdb.load_average()}"
            )
            print(f"  {outcome()}")

        print("\n| run | rows | seconds | texts/s | texts/s per worker or process |")
        print("|---|---:|---:|---:|---:|")
        for name, count, seconds in results:
            rate = len(ids) / seconds
            print(
                f"| {name} | {len(ids):,} | {seconds:.1f} | {rate:,.0f}"
                f" | {rate / count:,.0f} |"
            )
    finally:
        import redis

        redis.Redis.from_url(args.broker).flushdb()
        if not args.keep:
            benchdb.drop_database(args.database_url)


if __name__ == "__main__":
    main()
