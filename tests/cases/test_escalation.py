"""SLA policy choice, due times, pause and resume, and the breach sweep.

The seeded teams work Monday to Friday, 09:00-17:00 UTC. A normal-priority
case falls to the seeded fallback policy "Standard": first response in 480
and resolution in 2400 business minutes. Times are passed as ``now``.
"""

import os
import threading
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from cases.escalation import (
    SweepResult,
    case_sla_apply,
    case_sla_pause,
    case_sla_resume,
    case_sla_sweep,
    sla_policy_select,
)
from cases.models import Case, CaseEvent, Priority, SlaPolicy, TeamMember
from cases.services import feedback_evaluate
from cases.sla import WorkingCalendar, add_business_minutes

from .factories import FeedbackFactory, TeamMemberFactory, UserFactory

REQUIRE_SERVICES = os.environ.get("OSCM_REQUIRE_SERVICES") == "1"
SECRET_COMMENT = "my neighbour Alice Example broke it"

# Monday 3 March 2025.
MONDAY = datetime(2025, 3, 3, 9, tzinfo=UTC)


def _utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _open_case(team, *, opened_at=MONDAY, priority=Priority.NORMAL, **fields) -> Case:
    """Save an open case of ``team`` and give it due times as case_open does."""
    feedback = FeedbackFactory(score=2, comment=SECRET_COMMENT)
    case = Case.objects.create(
        trigger_feedback=feedback,
        customer=feedback.customer,
        team=team,
        priority=priority,
        dedup_key=f"f{feedback.pk}",
        rule_reason="test",
        routing_reason="test",
        opened_at=opened_at,
        updated_at=opened_at,
        **fields,
    )
    case_sla_apply(cases=[case], now=opened_at)
    case.refresh_from_db()
    return case


@pytest.fixture
def team(teams):
    return teams["IT"]


@pytest.fixture
def lead(team):
    user = UserFactory(username="lead_it", email="lead@example.test")
    TeamMemberFactory(team=team, user=user, role=TeamMember.Role.LEAD)
    return user


@pytest.fixture
def agent(team):
    user = UserFactory(username="agent_it", email="agent@example.test")
    TeamMemberFactory(team=team, user=user)
    return user


def _sweep(capture, now, **kwargs) -> SweepResult:
    with capture(execute=True):
        return case_sla_sweep(now=now, **kwargs)


# Policy selection


def _policy(position, *, active=True, fallback=False, **conditions) -> SlaPolicy:
    return SlaPolicy(
        pk=position,
        position=position,
        name=f"Policy {position}",
        first_response_minutes=60,
        resolution_minutes=480,
        is_active=active,
        is_fallback=fallback,
        **conditions,
    )


def test_policy_select_first_match_wins():
    policies = [
        _policy(10, team_id=7),
        _policy(20, priority=Priority.HIGH),
        _policy(30, topic_id=3),
        _policy(100, fallback=True),
    ]
    case = Case(team_id=8, priority=Priority.HIGH, topic_id=3)

    assert sla_policy_select(case=case, policies=policies).position == 20


def test_policy_select_needs_every_condition():
    policies = [
        _policy(10, team_id=7, priority=Priority.HIGH),
        _policy(100, fallback=True),
    ]
    case = Case(team_id=7, priority=Priority.LOW)

    assert sla_policy_select(case=case, policies=policies).position == 100


def test_policy_select_skips_inactive():
    policies = [_policy(10, active=False), _policy(20), _policy(100, fallback=True)]

    assert sla_policy_select(case=Case(team_id=1), policies=policies).position == 20


def test_policy_select_falls_back_despite_conditions():
    policies = [_policy(10, team_id=7), _policy(100, fallback=True, team_id=9)]

    assert sla_policy_select(case=Case(team_id=1), policies=policies).position == 100


def test_policy_select_without_fallback_is_none():
    policies = [_policy(10, team_id=7), _policy(100, fallback=True, active=False)]

    assert sla_policy_select(case=Case(team_id=1), policies=policies) is None


