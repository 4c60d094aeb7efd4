"""Time ``action_measure`` over 1,000,000 feedback rows on PostgreSQL.

Creates (or recreates) the database ``oscm_bench_actions`` on the server in
``--server`` (default ``postgres://postgres@127.0.0.1:5432``, trust auth),
migrates it, loads the feedback and its topic links with COPY, then measures
actions with different segments and windows, each ``--repeat`` times, and
prints the median and maximum time per scenario.

    .venv/bin/python bench/remeasure_bench.py
    .venv/bin/python bench/remeasure_bench.py --rows 200000 --keep

The data spans 365 days ending now: half NPS, a quarter CSAT, 15% CES and
10% ratings, four touchpoints, 20 products, and 0-2 of the seeded topics per
row, with scores drawn uniformly from each kind's range. Rows are stored in
occurred_at order, as feedback arriving over time is.
"""

import argparse
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

DATABASE = "oscm_bench_actions"
KINDS = [("nps", 0.50, 0, 10), ("csat", 0.25, 1, 5), ("ces", 0.15, 1, 7), ("rating", 0.10, 1, 5)]
TOUCHPOINTS = ["app", "web", "store", "call_center"]
PRODUCTS = [f"product-{number}" for number in range(20)]
DAYS = 365


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432", help="PostgreSQL server URL without a database name")
    parser.add_argument("--rows", type=int, default=1_000_000, help="feedback rows to load")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per scenario")
    parser.add_argument("--keep", action="store_true", help="reuse the loaded database if it has the rows")
    return parser.parse_args()


def recreate_database(server: str) -> None:
    import psycopg

    with psycopg.connect(f"{server}/postgres", autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        connection.execute(f"CREATE DATABASE {DATABASE}")


def setup_django(server: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ["DATABASE_URL"] = f"{server}/{DATABASE}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oscm.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


def load_feedback(*, rows: int, now: datetime) -> None:
    """COPY ``rows`` feedback and their FeedbackTopic links, with explicit ids."""
    from django.db import connection

    from feedback.models import Topic

    topic_ids = list(Topic.objects.values_list("pk", flat=True))
    rng = random.Random(20240601)
    start = now - timedelta(days=DAYS)
    weights = [weight for _, weight, _, _ in KINDS]
    links = []
    started = time.perf_counter()
    with connection.cursor() as cursor:
        raw = cursor.connection
        with raw.cursor().copy(
            "COPY feedback_feedback (id, kind, score, comment, source, touchpoint, product,"
            " language, occurred_at, received_at, external_id, raw, sentiment_label) FROM STDIN"
        ) as copy:
            # Ids rise with occurred_at, as rows arriving through the intake
            # do, so the rows of one window sit on neighbouring pages.
            offsets = sorted(rng.random() * DAYS * 86400 for _ in range(rows))
            for row_id, offset in enumerate(offsets, start=1):
                kind, _, low, high = rng.choices(KINDS, weights)[0]
                occurred = start + timedelta(seconds=offset)
                copy.write_row((
                    row_id, kind, rng.randint(low, high), "", "survey",
                    rng.choice(TOUCHPOINTS), rng.choice(PRODUCTS), "en",
                    occurred, occurred, f"bench-{row_id}", "{}", "",
                ))  # fmt: skip
                for topic_id in rng.sample(topic_ids, rng.choice((0, 1, 1, 2))):
                    links.append((row_id, topic_id))
        with raw.cursor().copy("COPY feedback_feedbacktopic (feedback_id, topic_id) FROM STDIN") as copy:
            for link in links:
                copy.write_row(link)
        cursor.execute("SELECT setval(pg_get_serial_sequence('feedback_feedback', 'id'), %s)", [rows])
        cursor.execute("ANALYZE feedback_feedback")
        cursor.execute("ANALYZE feedback_feedbacktopic")
    print(f"loaded {rows:,} feedback and {len(links):,} topic links in {time.perf_counter() - started:.1f} s")


def make_action(*, now: datetime, window_days: int, **segment):
    from actions.models import Action
    from cases.models import Team
    from django.contrib.auth import get_user_model

    owner, _ = get_user_model().objects.get_or_create(username="bench-owner")
    done_at = now - timedelta(days=window_days + 1)
    return Action.objects.create(
        title="bench", team=Team.objects.order_by("pk").first(), owner=owner,
        window_days=window_days, state="done", started_at=done_at - timedelta(days=5),
        done_at=done_at, measure_due_at=done_at + timedelta(days=window_days), **segment,
    )  # fmt: skip


def time_scenario(name: str, action, *, repeat: int, now: datetime) -> None:
    from actions.models import Action
    from actions.services import action_measure

    timings = []
    result = None
    for _ in range(repeat + 1):
        Action.objects.filter(pk=action.pk).update(state="done", measured_at=None, verdict="", measurement={})
        action.refresh_from_db()
        started = time.perf_counter()
        result = action_measure(action=action, now=now)
        timings.append((time.perf_counter() - started) * 1000)
    timings = timings[1:]  # the first run warms the caches
    measurement = result.measurement
    print(
        f"{name:<44} n {measurement['before']['n']:>7,} / {measurement['after']['n']:>7,}"
        f"  median {statistics.median(timings):7.1f} ms  max {max(timings):7.1f} ms  {result.verdict}"
    )


def main() -> None:
    args = parse_args()
    if not args.keep:
        recreate_database(args.server)
    setup_django(args.server)
    from django.core.management import call_command
    from django.db import connection

    from feedback.models import Feedback, Topic

    call_command("migrate", verbosity=0)
    now = datetime.now(UTC)
    if Feedback.objects.count() != args.rows:
        Feedback.objects.all().delete()
        load_feedback(rows=args.rows, now=now)

    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        print(cursor.fetchone()[0].split(" on ")[0], f"- {os.cpu_count()} CPUs")
    delivery = Topic.objects.get(slug="delivery")
    scenarios = [
        ("nps, topic + touchpoint, 14 days", dict(window_days=14, metric_kind="nps", topic=delivery, touchpoint="app")),
        ("nps, topic only, 14 days", dict(window_days=14, metric_kind="nps", topic=delivery)),
        ("nps, whole kind, 14 days", dict(window_days=14, metric_kind="nps")),
        ("nps, topic only, 90 days", dict(window_days=90, metric_kind="nps", topic=delivery)),
        ("nps, whole kind, 90 days", dict(window_days=90, metric_kind="nps")),
        ("csat, product, 30 days", dict(window_days=30, metric_kind="csat", product="product-3")),
        ("ces, touchpoint, 30 days", dict(window_days=30, metric_kind="ces", touchpoint="web")),
    ]
    for name, segment in scenarios:
        time_scenario(name, make_action(now=now, **segment), repeat=args.repeat, now=now)


if __name__ == "__main__":
    main()
