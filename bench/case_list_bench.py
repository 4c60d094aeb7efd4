"""Time the agent's filtered case list on PostgreSQL: the SQL and the API.

Creates a database of its own (``oscm_bench_cases`` on 127.0.0.1:5432 as
user postgres by default), migrates it, fills it with INSERT ... SELECT
generate_series in SQL, runs ANALYZE and drops it at the end unless
``--keep`` is given. The default data: 200,000 customers, 1,000,000 NPS
feedback rows over 365 days, and 100,000 cases, one for every tenth
feedback row, spread over the three seeded teams (50%, 30%, 20%).

Case states depend on age, as a team's backlog does. Cases younger than
2 days are all open, those of 2 to 14 days are half open, and older ones
are open with ``--stale-open-share`` (default 5%). The rest are resolved or
closed. Priorities are 20% low, 60% normal, 15% high and 5% urgent. New
cases have no assignee, and the others go to 8 agents per team, skewed
towards the first ones. Due times are set from ``opened_at`` around the
clock, and 5% of the cases have no SLA policy and no due times. Every case
has its trigger in ``cases_casefeedback`` and 1 to 4 events, 3.4 on
average.

Measured, for an agent of the largest team, through Django's test client
(no web server, so no HTTP parsing or socket time):

1. the SQL of the list page, captured from one API call, timed by repeated
   execution and shown with EXPLAIN (ANALYZE, BUFFERS);
2. the whole API call;
3. the query count of the list at page sizes 10, 50 and 100.

    .venv/bin/python bench/case_list_bench.py
    .venv/bin/python bench/case_list_bench.py --runs 100 --keep
"""

import argparse
import os
import statistics
import time
from datetime import UTC, datetime

from benchdb import drop_database, machine_summary, setup_django

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/oscm_bench_cases"
# A fixed "now", so the data and the due times are the same on every run.
NOW = datetime(2025, 3, 12, 14, tzinfo=UTC)
AGENTS_PER_TEAM = 8
DB_TARGET_MS = 25.0
API_TARGET_MS = 60.0

# Filters of the measured lists: an agent's working queue by due time, and
# one state and priority by the default ordering. The third has no target
# and shows the list that an agent opens with no filter at all.
SCENARIOS = [
    (
        "open, high+urgent, by resolution due",
        (
            "state=new&state=assigned&state=in_progress&state=waiting"
            "&priority=3&priority=4&ordering=resolution_due_at"
        ),
    ),
    ("assigned, normal, newest first", "state=assigned&priority=2"),
    ("no filter, newest first (no target)", ""),
]
PAGE_SIZE = 50


# Data