# Due times


@pytest.mark.django_db
def test_automatic_opening_sets_due_times(topics):
    feedback = FeedbackFactory(score=1, primary_topic=topics["delivery"])

    feedback_evaluate(feedback_ids=[feedback.pk])

    case = Case.objects.get(trigger_feedback=feedback)
    calendar = WorkingCalendar.from_model(case.team.calendar)
    assert case.sla_policy.name == "High"
    assert case.first_response_due_at == add_business_minutes(
        case.opened_at, 4 * 60, calendar
    )
    assert case.resolution_due_at == add_business_minutes(
        case.opened_at, 3 * 8 * 60, calendar
    )


@pytest.mark.django_db
def test_apply_uses_team_calendar(team):
    case = _open_case(team, opened_at=_utc(2025, 3, 7, 16))

    assert case.sla_policy.name == "Standard"
    assert case.first_response_due_at == _utc(2025, 3, 10, 16)
    assert case.resolution_due_at == _utc(2025, 3, 14, 16)


@pytest.mark.django_db
def test_apply_without_calendar_runs_around_the_clock(team):
    team.calendar = None
    team.save()

    case = _open_case(team, opened_at=_utc(2025, 3, 8, 10))

    assert case.first_response_due_at == _utc(2025, 3, 8, 18)


@pytest.mark.django_db
def test_apply_query_count_flat(teams, django_assert_num_queries):
    cases = [
        _open_case(team, priority=priority)
        for team in teams.values()
        for priority in Priority.values
        for _ in range(5)
    ]

    # Policies, teams with calendars, holidays and one bulk_update.
    with django_assert_num_queries(4):
        case_sla_apply(cases=cases, now=MONDAY)


# Pause and resume


def test_pause_keeps_first_pause():
    case = Case(sla_paused_at=_utc(2025, 3, 3, 10))

    case_sla_pause(case=case, now=_utc(2025, 3, 3, 11))

    assert case.sla_paused_at == _utc(2025, 3, 3, 10)


@pytest.mark.django_db
def test_resume_pushes_resolution_by_paused_business_time(team):
    case = _open_case(team)
    first_response_due = case.first_response_due_at
    assert case.resolution_due_at == _utc(2025, 3, 7, 17)

    # Thursday 16:00 to Monday 10:00: 1 h Thursday, 8 h Friday, 1 h Monday.
    case_sla_pause(case=case, now=_utc(2025, 3, 6, 16))
    case_sla_resume(case=case, now=_utc(2025, 3, 10, 10))

    assert case.sla_paused_at is None
    assert case.resolution_due_at == _utc(2025, 3, 11, 11)
    assert case.first_response_due_at == first_response_due


@pytest.mark.django_db
def test_resume_over_night_in_london(team):
    calendar = team.calendar
    calendar.timezone = "Europe/London"
    calendar.save()
    # Opened Monday 24 March 2025 09:00 GMT, due Friday 28 March 17:00 GMT.
    case = _open_case(team, opened_at=_utc(2025, 3, 24, 9))

    # Friday 16:00 GMT to Monday 31 March 10:00 BST, across the change:
    # 1 h Friday and 1 h Monday.
    case_sla_pause(case=case, now=_utc(2025, 3, 28, 16))
    case_sla_resume(case=case, now=_utc(2025, 3, 31, 9))

    # The 1 h left at the pause runs from the resume: 11:00 BST.
    assert case.resolution_due_at == _utc(2025, 3, 31, 10)


def test_resume_without_pause_changes_nothing():
    due = _utc(2025, 3, 7, 17)
    case = Case(resolution_due_at=due)

    case_sla_resume(case=case, now=_utc(2025, 3, 10, 10))

    assert case.resolution_due_at == due


# The sweep: warnings


