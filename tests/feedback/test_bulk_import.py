"""The PostgreSQL import path: feedback by COPY and cases in SQL.

The central check stores one file through ``feedback_store_chunk`` and the
same rows through the task path (``feedback_evaluate``), chunk by chunk,
and compares the cases, links and events they write.
"""

from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from cases.models import Case, CaseEvent, CaseFeedback, SlaPolicy, TeamMember
from cases.services import feedback_evaluate
from feedback import bulk
from feedback.intake import validate_item
from feedback.models import Customer, Feedback, MetricRollup
from tests.cases.factories import TeamMemberFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("the bulk import path runs on PostgreSQL only")


@pytest.fixture
def no_analysis(monkeypatch):
    """Keep the rows unanalysed, as they are until a worker takes them."""
    queued = []
    monkeypatch.setattr(bulk, "_queue_analysis", queued.extend)
    return queued


def _items(rows: list[dict], *, kind: str = "nps", source: str = "survey"):
    now = timezone.now()
    defaults = {"kind": kind, "source": source, "language": ""}
    return [validate_item(row, defaults=defaults, now=now) for row in rows]


def _rows(count: int) -> list[dict]:
    """NPS responses from a few customers over several touchpoints, so that
    cases open, feedback attaches and teams fill up."""
    touchpoints = ["delivery", "website", "app", "checkout", "product", ""]
    start = datetime(2026, 10, 1, tzinfo=UTC)
    return [
        {
            "external_id": f"r{number}",
            "customer": f"c{number % 9}" if number % 11 else "",
            "email": f"c{number % 9}@example.test" if number % 11 else "",
            "score": str(number % 11),
            "comment": f"answer {number}",
            "touchpoint": touchpoints[number % len(touchpoints)],
            "occurred_at": (start + timedelta(hours=number * 7)).isoformat(),
        }
        for number in range(count)
    ]


def _agents() -> None:
    from cases.models import Team

    for team in Team.objects.order_by("pk"):
        for number in range(2):
            TeamMemberFactory(
                team=team,
                user=UserFactory(username=f"{team.name}-{number}"),
                max_open_cases=3,
            )


def _snapshot() -> dict:
    """Cases, links and events with database ids replaced by external ids."""
    external = dict(Feedback.objects.values_list("pk", "external_id"))
    cases = {}
    for case in Case.objects.select_related("team", "assignee", "rule", "sla_policy"):
        cases[case.pk] = (
            external[case.trigger_feedback_id],
            case.customer_id and Customer.objects.get(pk=case.customer_id).external_id,
            case.dedup_key.startswith("f"),
            case.team.name,
            case.priority,
            case.rule.name,
            case.rule_reason,
            case.routing_rule_id,
            case.routing_reason,
            case.sla_policy.name if case.sla_policy else None,
            # Due times run in business hours from the opening time, which
            # differs between the two runs; the policy decides them.
            case.first_response_due_at is not None,
            case.resolution_due_at is not None,
        )
    links = sorted(
        (cases[case_id][0], external[feedback_id])
        for case_id, feedback_id in CaseFeedback.objects.values_list("case_id", "feedback_id")
    )
    events = sorted(
        (cases[event.case_id][0], event.kind, _changes(event.changes, external), event.body)
        for event in CaseEvent.objects.all()
    )
    return {"cases": sorted(cases.values(), key=str), "links": links, "events": events}


def _changes(changes: dict, external: dict) -> str:
    """Name the changes of an event. The bulk path leaves the agent to the
    triage after the analysis, so state and assignee are left out."""
    if "feedback" in changes:
        return f"feedback {external[changes['feedback'][1]]}"
    return repr(sorted((key, value) for key, value in changes.items() if key not in ("state", "assignee")))


def _evaluation_reset() -> None:
    CaseEvent.objects.all().delete()
    CaseFeedback.objects.all().delete()
    Case.objects.all().delete()
    Feedback.objects.update(evaluated_at=None)
    TeamMember.objects.update(last_assigned_at=None)