FILL_STATEMENTS = [
    # Customers and feedback. Every tenth feedback row is unhappy (score
    # 0-6) and opens a case; the others spread over 0-10.
    """
    INSERT INTO feedback_customer
        (id, external_id, email, name, language, segment, is_opted_out,
         time_zone, created_at)
    SELECT i, 'cust-' || i, 'cust-' || i || '@example.test', 'Customer ' || i,
           'en', (ARRAY['retail', 'business', 'enterprise'])[1 + i %% 3], false,
           '', %(now)s::timestamptz - interval '400 days'
    FROM generate_series(1, %(customers)s) AS i
    """,
    """
    INSERT INTO feedback_feedback
        (id, customer_id, kind, score, comment, source, touchpoint, product,
         language, occurred_at, received_at, external_id, raw, sentiment,
         sentiment_label, primary_topic_id, analyzed_at, evaluated_at)
    SELECT i, 1 + (i::bigint * 7919) %% %(customers)s, 'nps',
           CASE WHEN i %% 10 = 0 THEN (i / 10) %% 7 ELSE (i * 31) %% 11 END,
           '', 'survey', (ARRAY['checkout', 'delivery', 'support'])[1 + i %% 3],
           '', 'en', at, at, 'fb-' || i, '{}'::jsonb, NULL, '', NULL, at, at
    FROM generate_series(1, %(feedback)s) AS i,
         LATERAL (
             SELECT %(now)s::timestamptz
                    - (%(feedback)s - i) * (interval '365 days' / %(feedback)s) AS at
         ) AS t
    """,
    # Cases: one for every tenth feedback row, so the case count is a tenth
    # of the feedback count. random() runs after setseed in the same
    # session, so the data is the same on every run.
    """
    CREATE TEMP TABLE bench_case_draw AS
    SELECT f.id AS feedback_id, f.customer_id, f.occurred_at + interval '5 minutes' AS opened_at,
           random() AS team_draw, random() AS state_draw, random() AS priority_draw,
           random() AS assignee_draw, random() AS sla_draw, random() AS response_draw,
           random() AS topic_draw
    FROM feedback_feedback AS f
    WHERE f.id %% 10 = 0
    """,
    """
    CREATE TEMP TABLE bench_case AS
    SELECT d.*, row_number() OVER (ORDER BY d.feedback_id) AS id,
           CASE WHEN d.team_draw < 0.5 THEN 1 WHEN d.team_draw < 0.8 THEN 2 ELSE 3 END
               AS team_number,
           CASE WHEN d.priority_draw < 0.2 THEN 1 WHEN d.priority_draw < 0.8 THEN 2
                WHEN d.priority_draw < 0.95 THEN 3 ELSE 4 END AS priority,
           CASE
               WHEN age < interval '2 days' THEN
                   (ARRAY['new', 'assigned', 'in_progress', 'waiting'])
                   [1 + floor(d.state_draw * 4)::int]
               WHEN age < interval '14 days' OR d.state_draw < %(stale_open)s THEN
                   CASE WHEN d.state_draw < 0.5 THEN
                       (ARRAY['assigned', 'in_progress', 'waiting'])
                       [1 + floor(d.state_draw * 6)::int]
                   WHEN d.state_draw < 0.8 THEN 'resolved' ELSE 'closed' END
               WHEN d.state_draw < 0.1 THEN 'resolved'
               ELSE 'closed'
           END AS state
    FROM bench_case_draw AS d,
         LATERAL (SELECT %(now)s::timestamptz - d.opened_at AS age) AS a
    """,
    """
    INSERT INTO cases_case
        (id, customer_id, trigger_feedback_id, topic_id, team_id, assignee_id,
         state, priority, is_open, dedup_key, rule_id, rule_reason,
         routing_rule_id, routing_reason, assignment_reason, opened_at,
         updated_at, root_cause_id, resolution_note, first_response_at,
         resolved_at, closed_at, merged_into_id, sla_policy_id,
         first_response_due_at, resolution_due_at, sla_paused_at,
         first_response_warned_at, resolution_warned_at,
         first_response_breached_at, resolution_breached_at, is_breached,
         recovery_score_before, recovery_score_after, is_recovered)
    SELECT c.id, c.customer_id, c.feedback_id,
           topics.ids[1 + floor(c.topic_draw * array_length(topics.ids, 1))::int],
           teams.ids[c.team_number],
           CASE WHEN c.state = 'new' THEN NULL
                ELSE agents.ids[c.team_number][1 + floor(8 * c.assignee_draw ^ 1.5)::int]
           END,
           c.state, c.priority, c.state NOT IN ('resolved', 'closed'),
           'f' || c.feedback_id, NULL, 'bench', NULL, 'bench', '',
           c.opened_at, c.opened_at + interval '1 hour', NULL, '',
           CASE WHEN c.state <> 'new'
                THEN c.opened_at + c.response_draw * sla.response * 1.2 END,
           CASE WHEN c.state IN ('resolved', 'closed')
                THEN c.opened_at + c.response_draw * sla.resolution * 1.3 END,
           CASE WHEN c.state = 'closed'
                THEN c.opened_at + c.response_draw * sla.resolution * 1.3
                     + interval '3 days' END,
           NULL, NULL,
           CASE WHEN c.sla_draw >= 0.05 THEN c.opened_at + sla.response END,
           CASE WHEN c.sla_draw >= 0.05 THEN c.opened_at + sla.resolution END,
           CASE WHEN c.state = 'waiting' THEN c.opened_at + interval '2 hours' END,
           NULL, NULL, NULL, NULL, false, NULL, NULL, NULL
    FROM bench_case AS c
    CROSS JOIN (SELECT array_agg(id ORDER BY id) AS ids FROM feedback_topic) AS topics
    CROSS JOIN (SELECT array_agg(id ORDER BY id) AS ids FROM cases_team) AS teams
    CROSS JOIN (SELECT %(agents)s::int[][] AS ids) AS agents
    CROSS JOIN LATERAL (
        SELECT interval '1 minute' * (ARRAY[1440, 480, 240, 60])[c.priority] AS response,
               interval '1 minute' * (ARRAY[10080, 4320, 1440, 480])[c.priority] AS resolution
    ) AS sla
    """,
    # Breaches: resolution after the due time, or still open past it.
    """
    UPDATE cases_case
    SET is_breached = true,
        resolution_breached_at = resolution_due_at
    WHERE resolution_due_at < coalesce(resolved_at, %(now)s::timestamptz)
    """,
    """
    INSERT INTO cases_casefeedback (case_id, feedback_id, attached_at)
    SELECT id, trigger_feedback_id, opened_at FROM cases_case
    """,
    # Events: opened for all, assigned when assigned, a state change for
    # every state past assigned, and a comment on every other case.
    """
    INSERT INTO cases_caseevent
        (case_id, actor_id, kind, changes, body, visibility, channel, outcome,
         created_at)
    SELECT id, NULL::int, 'opened', '{}'::jsonb, '', '', '', '', opened_at
    FROM cases_case
    UNION ALL
    SELECT id, NULL::int, 'assigned',
           jsonb_build_object('assignee', jsonb_build_array(NULL, assignee_id)),
           '', '', '', '', opened_at + interval '1 minute'
    FROM cases_case WHERE assignee_id IS NOT NULL
    UNION ALL
    SELECT id, assignee_id, 'state_changed',
           jsonb_build_object('state', jsonb_build_array('assigned', state)),
           '', '', '', '', updated_at
    FROM cases_case WHERE state NOT IN ('new', 'assigned')
    UNION ALL
    SELECT id, assignee_id, 'comment', '{}'::jsonb,
           'Called the customer about case ' || id, 'internal', '', '',
           opened_at + interval '30 minutes'
    FROM cases_case WHERE id %% 2 = 0 AND assignee_id IS NOT NULL
    """,
]


