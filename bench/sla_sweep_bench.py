"""Time ``case_sla_sweep`` over 100,000 open cases on PostgreSQL.

Creates a database of its own (``oscm_bench_sla`` on 127.0.0.1:5432 as
user postgres by default), migrates it, COPYs feedback and open cases into
it and drops it at the end unless ``--keep`` is given.

Open cases have ages drawn from an exponential distribution with a mean of
``--mean-age-days`` before a fixed Wednesday 14:00 UTC, because older cases
are more likely to be resolved already. The priority mix is 20% low, 60%
normal, 15% high and 5% urgent, and due times come from ``case_sla_apply``
as ``case_open`` sets them. Teams work on three calendars: office hours in
UTC, office hours in Europe/London with a holiday, and none (24x7). 95% of
the cases past their first-response due time have a first response, half of
the younger ones do, and 10% of all wait on the customer, with their
resolution clock paused. The script prints the resulting shares.

Three sweeps are timed, with emails going to Django's locmem backend:

1. backlog: no warning or breach recorded yet, as after a first deployment
   or an outage of the beat schedule;
2. and 3. steady state: 60 and 120 s later, as the beat schedule runs it.

Each line gives the elapsed time and the Python CPU time of the sweep. The
difference is mostly waiting on PostgreSQL, and ``--query-times`` splits
the database time by statement.

    .venv/bin/python bench/sla_sweep_bench.py
    .venv/bin/python bench/sla_sweep_bench.py --cases 100000 --keep
"""

import argparse
import os
import platform
import random
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/oscm_bench_sla"
NOW = datetime(2025, 3, 12, 14, tzinfo=UTC)
AGENTS_PER_TEAM = 5
PRIORITY_WEIGHTS = {1: 20, 2: 60, 3: 15, 4: 5}


def _admin_execute(url: str, statement: str) -> None:
    import psycopg

    parts = urlsplit(url)
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(statement.format(name=parts.path.lstrip("/")))