def test_bulk_matches_task_path(no_analysis):
    _agents()
    rows = _rows(120)
    chunks = [_items(rows[start : start + 25]) for start in range(0, len(rows), 25)]
    for chunk in chunks:
        bulk.feedback_store_chunk(inputs=chunk, now=timezone.now())
    by_sql = _snapshot()
    assert by_sql["cases"], "the rows should open cases"
    assert any(event[1] == CaseEvent.Kind.FEEDBACK_ATTACHED for event in by_sql["events"])
    assert not Case.objects.filter(assignee__isnull=False).exists()
    assert set(Case.objects.values_list("state", flat=True)) == {Case.State.NEW}

    _evaluation_reset()
    for chunk in chunks:
        ids = list(
            Feedback.objects.filter(
                external_id__in=[item.external_id for item in chunk]
            ).values_list("pk", flat=True)
        )
        feedback_evaluate(feedback_ids=ids)
    by_task = _snapshot()
    for part in ("cases", "links", "events"):
        assert len(by_task[part]) == len(by_sql[part]), part
        for task_row, sql_row in zip(by_task[part], by_sql[part]):
            assert task_row == sql_row, part


def test_bulk_rows_evaluated_not_analysed(no_analysis):
    result, evaluation = bulk.feedback_store_chunk(
        inputs=_items(_rows(30)), now=timezone.now()
    )
    assert result.created_count == 30
    assert evaluation.evaluated == 30
    assert not Feedback.objects.filter(evaluated_at__isnull=True).exists()
    assert not Feedback.objects.filter(analyzed_at__isnull=False).exists()
    assert sorted(no_analysis) == sorted(result.ids)
    # Only the all-topics rollups are counted before the analysis.
    assert set(MetricRollup.objects.values_list("topic_key", flat=True)) == {0}
    assert sum(MetricRollup.objects.values_list("count", flat=True)) == 30


def test_text_rows_wait_for_their_analysis(no_analysis):
    items = _items(
        [{"external_id": "t1", "customer": "c1", "comment": "awful, broken, never again"}],
        kind="text",
        source="social",
    )
    _, evaluation = bulk.feedback_store_chunk(inputs=items, now=timezone.now())
    assert evaluation.evaluated == 0
    assert Feedback.objects.get().evaluated_at is None
    assert not Case.objects.exists()


def test_chunk_with_stored_rows_counts_duplicates(no_analysis):
    items = _items(_rows(10))
    bulk.feedback_store_chunk(inputs=items[:4], now=timezone.now())
    # The COPY of all ten fails on the four stored keys, and the chunk goes
    # in again with ON CONFLICT.
    result, _ = bulk.feedback_store_chunk(inputs=items, now=timezone.now())
    assert result.created == [False] * 4 + [True] * 6
    assert result.duplicate_count == 4
    assert Feedback.objects.count() == 10
    assert sum(MetricRollup.objects.values_list("count", flat=True)) == 10
    links = CaseFeedback.objects.count()
    assert links == CaseFeedback.objects.values("feedback").distinct().count()


def test_chunk_with_reused_id_reports_conflict(no_analysis):
    bulk.feedback_store_chunk(inputs=_items(_rows(3)), now=timezone.now())
    changed = _rows(3)
    changed[1]["score"] = "9"
    result, _ = bulk.feedback_store_chunk(inputs=_items(changed), now=timezone.now())
    assert result.created == [False, False, False]
    assert list(result.conflicts) == [1]
    assert "already stored with a different kind, score or comment" in result.conflicts[1]


def test_bulk_attach_resumes_waiting_case(no_analysis):
    first = _items([{"external_id": "a", "customer": "c1", "score": "2"}])
    bulk.feedback_store_chunk(inputs=first, now=timezone.now())
    case = Case.objects.get()
    Case.objects.filter(pk=case.pk).update(state=Case.State.WAITING)

    later = _items([{"external_id": "b", "customer": "c1", "score": "1"}])
    _, evaluation = bulk.feedback_store_chunk(inputs=later, now=timezone.now())

    assert evaluation.cases_opened == 0
    assert evaluation.attached == 1
    case.refresh_from_db()
    assert case.state == Case.State.IN_PROGRESS
    assert case.feedback.count() == 2
    kinds = list(case.events.order_by("pk").values_list("kind", flat=True))
    assert kinds == [
        CaseEvent.Kind.OPENED,
        CaseEvent.Kind.FEEDBACK_ATTACHED,
        CaseEvent.Kind.STATE_CHANGED,
    ]


def test_bulk_cases_get_sla_due_times():
    policy = SlaPolicy.objects.filter(is_active=True).order_by("position").first()
    if policy is None:
        pytest.skip("no SLA policy is seeded")
    items = _items([{"external_id": "s1", "customer": "c1", "score": "0"}])
    bulk.feedback_store_chunk(inputs=items, now=timezone.now())
    case = Case.objects.get()
    assert case.sla_policy_id is not None
    assert case.resolution_due_at > case.opened_at