def make_people() -> tuple[list[list[int]], int]:
    """Give each seeded team a lead and agents; return the agent user ids
    by team, in team id order, and the first agent of the first team."""
    from django.contrib.auth import get_user_model

    from cases.models import Team, TeamMember

    user_model = get_user_model()
    agents: list[list[int]] = []
    for team in Team.objects.order_by("pk"):
        lead = user_model.objects.create(username=f"lead-{team.pk}")
        TeamMember.objects.create(team=team, user=lead, role=TeamMember.Role.LEAD)
        team_agents = []
        for number in range(AGENTS_PER_TEAM):
            user = user_model.objects.create(username=f"agent-{team.pk}-{number}")
            TeamMember.objects.create(team=team, user=user)
            team_agents.append(user.pk)
        agents.append(team_agents)
    return agents, agents[0][0]


def fill(customers: int, feedback: int, stale_open_share: float, agents) -> None:
    """Fill the tables in SQL, reset the id sequences and ANALYZE."""
    from django.db import connection

    params = {
        "now": NOW,
        "customers": customers,
        "feedback": feedback,
        "stale_open": stale_open_share,
        "agents": agents,
    }
    with connection.cursor() as cursor:
        # A parallel plan would draw random() in several workers, so the
        # rows would differ between runs.
        cursor.execute("SET max_parallel_workers_per_gather = 0")
        cursor.execute("SELECT setseed(0.42)")
        for statement in FILL_STATEMENTS:
            cursor.execute(statement, params)
        cursor.execute("RESET max_parallel_workers_per_gather")
        for table in [
            "feedback_customer",
            "feedback_feedback",
            "cases_case",
            "cases_casefeedback",
            "cases_caseevent",
        ]:
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
        cursor.execute("VACUUM ANALYZE")