@pytest.mark.django_db
def test_sweep_warns_at_75_percent_once(
    team, agent, lead, mailoutbox, django_capture_on_commit_callbacks
):
    case = _open_case(team, assignee=agent)
    # 75% of 480 minutes from Monday 09:00 is 15:00.

    before = _sweep(django_capture_on_commit_callbacks, _utc(2025, 3, 3, 14, 59))
    at = _sweep(django_capture_on_commit_callbacks, _utc(2025, 3, 3, 15))
    again = _sweep(django_capture_on_commit_callbacks, _utc(2025, 3, 3, 15, 30))

    assert before == SweepResult()
    assert at == SweepResult(warned=1)
    assert again == SweepResult()
    case.refresh_from_db()
    assert case.first_response_warned_at == _utc(2025, 3, 3, 15)
    assert case.resolution_warned_at is None
    event = case.events.get(kind=CaseEvent.Kind.SLA_WARNING)
    assert event.changes == {
        "target": "first_response",
        "due_at": "2025-03-03T17:00:00+00:00",
    }
    assert len(mailoutbox) == 1
    assert mailoutbox[0].to == ["agent@example.test"]
    assert f"#{case.pk}" in mailoutbox[0].subject


@pytest.mark.django_db
def test_sweep_warns_in_business_time(
    team, agent, mailoutbox, django_capture_on_commit_callbacks
):
    # Opened Wednesday 09:00, resolution due Tuesday 11 March 17:00. 75% of
    # 2400 business minutes is Monday 15:00; in wall-clock time it would be
    # Sunday 03:00.
    case = _open_case(
        team,
        opened_at=_utc(2025, 3, 5, 9),
        assignee=agent,
        first_response_at=_utc(2025, 3, 5, 10),
    )

    sunday = _sweep(django_capture_on_commit_callbacks, _utc(2025, 3, 9, 12))
    early = _sweep(django_capture_on_commit_callbacks, _utc(2025, 3, 10, 14, 59))
    monday = _sweep(django_capture_on_commit_callbacks, _utc(2025, 3, 10, 15))

    assert sunday == SweepResult()
    assert early == SweepResult()
    assert monday == SweepResult(warned=1)
    case.refresh_from_db()
    assert case.resolution_warned_at == _utc(2025, 3, 10, 15)


@pytest.mark.django_db
def test_sweep_warns_leads_of_unassigned_case(
    team, lead, mailoutbox, django_capture_on_commit_callbacks
):
    _open_case(team)

    _sweep(django_capture_on_commit_callbacks, _utc(2025, 3, 3, 15))

    assert [message.to for message in mailoutbox] == [["lead@example.test"]]


# The sweep: breaches


@pytest.mark.django_db
def test_sweep_breach_escalates_once(
    team, agent, lead, mailoutbox, django_capture_on_commit_callbacks
):
    case = _open_case(team, assignee=agent, first_response_warned_at=MONDAY)
    due = _utc(2025, 3, 3, 17)

    first = _sweep(django_capture_on_commit_callbacks, due)
    second = _sweep(django_capture_on_commit_callbacks, _utc(2025, 3, 3, 17, 1))

    assert first == SweepResult(breached=1)
    assert second == SweepResult()
    case.refresh_from_db()
    assert case.first_response_breached_at == due
    assert case.is_breached
    assert case.priority == Priority.HIGH
    breach = case.events.get(kind=CaseEvent.Kind.SLA_BREACH)
    assert breach.changes == {"target": "first_response", "due_at": due.isoformat()}
    priority = case.events.get(kind=CaseEvent.Kind.PRIORITY_CHANGED)
    assert priority.changes == {"priority": [Priority.NORMAL, Priority.HIGH]}
    assert len(mailoutbox) == 1
    assert mailoutbox[0].to == ["lead@example.test"]


@pytest.mark.django_db
def test_sweep_breach_email_names_case_not_customer_text(
    team, lead, mailoutbox, django_capture_on_commit_callbacks
):
    case = _open_case(team, first_response_warned_at=MONDAY)

    _sweep(django_capture_on_commit_callbacks, _utc(2025, 3, 3, 17))

    message = mailoutbox[0]
    assert message.subject == f"SLA breach: case #{case.pk}"
    assert "first response target" in message.body
    assert "team IT" in message.body
    assert "2025-03-03 17:00 UTC" in message.body
    assert "Normal -> High" in message.body
    assert SECRET_COMMENT not in message.body
    assert case.customer.email not in message.body