def setup(url: str) -> None:
    """Create the database empty, point Django at it and migrate it."""
    _admin_execute(url, 'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _admin_execute(url, 'CREATE DATABASE "{name}"')
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = "oscm.settings"
    os.environ["EMAIL_BACKEND"] = "django.core.mail.backends.locmem.EmailBackend"
    # One line per batch would flood the output, so only errors show.
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    sys.path.insert(0, str(REPOSITORY))

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def teardown(url: str) -> None:
    from django.db import connections

    connections.close_all()
    _admin_execute(url, 'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_teams() -> dict[int, list[int]]:
    """Give the seeded teams calendars, a lead and agents. Return the agent
    user ids by team id."""
    from django.contrib.auth import get_user_model

    from cases.models import BusinessCalendar, Holiday, Team, TeamMember

    london = BusinessCalendar.objects.create(
        name="London office", timezone="Europe/London"
    )
    Holiday.objects.create(
        calendar=london, date=date(2025, 3, 10), name="Bench holiday"
    )
    teams = list(Team.objects.order_by("pk"))
    teams[1].calendar = london
    teams[2].calendar = None
    Team.objects.bulk_update(teams[1:3], ["calendar"])

    user_model = get_user_model()
    agents: dict[int, list[int]] = {}
    for team in teams:
        lead = user_model.objects.create(
            username=f"lead-{team.pk}", email=f"lead-{team.pk}@example.test"
        )
        TeamMember.objects.create(team=team, user=lead, role=TeamMember.Role.LEAD)
        agents[team.pk] = []
        for number in range(AGENTS_PER_TEAM):
            user = user_model.objects.create(
                username=f"agent-{team.pk}-{number}",
                email=f"agent-{team.pk}-{number}@example.test",
            )
            TeamMember.objects.create(team=team, user=user, max_open_cases=100_000)
            agents[team.pk].append(user.pk)
    return agents


def copy_models(model, objects) -> None:
    """COPY unsaved model instances into the model's table, ids included."""
    from django.db import connection

    fields = model._meta.concrete_fields
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    table = connection.ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor:
        with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for instance in objects:
                copy.write_row(
                    [
                        field.get_db_prep_save(
                            getattr(instance, field.attname), connection
                        )
                        for field in fields
                    ]
                )
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence('{model._meta.db_table}', 'id'), "
            f"(SELECT max(id) FROM {table}))"
        )


def make_cases(
    count: int, mean_age_days: float, agents: dict[int, list[int]], seed: int
) -> None:
    from django.db import connection

    from cases.escalation import case_sla_apply
    from cases.models import Case
    from feedback.models import Feedback

    rng = random.Random(seed)
    team_ids = sorted(agents)
    priorities = list(PRIORITY_WEIGHTS)
    weights = list(PRIORITY_WEIGHTS.values())
    feedback = []
    cases = []
    for number in range(1, count + 1):
        opened_at = NOW - timedelta(days=rng.expovariate(1 / mean_age_days))
        feedback.append(
            Feedback(
                id=number,
                kind=Feedback.Kind.NPS,
                score=rng.randint(0, 6),
                source=Feedback.Source.SURVEY,
                external_id=f"bench-{number}",
                occurred_at=opened_at,
                received_at=opened_at,
                evaluated_at=opened_at,
            )
        )
        team_id = rng.choice(team_ids)
        cases.append(
            Case(
                id=number,
                trigger_feedback_id=number,
                team_id=team_id,
                assignee_id=rng.choice(agents[team_id]),
                state=Case.State.ASSIGNED,
                priority=rng.choices(priorities, weights)[0],
                dedup_key=f"f{number}",
                rule_reason="bench",
                routing_reason="bench",
                opened_at=opened_at,
                updated_at=opened_at,
            )
        )
    case_sla_apply(cases=cases, now=NOW)
    for case in cases:
        share = 0.95 if case.first_response_due_at <= NOW else 0.5
        if rng.random() < share:
            case.first_response_at = case.opened_at + (NOW - case.opened_at) / 2
        if rng.random() < 0.1:
            # Waiting on the customer follows a first response.
            case.first_response_at = case.first_response_at or case.opened_at
            case.state = Case.State.WAITING
            case.sla_paused_at = case.opened_at + (NOW - case.opened_at) * 0.75

    copy_models(Feedback, feedback)
    copy_models(Case, cases)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE cases_case")


def describe_cases() -> list[str]:
    from cases.models import Case

    open_cases = Case.objects.filter(is_open=True)
    pending = open_cases.filter(first_response_at__isnull=True)
    running = open_cases.filter(sla_paused_at__isnull=True)
    soon = NOW + timedelta(hours=8)
    lines = [f"open cases: {open_cases.count()}"]
    for label, rows, due in [
        ("first response pending", pending, "first_response_due_at"),
        ("resolution running", running, "resolution_due_at"),
    ]:
        past = rows.filter(**{f"{due}__lte": NOW}).count()
        near = rows.filter(**{f"{due}__gt": NOW, f"{due}__lte": soon}).count()
        lines.append(f"{label}: {rows.count()}, past due {past}, due within 8 h {near}")
    return lines


def machine_lines() -> list[str]:
    from django.db import connection

    model = "unknown"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server = cursor.fetchone()[0]
    return [
        f"nproc: {os.cpu_count()}, CPU: {model}",
        f"PostgreSQL {server}, Python {platform.python_version()}",
    ]


def time_sweep(
    label: str, now: datetime, batch_size: int | None, query_times: bool = False
) -> None:
    from django.core import mail
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from cases.escalation import case_sla_sweep

    options = {} if batch_size is None else {"batch_size": batch_size}
    mail.outbox = []
    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        cpu_started = time.process_time()
        result = case_sla_sweep(now=now, **options)
        cpu = time.process_time() - cpu_started
        elapsed = time.perf_counter() - started
    # The rest of the elapsed time is mostly spent waiting on PostgreSQL.
    print(
        f"{label}: {elapsed:.3f} s ({cpu:.3f} s Python CPU), {result.breached} "
        f"breaches, {result.warned} warnings, {len(mail.outbox)} emails, "
        f"{len(queries)} queries"
    )
    if query_times:
        print_query_times(queries.captured_queries)


def print_query_times(captured: list[dict]) -> None:
    """Print the time Django measured per statement start, slowest first.

    The first four words of a statement tell the breach and warning UPDATEs
    apart. COPY goes through psycopg's cursor directly and is not counted.
    """
    totals: dict[str, list] = {}
    for query in captured:
        start = " ".join(query["sql"].split()[:4])[:70]
        total = totals.setdefault(start, [0, 0.0])
        total[0] += 1
        total[1] += float(query["time"])
    for start, (count, seconds) in sorted(totals.items(), key=lambda item: -item[1][1]):
        print(f"    {seconds:6.3f} s in {count:4d} x {start}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases", type=int, default=100_000, help="Open cases to create."
    )
    parser.add_argument(
        "--mean-age-days",
        type=float,
        default=1.5,
        help="Mean age of the open cases, in days (default %(default)s).",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help="Cases the sweep claims per transaction (default: the service's).",
    )
    parser.add_argument("--seed", type=int, default=1, help="Seed of the random data.")
    parser.add_argument(
        "--database-url",
        default=DEFAULT_URL,
        help="PostgreSQL database to create, use and drop (default %(default)s).",
    )
    parser.add_argument(
        "--keep", action="store_true", help="Keep the database afterwards."
    )
    parser.add_argument(
        "--query-times",
        action="store_true",
        help="Print the database time of each kind of statement per sweep.",
    )
    args = parser.parse_args()

    setup(args.database_url)
    try:
        print("\n".join(machine_lines()))
        started = time.perf_counter()
        make_cases(args.cases, args.mean_age_days, make_teams(), args.seed)
        print(f"data: {time.perf_counter() - started:.1f} s")
        print("\n".join(describe_cases()))
        for label, offset in [
            ("backlog", 0),
            ("steady +60 s", 60),
            ("steady +120 s", 120),
        ]:
            time_sweep(
                f"{label} sweep",
                NOW + timedelta(seconds=offset),
                args.batch_size,
                args.query_times,
            )
    finally:
        if not args.keep:
            teardown(args.database_url)


if __name__ == "__main__":
    main()