def describe_data(agent_id: int) -> list[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM feedback_customer),"
            " (SELECT count(*) FROM feedback_feedback),"
            " (SELECT count(*) FROM cases_case),"
            " (SELECT count(*) FROM cases_caseevent),"
            " (SELECT count(*) FROM cases_case WHERE is_open)"
        )
        customers, feedback, cases, events, open_cases = cursor.fetchone()
        cursor.execute(
            "SELECT t.name, count(*), count(*) FILTER (WHERE c.is_open)"
            " FROM cases_case c JOIN cases_team t ON t.id = c.team_id"
            " GROUP BY t.name ORDER BY count(*) DESC"
        )
        teams = ", ".join(
            f"{name} {total} ({o} open)" for name, total, o in cursor.fetchall()
        )
        cursor.execute(
            "SELECT state, count(*) FROM cases_case GROUP BY state ORDER BY state"
        )
        states = ", ".join(f"{state} {count}" for state, count in cursor.fetchall())
    return [
        (
            f"customers {customers}, feedback {feedback}, cases {cases} "
            f"({open_cases} open), case events {events}"
        ),
        f"cases by team: {teams}",
        f"cases by state: {states}",
        f"measured as agent user id {agent_id} (team with the most cases)",
    ]


# Measurement


def summarize(samples_ms: list[float]) -> tuple[float, float]:
    """Return the median and the 95th percentile (nearest rank) in ms."""
    ordered = sorted(samples_ms)
    rank = max(0, round(0.95 * len(ordered)) - 1)
    return statistics.median(ordered), ordered[rank]


def target_note(median_ms: float, target_ms: float) -> str:
    verdict = "met" if median_ms < target_ms else "MISSED"
    return f"   target median < {target_ms:.0f}: {verdict}"


def capture_list_query(client, url: str) -> tuple[str, list[dict]]:
    """Call the list once and return the SQL of the case page and all
    queries the call ran."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as context:
        response = client.get(url)
    if response.status_code != 200:
        raise SystemExit(
            f"GET {url} returned {response.status_code}: {response.content[:300]!r}"
        )
    pages = [
        query
        for query in context.captured_queries
        if 'FROM "cases_case"' in query["sql"]
    ]
    if len(pages) != 1:
        raise SystemExit(f"expected one query on cases_case, found {len(pages)}")
    return pages[0]["sql"], context.captured_queries


def time_sql(sql: str, runs: int) -> tuple[list[float], str]:
    """Execute ``sql`` ``runs`` times after 5 warm-up runs; return the wall
    times in ms (client to server and back, rows fetched) and the plan."""
    from django.db import connection

    samples = []
    with connection.cursor() as cursor:
        for _ in range(5):
            cursor.execute(sql)
            cursor.fetchall()
        for _ in range(runs):
            started = time.perf_counter()
            cursor.execute(sql)
            cursor.fetchall()
            samples.append((time.perf_counter() - started) * 1000)
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    return samples, plan


def time_api(client, url: str, runs: int) -> list[float]:
    """Return the wall times in ms of ``runs`` calls, after 5 warm-up calls."""
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


def time_queries_in_calls(client, url: str, runs: int) -> float:
    """Return the median over ``runs`` calls of the time the call's queries
    took, in ms, as Django records it (to the millisecond)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    totals = []
    for _ in range(runs):
        with CaptureQueriesContext(connection) as context:
            client.get(url)
        totals.append(sum(float(query["time"]) for query in context) * 1000)
    return statistics.median(totals)


def time_serialization(agent_id: int, runs: int) -> tuple[float, float]:
    """Return the median ms to serialize one page of the agent's open cases
    and to render it as JSON, with the rows already loaded."""
    from rest_framework.renderers import JSONRenderer

    from cases.models import Case, TeamMember
    from cases.serializers import CaseListSerializer

    team_ids = TeamMember.objects.filter(user_id=agent_id).values("team_id")
    page = list(
        Case.objects.select_related("team", "assignee", "customer", "topic")
        .filter(team_id__in=team_ids, is_open=True)
        .order_by("-opened_at")[:PAGE_SIZE]
    )
    serialize_ms, render_ms = [], []
    for _ in range(runs):
        started = time.perf_counter()
        data = CaseListSerializer(page, many=True).data
        middle = time.perf_counter()
        JSONRenderer().render({"next": None, "previous": None, "results": data})
        ended = time.perf_counter()
        serialize_ms.append((middle - started) * 1000)
        render_ms.append((ended - middle) * 1000)
    return statistics.median(serialize_ms), statistics.median(render_ms)