@pytest.mark.django_db
def test_sweep_breach_keeps_urgent_priority(
    team, lead, django_capture_on_commit_callbacks
):
    case = _open_case(team, priority=Priority.URGENT)

    _sweep(django_capture_on_commit_callbacks, _utc(2025, 3, 3, 10))

    case.refresh_from_db()
    assert case.priority == Priority.URGENT
    assert case.first_response_breached_at == _utc(2025, 3, 3, 10)
    assert not case.events.filter(kind=CaseEvent.Kind.PRIORITY_CHANGED).exists()


@pytest.mark.django_db
def test_sweep_breach_without_lead_emails_admins(
    team, mailoutbox, django_capture_on_commit_callbacks
):
    UserFactory(
        username="root", email="root@example.test", is_staff=True, is_superuser=True
    )
    UserFactory(username="staff", email="staff@example.test", is_staff=True)
    _open_case(team, first_response_warned_at=MONDAY)

    _sweep(django_capture_on_commit_callbacks, _utc(2025, 3, 3, 17))

    assert [message.to for message in mailoutbox] == [["root@example.test"]]


@pytest.mark.django_db
def test_sweep_breaches_both_targets_separately(
    team, lead, django_capture_on_commit_callbacks
):
    case = _open_case(team)

    result = _sweep(django_capture_on_commit_callbacks, _utc(2025, 3, 7, 17))

    assert result == SweepResult(breached=2)
    case.refresh_from_db()
    assert case.resolution_breached_at == _utc(2025, 3, 7, 17)
    assert case.priority == Priority.URGENT


@pytest.mark.django_db
def test_sweep_skips_first_response_given(
    team, lead, django_capture_on_commit_callbacks
):
    case = _open_case(team, first_response_at=_utc(2025, 3, 3, 10))

    result = _sweep(django_capture_on_commit_callbacks, _utc(2025, 3, 4, 9))

    assert result == SweepResult()
    case.refresh_from_db()
    assert case.first_response_breached_at is None


@pytest.mark.django_db
def test_sweep_paused_case_does_not_breach_resolution(
    team, lead, django_capture_on_commit_callbacks
):
    case = _open_case(
        team,
        first_response_at=_utc(2025, 3, 3, 10),
        state=Case.State.WAITING,
        sla_paused_at=_utc(2025, 3, 5, 9),
    )

    result = _sweep(django_capture_on_commit_callbacks, _utc(2025, 3, 10, 9))

    assert result == SweepResult()
    case.refresh_from_db()
    assert case.resolution_breached_at is None
    assert not case.is_breached


@pytest.mark.django_db
def test_sweep_resolved_case_does_not_breach(
    team, lead, django_capture_on_commit_callbacks
):
    case = _open_case(
        team,
        state=Case.State.RESOLVED,
        is_open=False,
        resolved_at=_utc(2025, 3, 3, 12),
    )

    result = _sweep(django_capture_on_commit_callbacks, _utc(2025, 3, 10, 9))

    assert result == SweepResult()
    case.refresh_from_db()
    assert not case.is_breached


@pytest.mark.django_db
def test_sweep_pages_through_batches(team, lead, django_capture_on_commit_callbacks):
    cases = [_open_case(team) for _ in range(7)]

    result = _sweep(
        django_capture_on_commit_callbacks, _utc(2025, 3, 3, 17), batch_size=3
    )

    assert result == SweepResult(breached=7)
    breached = Case.objects.filter(first_response_breached_at__isnull=False).count()
    assert breached == len(cases)


@pytest.mark.django_db
def test_sweep_groups_breaches_per_lead(
    team, lead, mailoutbox, django_capture_on_commit_callbacks
):
    cases = [_open_case(team, first_response_warned_at=MONDAY) for _ in range(3)]

    _sweep(django_capture_on_commit_callbacks, _utc(2025, 3, 3, 17))

    assert len(mailoutbox) == 1
    assert mailoutbox[0].subject == "SLA breach: 3 cases"
    for case in cases:
        assert f"Case #{case.pk} of team IT" in mailoutbox[0].body


