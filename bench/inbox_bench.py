"""Time the workspace inbox page (/inbox/) on PostgreSQL with 100,000 cases.

Creates a database of its own (``oscm_bench_inbox`` on 127.0.0.1:5432 as
user postgres by default), migrates it and fills it with the data of
``case_list_bench.py``: 200,000 customers, 1,000,000 NPS feedback rows and
100,000 cases over the three seeded teams, then VACUUM ANALYZE. It drops
the database at the end unless ``--keep`` is given.

The page is rendered through Django's test client (no web server, so no
HTTP parsing or socket time) for the first agent of the largest team,
logged in with ``force_login``. The variants are the default view, each
sort, the state, priority, topic and breached filters, each page size, and
a deep page of every case of the agent's teams. Each variant is requested once to count
its queries, 5 times to warm up and ``--runs`` times to time it.

    .venv/bin/python bench/inbox_bench.py
    .venv/bin/python bench/inbox_bench.py --runs 100 --plans --keep
"""

import argparse
import os
import time
from urllib.parse import urlencode

from benchdb import drop_database, machine_summary, setup_django
from case_list_bench import describe_data, fill, make_people, summarize

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/oscm_bench_inbox"
TARGET_MS = 150.0
# The data of case_list_bench.py at its defaults: every tenth feedback row
# opens a case, so 100,000 cases, and 5% of cases older than 14 days open.
CUSTOMERS = 200_000
FEEDBACK_ROWS = 1_000_000
STALE_OPEN_SHARE = 0.05
INBOX_URL = "/inbox/"
ALL_STATES = ["new", "assigned", "in_progress", "waiting", "resolved", "closed"]
# Page 400 of 25 skips 9,975 rows, so it needs the 50,000 cases of the
# largest team in every state, because the default view has only open ones.
DEEP_PAGE = 400


def inbox_variants(topic_slug: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """Return the measured variants as (label, query parameters)."""
    every_case = [("scope", "all")] + [("state", state) for state in ALL_STATES]
    return [
        ("default (mine and unassigned, due soonest, 25)", []),
        ("sort: priority", [("sort", "priority")]),
        ("sort: newest", [("sort", "newest")]),
        ("sort: oldest", [("sort", "oldest")]),
        ("filter: state new", [("state", "new")]),
        ("filter: priority urgent", [("priority", "4")]),
        (f"filter: topic {topic_slug}", [("topic", topic_slug)]),
        ("filter: breached", [("breached", "true")]),
        ("scope all, every state, page 1", every_case),
        ("page size 50", [("page_size", "50")]),
        ("page size 100", [("page_size", "100")]),
        (
            f"scope all, every state, page {DEEP_PAGE}",
            every_case + [("page", str(DEEP_PAGE))],
        ),
    ]


def largest_topic_slug() -> str:
    """Return the slug of the topic with the most cases, for the topic filter."""
    from django.db.models import Count

    from feedback.models import Topic

    topic = Topic.objects.annotate(cases=Count("case")).order_by("-cases", "pk").first()
    return topic.slug


def capture_queries(client, url: str) -> list[dict]:
    """Request ``url`` once and return the queries it ran, exiting on any status but 200."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as context:
        response = client.get(url)
    if response.status_code != 200:
        raise SystemExit(f"GET {url} returned {response.status_code}")
    return context.captured_queries


def time_page(client, url: str, runs: int) -> list[float]:
    """Return the wall times in ms of ``runs`` requests after 5 warm-up requests."""
    for _ in range(5):
        client.get(url)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(url)
        samples.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"GET {url} returned {response.status_code}")
    return samples


def print_plans(queries: list[dict]) -> None:
    """Print EXPLAIN (ANALYZE, BUFFERS) of every query of a request on cases."""
    from django.db import connection

    with connection.cursor() as cursor:
        for query in queries:
            if 'FROM "cases_case"' not in query["sql"]:
                continue
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + query["sql"])
            print(query["sql"])
            print("\n".join(row[0] for row in cursor.fetchall()))


def measure(agent_id: int, runs: int, show_plans: bool) -> bool:
    """Time every variant, print a table and return whether all met the target."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(get_user_model().objects.get(pk=agent_id))

    rows = []
    for label, params in inbox_variants(largest_topic_slug()):
        url = f"{INBOX_URL}?{urlencode(params)}" if params else INBOX_URL
        queries = capture_queries(client, url)
        if show_plans:
            print(f"\n## {label}\nGET {url}")
            print_plans(queries)
        median_ms, p95_ms = summarize(time_page(client, url, runs))
        rows.append((label, len(queries), median_ms, p95_ms))
        print(f"{label}: {len(queries)} queries, {median_ms:.1f} / {p95_ms:.1f} ms")

    print(f"\n## Figures ({runs} requests each; median / p95 in ms)")
    print(f"| variant | queries | median | p95 | target median < {TARGET_MS:.0f} ms |")
    print("|---|---|---|---|---|")
    all_met = True
    for label, query_count, median_ms, p95_ms in rows:
        met = median_ms < TARGET_MS
        all_met = all_met and met
        verdict = "met" if met else "MISSED"
        print(
            f"| {label} | {query_count} | {median_ms:.1f} | {p95_ms:.1f} | {verdict} |"
        )
    counts = {row[1] for row in rows}
    print(
        f"query counts: {sorted(counts)}, constant: {'yes' if len(counts) == 1 else 'NO'}"
    )
    return all_met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs",
        type=int,
        default=50,
        help="Timed requests of each variant (default %(default)s).",
    )
    parser.add_argument(
        "--plans",
        action="store_true",
        help="Print the plans of the case queries of each variant.",
    )
    parser.add_argument(
        "--database-url",
        default=DEFAULT_URL,
        help="PostgreSQL database to create, use and drop (default %(default)s).",
    )
    parser.add_argument(
        "--keep", action="store_true", help="Keep the database afterwards."
    )
    args = parser.parse_args()

    # Logs of the fill would only add noise.
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    setup_django(args.database_url)
    try:
        print("\n".join(machine_summary()))
        started = time.perf_counter()
        agents, agent_id = make_people()
        fill(CUSTOMERS, FEEDBACK_ROWS, STALE_OPEN_SHARE, agents)
        print(f"data: {time.perf_counter() - started:.1f} s")
        print("\n".join(describe_data(agent_id)))
        all_met = measure(agent_id, args.runs, args.plans)
    finally:
        if not args.keep:
            drop_database(args.database_url)
    raise SystemExit(0 if all_met else 1)


if __name__ == "__main__":
    main()