def measure_scenario(
    client, label: str, query: str, runs: int, show_plan: bool
) -> dict:
    url = f"/api/v1/cases/?{query}&page_size={PAGE_SIZE}".replace("?&", "?")
    sql, queries = capture_list_query(client, url)
    sql_samples, plan = time_sql(sql, runs)
    api_samples = time_api(client, url, runs)
    result = {
        "label": label,
        "url": url,
        "sql": sql,
        "plan": plan,
        "sql_ms": summarize(sql_samples),
        "api_ms": summarize(api_samples),
        "call_sql_ms": time_queries_in_calls(client, url, runs),
        "query_count": len(queries),
    }
    print(f"\n## {label}\nGET {url}")
    if show_plan:
        print(f"SQL: {sql}\n{plan}")
    else:
        print(plan.splitlines()[-1])
    return result


def query_counts(client, query: str) -> dict[int, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    counts = {}
    for page_size in (10, 50, 100):
        url = f"/api/v1/cases/?{query}&page_size={page_size}"
        with CaptureQueriesContext(connection) as context:
            client.get(url)
        counts[page_size] = len(context.captured_queries)
    return counts


def measure(agent_id: int, runs: int, show_plans: bool) -> None:
    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(get_user_model().objects.get(pk=agent_id))

    results = [
        measure_scenario(client, label, query, runs, show_plans or index == 0)
        for index, (label, query) in enumerate(SCENARIOS)
    ]
    counts = query_counts(client, SCENARIOS[0][1])
    serialize_ms, render_ms = time_serialization(agent_id, runs)

    print(f"\n## Figures ({runs} runs each; median / p95 in ms)")
    for result in results:
        sql_median, sql_p95 = result["sql_ms"]
        api_median, api_p95 = result["api_ms"]
        has_target = "no target" not in result["label"]
        sql_note = target_note(sql_median, DB_TARGET_MS) if has_target else ""
        api_note = target_note(api_median, API_TARGET_MS) if has_target else ""
        print(f"{result['label']}:")
        print(f"  SQL   {sql_median:7.2f} / {sql_p95:7.2f}{sql_note}")
        print(f"  API   {api_median:7.2f} / {api_p95:7.2f}{api_note}")
        # The rest of the call: middleware, session and authentication,
        # the filter set and the paginator, in Python.
        call_sql_ms = result["call_sql_ms"]
        rest_ms = api_median - call_sql_ms - serialize_ms - render_ms
        print(
            f"  API median split: {result['query_count']} queries "
            f"{call_sql_ms:.0f}, serialize {serialize_ms:.2f}, "
            f"JSON {render_ms:.2f}, rest {rest_ms:.1f}"
        )
    print(
        f"serialize and JSON: medians for a page of {PAGE_SIZE} rows already "
        "loaded, timed apart from the calls"
    )
    same = len(set(counts.values())) == 1
    print(
        "query counts by page size: "
        + ", ".join(f"{size}: {count}" for size, count in counts.items())
        + f"   target constant: {'met' if same else 'MISSED'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--customers", type=int, default=200_000, help="Customers to create."
    )
    parser.add_argument(
        "--feedback",
        type=int,
        default=1_000_000,
        help="Feedback rows to create; every tenth opens a case (default %(default)s).",
    )
    parser.add_argument(
        "--stale-open-share",
        type=float,
        default=0.05,
        help="Share of cases older than 14 days still open (default %(default)s).",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=50,
        help="Timed runs of each measurement (default %(default)s).",
    )
    parser.add_argument(
        "--plans", action="store_true", help="Print every query plan in full."
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

    # The test client sends Host: 127.0.0.1, which the default ALLOWED_HOSTS
    # accepts. Logs of the fill would only add noise.
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    setup_django(args.database_url)
    try:
        print("\n".join(machine_summary()))
        started = time.perf_counter()
        agents, agent_id = make_people()
        fill(args.customers, args.feedback, args.stale_open_share, agents)
        print(f"data: {time.perf_counter() - started:.1f} s")
        print("\n".join(describe_data(agent_id)))
        measure(agent_id, args.runs, args.plans)
    finally:
        if not args.keep:
            drop_database(args.database_url)


if __name__ == "__main__":
    main()