@pytest.mark.django_db
def test_sweep_query_count_flat(team, lead, agent, django_capture_on_commit_callbacks):
    for _ in range(3):
        _open_case(team, opened_at=_utc(2025, 3, 3, 9), assignee=agent)
    with CaptureQueriesContext(connection) as small:
        _sweep(django_capture_on_commit_callbacks, _utc(2025, 3, 3, 17))
    for _ in range(30):
        _open_case(team, opened_at=_utc(2025, 3, 4, 9), assignee=agent)

    with CaptureQueriesContext(connection) as large:
        _sweep(django_capture_on_commit_callbacks, _utc(2025, 3, 4, 17))

    assert len(large) == len(small)


# Overlapping sweeps on PostgreSQL


@pytest.mark.django_db(transaction=True)
def test_overlapping_sweeps_escalate_once(teams, mailoutbox):
    if connection.vendor != "postgresql":
        if REQUIRE_SERVICES:
            pytest.fail(
                "OSCM_REQUIRE_SERVICES=1 but the tests do not run on PostgreSQL"
            )
        pytest.skip("row locking races need PostgreSQL; SQLite writes one at a time")
    team = teams["IT"]
    lead = UserFactory(username="lead_race", email="lead@example.test")
    TeamMemberFactory(team=team, user=lead, role=TeamMember.Role.LEAD)
    for _ in range(120):
        _open_case(team, first_response_warned_at=MONDAY)
    now = _utc(2025, 3, 3, 17)

    results = _sweep_in_threads(now=now, threads=3, batch_size=10)

    assert sum(result.breached for result in results) == 120
    assert Case.objects.filter(first_response_breached_at=now).count() == 120
    breaches = CaseEvent.objects.filter(kind=CaseEvent.Kind.SLA_BREACH).count()
    assert breaches == 120
    raised = CaseEvent.objects.filter(kind=CaseEvent.Kind.PRIORITY_CHANGED).count()
    assert raised == 120
    assert set(Case.objects.values_list("priority", flat=True)) == {Priority.HIGH}
    mentions = [line for message in mailoutbox for line in message.body.splitlines()]
    mentioned = [line.split()[1] for line in mentions if line.startswith("Case #")]
    assert sorted(mentioned) == sorted(
        f"#{pk}" for pk in Case.objects.values_list("pk", flat=True)
    )
    assert case_sla_sweep(now=now) == SweepResult()