def _write(tmp_path: Path, rows: list[dict]) -> Path:
    import csv

    path = tmp_path / "answers.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_import_command_on_writer_threads(tmp_path):
    path = _write(tmp_path, _rows(60))
    out = StringIO()
    call_command(
        "import_feedback", str(path), "--source", "survey", "--kind", "nps",
        "--batch-size", "7", "--no-progress", stdout=out, stderr=StringIO(),
    )
    assert out.getvalue().strip().endswith("imported 60, duplicates 0, rejected 0")
    # The eager analysis task ran after each chunk committed.
    assert not Feedback.objects.filter(analyzed_at__isnull=True).exists()
    assert Case.objects.exists()


def test_writer_error_stops_import(tmp_path, monkeypatch):
    from feedback import importer

    calls = []

    def failing(*, inputs, now, customers):
        calls.append(len(inputs))
        if len(calls) == 2:
            raise RuntimeError("database went away")
        return original(inputs=inputs, now=now, customers=customers)

    original = importer.feedback_store_chunk
    monkeypatch.setattr(importer, "feedback_store_chunk", failing)
    path = _write(tmp_path, _rows(40))
    with pytest.raises(RuntimeError, match="database went away"):
        call_command(
            "import_feedback", str(path), "--source", "survey", "--kind", "nps",
            "--batch-size", "10", "--no-progress", stdout=StringIO(), stderr=StringIO(),
        )
    # The chunk stored before the failure stays; nothing after it.
    assert Feedback.objects.count() == 10


def test_bulk_cases_queue_webhooks(no_analysis):
    from cases.models import OutboxMessage, WebhookEndpoint

    WebhookEndpoint.objects.create(
        name="chat", url="http://127.0.0.1:9/hook", secret="s", events=["case.opened"]
    )
    items = _items(
        [
            {"external_id": "w1", "customer": "c1", "score": "1"},
            {"external_id": "w2", "customer": "c2", "score": "2"},
        ]
    )
    bulk.feedback_store_chunk(inputs=items, now=timezone.now())

    messages = OutboxMessage.objects.filter(channel=OutboxMessage.Channel.WEBHOOK)
    opened = {message.payload["body"]["data"]["id"] for message in messages}
    assert opened == set(Case.objects.values_list("pk", flat=True))
    assert len(opened) == 2


def test_no_webhook_no_case_load(no_analysis):
    from django.test.utils import CaptureQueriesContext

    items = _items([{"external_id": "q1", "customer": "c1", "score": "1"}])
    with CaptureQueriesContext(connection) as queries:
        bulk.feedback_store_chunk(inputs=items, now=timezone.now())
    loads = [query for query in queries if 'SELECT "cases_case"."id"' in query["sql"]]
    assert loads == []


def test_two_writers_one_case_per_key(tmp_path, settings):
    settings.OSCM_IMPORT_WRITERS = 2
    path = _write(tmp_path, _rows(120))
    out = StringIO()
    call_command(
        "import_feedback", str(path), "--source", "survey", "--kind", "nps",
        "--batch-size", "5", "--no-progress", stdout=out, stderr=StringIO(),
    )
    assert out.getvalue().strip().endswith("imported 120, duplicates 0, rejected 0")
    open_keys = list(Case.objects.filter(is_open=True).values_list("dedup_key", flat=True))
    assert len(open_keys) == len(set(open_keys))
    detractors = Feedback.objects.filter(score__lte=6).count()
    assert CaseFeedback.objects.count() == detractors
    assert CaseFeedback.objects.values("feedback").distinct().count() == detractors


def test_chunk_retried_after_deadlock(no_analysis, monkeypatch):
    from django.db import OperationalError
    from psycopg.errors import DeadlockDetected

    real_write = bulk._chunk_write
    attempts = []

    def deadlocked_once(items, customer_ids, *, now):
        attempts.append(len(items))
        if len(attempts) == 1:
            error = OperationalError("deadlock detected")
            error.__cause__ = DeadlockDetected("deadlock detected")
            raise error
        return real_write(items, customer_ids, now=now)

    monkeypatch.setattr(bulk, "_chunk_write", deadlocked_once)
    result, _ = bulk.feedback_store_chunk(inputs=_items(_rows(5)), now=timezone.now())
    assert attempts == [5, 5]
    assert result.created_count == 5
    assert Feedback.objects.count() == 5


def test_other_errors_not_retried(no_analysis, monkeypatch):
    from django.db import OperationalError

    def broken(items, customer_ids, *, now):
        raise OperationalError("server closed the connection")

    monkeypatch.setattr(bulk, "_chunk_write", broken)
    with pytest.raises(OperationalError, match="server closed"):
        bulk.feedback_store_chunk(inputs=_items(_rows(3)), now=timezone.now())


