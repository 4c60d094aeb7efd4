"""Time NPS by month and touchpoint from the rollups beside direct GROUP BYs.

Generates N NPS rows from the real telecom NPS verbatims and scores
(``bench/make_data.py`` with every row in the NPS file), imports them with
``import_feedback`` into a database of its own, then times:

- ``metric_summary(kind="nps", by="month", touchpoint=T)`` for every
  touchpoint T, which reads the rollup table;
- ``metric_summary_direct`` with the same arguments, which groups the
  feedback table;
- one hand-written ``GROUP BY month, touchpoint, score`` over the feedback
  table, turned into summaries by the same arithmetic.

All three must give the same figures, or the script exits non-zero. It then
adds feedback through the import, corrects scores with
``feedback_correct_score`` and checks the equality again.

    .venv/bin/python bench/metrics_bench.py --rows 1000000
"""

import argparse
import io
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchdb
from make_data import TOUCHPOINTS, make_files

HAND_WRITTEN_SQL = """
    SELECT date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date AS month,
           touchpoint, score, count(*)
    FROM feedback_feedback
    WHERE kind = 'nps' AND score IS NOT NULL
    GROUP BY 1, 2, 3
"""


def import_file(path: Path, source: str = "survey") -> float:
    from django.core.management import call_command

    started = time.perf_counter()
    output = io.StringIO()
    call_command("import_feedback", str(path), source=source, kind="nps",
                 no_progress=True, stdout=output)
    seconds = time.perf_counter() - started
    print(f"  {path.name}: {output.getvalue().strip()} in {seconds:.1f} s")
    return seconds


def summaries(function) -> dict[str, dict]:
    return {
        touchpoint: function(kind="nps", by="month", touchpoint=touchpoint)
        for touchpoint in TOUCHPOINTS
    }


def hand_written_summaries() -> dict[str, dict]:
    """Group the feedback table in SQL and summarise with the shared arithmetic."""
    from collections import defaultdict

    from django.db import connection

    from feedback.metrics import metric_summary_from_counts

    overall = defaultdict(lambda: defaultdict(int))
    by_month = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    with connection.cursor() as cursor:
        cursor.execute(HAND_WRITTEN_SQL)
        for month, touchpoint, score, count in cursor.fetchall():
            overall[touchpoint][score] += count
            by_month[touchpoint][month][score] += count
    result = {}
    for touchpoint in TOUCHPOINTS:
        summary = metric_summary_from_counts(kind="nps", counts=overall[touchpoint])
        summary["periods"] = [
            {"period": month.isoformat(),
             **metric_summary_from_counts(kind="nps", counts=by_month[touchpoint][month])}
            for month in sorted(by_month[touchpoint])
        ]
        result[touchpoint] = summary
    return result


def timed(function, repeats: int) -> tuple[float, object]:
    """Return the median milliseconds of ``repeats`` calls and the last result."""
    times = []
    result = None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def compare(label: str, repeats: int) -> dict[str, float]:
    from feedback.selectors import metric_summary, metric_summary_direct

    rollup_ms, from_rollups = timed(lambda: summaries(metric_summary), repeats)
    direct_ms, direct = timed(lambda: summaries(metric_summary_direct), repeats)
    sql_ms, hand_written = timed(hand_written_summaries, repeats)
    for name, other in (("metric_summary_direct", direct), ("hand-written SQL", hand_written)):
        if other != from_rollups:
            raise SystemExit(f"{label}: metric_summary differs from {name}")
    months = len(from_rollups[TOUCHPOINTS[0]]["periods"])
    responses = sum(summary["n"] for summary in from_rollups.values())
    print(f"{label}: {responses:,} NPS responses, {len(TOUCHPOINTS)} touchpoints x "
          f"{months} months; all three equal")
    print(f"  metric_summary (rollups):        {rollup_ms:8.1f} ms for all touchpoints")
    print(f"  metric_summary_direct (GROUP BY): {direct_ms:8.1f} ms")
    print(f"  hand-written SQL GROUP BY:        {sql_ms:8.1f} ms")
    return {"rollups": rollup_ms, "direct": direct_ms, "sql": sql_ms}


def correct_scores(count: int, seed: int) -> None:
    from feedback.models import Feedback
    from feedback.services import feedback_correct_score

    rng = random.Random(seed)
    highest = Feedback.objects.order_by("-pk").values_list("pk", flat=True).first()
    corrected = 0
    while corrected < count:
        feedback = Feedback.objects.filter(pk=rng.randint(1, highest), kind="nps").first()
        if feedback is None:
            continue
        feedback_correct_score(feedback=feedback, score=rng.randint(0, 10))
        corrected += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="NPS rows to import.")
    benchdb.add_common_arguments(parser)
    parser.add_argument("--repeats", type=int, default=5, help="Timed runs per query set.")
    parser.add_argument("--added", type=int, default=10_000, help="Rows added after the check.")
    parser.add_argument("--corrections", type=int, default=500, help="Scores corrected.")
    args = parser.parse_args()

    files = make_files(rows=args.rows, data=args.data, nps_share=1.0)
    added = make_files(rows=args.added, data=args.data, nps_share=1.0, seed=11,
                       out=files["nps"].parent / "added")
    benchdb.setup_django(args.database_url)
    try:
        from django.db import connection

        print("\n".join(benchdb.machine_summary()))
        seconds = import_file(files["nps"])
        print(f"import: {args.rows / seconds:,.0f} rows/s")
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
            cursor.execute("SELECT count(*) FROM feedback_metricrollup")
            print(f"rollup rows: {cursor.fetchone()[0]:,}")
        compare(f"after import of {args.rows:,} rows", args.repeats)

        # The added rows reuse external ids under another source, so they
        # are new feedback, not duplicates.
        import_file(added["nps"], source="other")
        correct_scores(args.corrections, seed=3)
        print(f"added {args.added:,} rows and corrected {args.corrections} scores")
        compare("after additions and corrections", args.repeats)
        print(benchdb.load_average())
    finally:
        if not args.keep:
            benchdb.drop_database(args.database_url)


if __name__ == "__main__":
    main()