def _sweep_in_threads(
    *, now: datetime, threads: int, batch_size: int
) -> list[SweepResult]:
    results: list[SweepResult | BaseException | None] = [None] * threads
    barrier = threading.Barrier(threads)

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = case_sla_sweep(now=now, batch_size=batch_size)
        except BaseException as error:  # re-raised in the test thread below
            results[index] = error
        finally:
            connection.close()

    workers = [threading.Thread(target=run, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results



def test_sweep_breach_emits_escalated_webhook_once(
    team, agent, lead, django_capture_on_commit_callbacks
):
    from cases.models import OutboxMessage, WebhookEndpoint

    WebhookEndpoint.objects.create(
        name="tracker", url="http://127.0.0.1:9/hook", secret="s", events=["case.escalated"]
    )
    case = _open_case(team, assignee=agent, first_response_warned_at=MONDAY)

    _sweep(django_capture_on_commit_callbacks, _utc(2025, 3, 3, 17))
    _sweep(django_capture_on_commit_callbacks, _utc(2025, 3, 3, 17, 1))

    messages = OutboxMessage.objects.filter(channel=OutboxMessage.Channel.WEBHOOK)
    assert messages.count() == 1
    body = messages.get().payload["body"]
    assert body["event"] == "case.escalated"
    assert body["data"]["id"] == case.pk
    assert body["data"]["sla_target"] == "first_response"
    assert body["data"]["priority"] == Priority.HIGH
    assert body["data"]["is_breached"] is True


@pytest.mark.django_db
def test_apply_batch_keeps_each_opening_time(team):
    early = _open_case(team, opened_at=MONDAY)
    late = _open_case(team, opened_at=_utc(2025, 3, 3, 10))

    case_sla_apply(cases=[early, late], now=MONDAY)

    # 480 business minutes of 09:00-17:00 days: the same day's close, or
    # the next day at the opening hour.
    assert early.first_response_due_at == _utc(2025, 3, 3, 17)
    assert late.first_response_due_at == _utc(2025, 3, 4, 10)


@pytest.mark.django_db
def test_sweep_breach_events_fill_defaults(
    team, lead, django_capture_on_commit_callbacks
):
    # On PostgreSQL the events go through COPY, which skips the ORM, so the
    # columns the sweep leaves out must still get the model's defaults.
    case = _open_case(team, first_response_warned_at=MONDAY)
    now = _utc(2025, 3, 3, 17)

    _sweep(django_capture_on_commit_callbacks, now)

    breach = case.events.get(kind=CaseEvent.Kind.SLA_BREACH)
    raised = case.events.get(kind=CaseEvent.Kind.PRIORITY_CHANGED)
    for event in (breach, raised):
        assert event.actor_id is None
        assert event.visibility == ""
        assert event.channel == ""
        assert event.outcome == ""
        assert event.created_at == now
    assert breach.body == ""
    assert raised.body == "Raised after the first response SLA breach."


@pytest.mark.django_db
def test_sweep_warning_event_fills_defaults(
    team, agent, django_capture_on_commit_callbacks
):
    case = _open_case(team, assignee=agent)
    now = _utc(2025, 3, 3, 15)

    _sweep(django_capture_on_commit_callbacks, now)

    event = case.events.get(kind=CaseEvent.Kind.SLA_WARNING)
    assert event.actor_id is None
    assert event.body == ""
    assert event.visibility == ""
    assert event.created_at == now


@pytest.mark.django_db
def test_sweep_escalated_webhook_payload_fields(
    team, agent, lead, django_capture_on_commit_callbacks
):
    import json

    from django.core.serializers.json import DjangoJSONEncoder

    from cases.models import OutboxMessage, WebhookEndpoint
    from cases.webhooks import case_webhook_payload

    WebhookEndpoint.objects.create(
        name="tracker", url="http://127.0.0.1:9/hook", secret="s", events=[]
    )
    case = _open_case(team, assignee=agent, first_response_warned_at=MONDAY)
    # The payload describes the case after the breach: the sweep's reading
    # with the raised priority, the breach flag and the breached target.
    payload = {
        **case_webhook_payload(case),
        "priority": Priority.HIGH,
        "is_breached": True,
        "sla_target": "first_response",
    }
    expected = json.loads(json.dumps(payload, cls=DjangoJSONEncoder))

    _sweep(django_capture_on_commit_callbacks, _utc(2025, 3, 3, 17))

    message = OutboxMessage.objects.get(channel=OutboxMessage.Channel.WEBHOOK)
    assert message.payload["body"]["data"] == expected


@pytest.mark.django_db
def test_sweep_pages_through_equal_due_times(
    team, lead, agent, django_capture_on_commit_callbacks
):
    # Seven cases share one due time, so every page boundary falls inside it
    # and paging must go on by id.
    cases = [_open_case(team, assignee=agent) for _ in range(7)]

    result = _sweep(
        django_capture_on_commit_callbacks, _utc(2025, 3, 3, 15), batch_size=2
    )

    assert result == SweepResult(warned=7)
    warned = Case.objects.filter(first_response_warned_at__isnull=False)
    assert warned.count() == len(cases)
    events = CaseEvent.objects.filter(kind=CaseEvent.Kind.SLA_WARNING)
    assert sorted(events.values_list("case_id", flat=True)) == sorted(
        case.pk for case in cases
    )