def test_analysis_routes_and_assigns_bulk_cases(no_analysis):
    from cases.bulk import AWAITING_TRIAGE
    from feedback.services import feedback_analyze

    _agents()
    items = _items(
        [
            # A delivery complaint sent from the website: the touchpoint
            # routes it to IT, its topic to Customer Service.
            {"external_id": "d1", "customer": "c1", "score": "1", "touchpoint": "website",
             "comment": "The courier lost my parcel and the delivery was late"},
            {"external_id": "d2", "customer": "c2", "score": "2", "touchpoint": "website"},
        ]
    )
    bulk.feedback_store_chunk(inputs=items, now=timezone.now())
    opened = {case.trigger_feedback.external_id: case for case in Case.objects.all()}
    assert {case.team.name for case in opened.values()} == {"IT"}
    assert {case.assignment_reason for case in opened.values()} == {AWAITING_TRIAGE}

    feedback_analyze(feedback_ids=list(Feedback.objects.values_list("pk", flat=True)))

    moved = Case.objects.get(trigger_feedback__external_id="d1")
    unmoved = Case.objects.get(trigger_feedback__external_id="d2")
    assert moved.team.name == "Customer Service"
    assert moved.topic.slug == "delivery"
    assert moved.assignee.username.startswith("Customer Service-")
    assert moved.state == Case.State.ASSIGNED
    assert unmoved.team.name == "IT"
    assert unmoved.topic is None
    assert unmoved.assignee.username.startswith("IT-")
    assigned_events = CaseEvent.objects.filter(kind=CaseEvent.Kind.ASSIGNED)
    assert assigned_events.count() == 2


def _customer_queries(queries) -> list[str]:
    return [query["sql"] for query in queries if "feedback_customer" in query["sql"]]


def test_customer_cache_skips_known_customers(no_analysis):
    from django.test.utils import CaptureQueriesContext

    customers = bulk.CustomerCache()
    rows = _rows(40)
    bulk.feedback_store_chunk(inputs=_items(rows[:20]), now=timezone.now(), customers=customers)
    with CaptureQueriesContext(connection) as queries:
        result, _ = bulk.feedback_store_chunk(
            inputs=_items(rows[20:]), now=timezone.now(), customers=customers
        )
    assert result.created_count == 20
    assert _customer_queries(queries.captured_queries) == []
    assert Customer.objects.count() == 9
    # Every row still points at its own customer.
    stored = Feedback.objects.filter(customer__isnull=False).values_list(
        "external_id", "customer__external_id"
    )
    for external_id, customer in stored:
        assert customer == f"c{int(external_id[1:]) % 9}"


def test_customer_cache_fills_blank_later(no_analysis):
    customers = bulk.CustomerCache()
    first = {"external_id": "a", "customer": "c1", "score": "9", "occurred_at": "2026-10-01"}
    second = {**first, "external_id": "b", "email": "c1@example.test", "name": "Ana"}
    bulk.feedback_store_chunk(inputs=_items([first]), now=timezone.now(), customers=customers)
    bulk.feedback_store_chunk(inputs=_items([second]), now=timezone.now(), customers=customers)
    customer = Customer.objects.get(external_id="c1")
    assert customer.email == "c1@example.test"
    assert customer.name == "Ana"


def test_customer_cache_never_overwrites(no_analysis):
    customers = bulk.CustomerCache()
    first = {"external_id": "a", "customer": "c1", "email": "old@example.test", "score": "9"}
    second = {**first, "external_id": "b", "email": "new@example.test"}
    bulk.feedback_store_chunk(inputs=_items([first]), now=timezone.now(), customers=customers)
    bulk.feedback_store_chunk(inputs=_items([second]), now=timezone.now(), customers=customers)
    assert Customer.objects.get(external_id="c1").email == "old@example.test"


def test_customer_deleted_during_import(no_analysis):
    customers = bulk.CustomerCache()
    items = _items([{"external_id": "a", "customer": "gone", "score": "3", "touchpoint": "app"}])
    with transaction.atomic():
        customers.customer_ids(items)
    # Deleted by someone else after an earlier chunk looked it up.
    Customer.objects.filter(external_id="gone").delete()

    result, evaluation = bulk.feedback_store_chunk(inputs=items, now=timezone.now(), customers=customers)

    assert result.created_count == 1
    feedback = Feedback.objects.get(external_id="a")
    assert feedback.customer.external_id == "gone"
    assert Case.objects.get().customer_id == feedback.customer_id
