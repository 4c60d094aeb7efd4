"""Assignment of queued cases once an agent has a free slot again:
``case_assign_waiting``, its task, its place in the beat schedule and the
workflow hooks that queue it."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from cases import workflow
from cases.management.commands.run_scheduler import periodic_tasks_from_schedule
from cases.models import Case, CaseEvent, Priority, Team, TeamMember
from cases.services import (
    CaseAssignWaitingResult,
    case_assign_waiting,
    feedback_evaluate,
)
from cases.tasks import case_assign_waiting_task
from tests.threads import run_at_once

from .factories import (
    CaseFactory,
    CustomerFactory,
    FeedbackFactory,
    RootCauseFactory,
    TeamFactory,
    TeamMemberFactory,
    UserFactory,
)
from .test_concurrency import _wait_for_lock_wait

State = Case.State

# With OSCM_REQUIRE_SERVICES=1, tests/conftest.py fails the session on SQLite.
postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="row locking races need PostgreSQL; SQLite writes one at a time",
)


@pytest.fixture
def team(db) -> Team:
    return TeamFactory(name="Support")


def agent(team: Team, username: str, **fields) -> TeamMember:
    return TeamMemberFactory(team=team, user=UserFactory(username=username), **fields)


def lead(team: Team, username: str) -> TeamMember:
    return agent(team, username, role=TeamMember.Role.LEAD)


def queued(team: Team, **fields) -> Case:
    """A case of ``team`` that is new and has no agent, as one that found no
    free slot when it opened."""
    fields.setdefault(
        "assignment_reason",
        f"no available agent in {team.name}: 0 away, 0 inactive, 1 at capacity",
    )
    return CaseFactory(team=team, **fields)


def working(member: TeamMember, **fields) -> Case:
    """An open case assigned to the member, which takes one of its slots."""
    return CaseFactory(
        team=member.team, assignee=member.user, state=State.IN_PROGRESS, **fields
    )


def assign_waiting(**options) -> CaseAssignWaitingResult:
    return case_assign_waiting(now=timezone.now(), **options)


def assignee_name(case: Case) -> str | None:
    case.refresh_from_db()
    return case.assignee.username if case.assignee else None


def sweeps_queued(callbacks) -> list:
    """The on-commit callbacks that queue ``case_assign_waiting_task``."""
    return [
        callback
        for callback in callbacks
        if callback.func == case_assign_waiting_task.delay
    ]


def resolve(case: Case, actor) -> None:
    workflow.case_transition(
        case=case,
        actor=actor,
        to_state=State.RESOLVED,
        root_cause=RootCauseFactory(name="Courier delay"),
        resolution_note="Refunded the shipping fee.",
    )


# The queue drains when room appears


@pytest.mark.django_db
def test_queued_case_assigned_after_close(
    teams, topics, django_capture_on_commit_callbacks
):
    service = teams["Customer Service"]
    ana = agent(service, "ana", max_open_cases=1)
    busy = working(ana)
    feedback = FeedbackFactory(score=1, primary_topic=topics["delivery"])
    feedback_evaluate(feedback_ids=[feedback.pk])
    waiting = Case.objects.get(trigger_feedback=feedback)
    assert waiting.assignee is None

    with django_capture_on_commit_callbacks(execute=True):
        resolve(busy, ana.user)

    waiting.refresh_from_db()
    assert waiting.assignee == ana.user
    assert waiting.state == State.ASSIGNED
    assert waiting.assignment_reason == (
        "round-robin in Customer Service: ana was the least recently assigned "
        "available agent (0 of 1 open cases)"
    )


@pytest.mark.django_db
def test_close_queues_task_with_agent_teams(team, django_capture_on_commit_callbacks):
    other = TeamFactory(name="Billing")
    ana = agent(team, "ana")
    agent(other, "ana")
    lead(TeamFactory(name="Escalations"), "ana")

    with django_capture_on_commit_callbacks() as callbacks:
        resolve(working(ana), ana.user)

    (sweep,) = sweeps_queued(callbacks)
    assert sweep.args == (sorted([team.pk, other.pk]),)


@pytest.mark.django_db
def test_close_by_lead_queues_nothing(team, django_capture_on_commit_callbacks):
    boss = lead(team, "boss")

    with django_capture_on_commit_callbacks() as callbacks:
        resolve(working(boss), boss.user)

    assert sweeps_queued(callbacks) == []


@pytest.mark.django_db
def test_merge_frees_slot_for_queue(team, django_capture_on_commit_callbacks):
    ana = agent(team, "ana", max_open_cases=1)
    boss = lead(team, "boss")
    customer = CustomerFactory()
    now = timezone.now()
    source = working(ana, trigger_feedback=FeedbackFactory(customer=customer, score=1))
    target = queued(
        team,
        trigger_feedback=FeedbackFactory(customer=customer, score=2),
        opened_at=now - timedelta(hours=2),
    )
    newer = queued(team, opened_at=now - timedelta(hours=1))

    with django_capture_on_commit_callbacks(execute=True):
        workflow.case_merge(case=source, actor=boss.user, into=target)

    assert assignee_name(target) == "ana"
    assert assignee_name(newer) is None


# Who gets the cases


@pytest.mark.django_db
def test_away_and_inactive_agents_get_nothing(team):
    agent(team, "ana", is_away=True)
    TeamMemberFactory(team=team, user=UserFactory(username="ben", is_active=False))
    case = queued(team)

    result = assign_waiting()

    assert result == CaseAssignWaitingResult()
    assert assignee_name(case) is None
    assert case.state == State.NEW
    assert case.assignment_reason.startswith("no available agent in Support")


@pytest.mark.django_db
def test_full_agent_gets_nothing(team):
    ana = agent(team, "ana", max_open_cases=1)
    working(ana)
    case = queued(team)

    assert assign_waiting().assigned == 0
    assert assignee_name(case) is None


@pytest.mark.django_db
def test_workload_in_other_team_counts(team):
    agent(team, "ana", max_open_cases=1)
    working(agent(TeamFactory(name="Billing"), "ana"))
    case = queued(team)

    assign_waiting()

    assert assignee_name(case) is None


@pytest.mark.django_db
def test_capacity_strategy_picks_most_spare(team):
    team.assignment_strategy = Team.AssignmentStrategy.CAPACITY
    team.save()
    ana = agent(team, "ana", max_open_cases=3)
    ben = agent(team, "ben", max_open_cases=5)
    for _ in range(2):
        working(ana)
    working(ben)
    case = queued(team)

    assign_waiting()

    case.refresh_from_db()
    assert case.assignee == ben.user
    assert case.assignment_reason == (
        "most spare capacity in Support: ben had 4 of 5 slots free"
    )


@pytest.mark.django_db
def test_round_robin_continues_rotation(team):
    now = timezone.now()
    agent(team, "ana", last_assigned_at=now - timedelta(minutes=5))
    agent(team, "ben", last_assigned_at=now - timedelta(minutes=10))
    first = queued(team, opened_at=now - timedelta(hours=3))
    second = queued(team, opened_at=now - timedelta(hours=2))
    third = queued(team, opened_at=now - timedelta(hours=1))

    assign_waiting()

    names = [assignee_name(case) for case in (first, second, third)]
    assert names == ["ben", "ana", "ben"]


@pytest.mark.django_db
def test_slots_fill_by_priority_then_age(team):
    ana = agent(team, "ana", max_open_cases=3)
    working(ana)
    now = timezone.now()
    hour = timedelta(hours=1)
    old_low = queued(team, priority=Priority.LOW, opened_at=now - 72 * hour)
    new_urgent = queued(team, priority=Priority.URGENT, opened_at=now - hour)
    old_urgent = queued(team, priority=Priority.URGENT, opened_at=now - 5 * hour)
    old_normal = queued(team, priority=Priority.NORMAL, opened_at=now - 48 * hour)

    result = assign_waiting()

    assert result == CaseAssignWaitingResult(teams=1, locked=2, assigned=2)
    assert assignee_name(old_urgent) == "ana"
    assert assignee_name(new_urgent) == "ana"
    assert assignee_name(old_normal) is None
    assert assignee_name(old_low) is None


@pytest.mark.django_db
def test_limit_bounds_one_run(team):
    agent(team, "ana")
    now = timezone.now()
    cases = [queued(team, opened_at=now - timedelta(hours=age)) for age in (1, 2, 3)]

    result = assign_waiting(limit=2)

    assert result.assigned == 2
    assert [assignee_name(case) for case in cases] == [None, "ana", "ana"]


@pytest.mark.django_db
def test_team_ids_restrict_sweep(team):
    agent(team, "ana")
    billing = TeamFactory(name="Billing")
    agent(billing, "ben")
    support_case = queued(team)
    billing_case = queued(billing)

    assign_waiting(team_ids=[billing.pk])

    assert assignee_name(support_case) is None
    assert assignee_name(billing_case) == "ben"


@pytest.mark.django_db
def test_rerun_assigns_nothing_twice(team):
    ana = agent(team, "ana", max_open_cases=2)
    cases = [queued(team) for _ in range(3)]

    first = assign_waiting()
    second = assign_waiting()

    assert first.assigned == 2
    assert second == CaseAssignWaitingResult()
    assert Case.objects.filter(assignee=ana.user).count() == 2
    assert CaseEvent.objects.filter(kind=CaseEvent.Kind.ASSIGNED).count() == 2
    assert sum(assignee_name(case) is None for case in cases) == 1


# Cases the sweep leaves alone


@pytest.mark.django_db
def test_cases_not_queued_left_alone(team):
    agent(team, "ana")
    now = timezone.now()
    closed = queued(team, state=State.CLOSED, is_open=False, closed_at=now)
    resolved = queued(team, state=State.RESOLVED, is_open=False, resolved_at=now)
    target = queued(team, assignee=UserFactory(username="cho"), state=State.ASSIGNED)
    merged = queued(
        team, state=State.CLOSED, is_open=False, closed_at=now, merged_into=target
    )

    result = assign_waiting()

    assert result.assigned == 0
    for case in (closed, resolved, merged):
        assert assignee_name(case) is None
    assert assignee_name(target) == "cho"


@pytest.mark.django_db
def test_case_awaiting_triage_left_alone(team):
    agent(team, "ana")
    unanalysed = FeedbackFactory(score=1, analyzed_at=None)
    awaiting = queued(team, trigger_feedback=unanalysed, topic=None)

    assign_waiting()

    assert assignee_name(awaiting) is None


@pytest.mark.django_db
def test_case_awaiting_other_feedback_left_alone(team):
    from cases.triage import AWAITING_FEEDBACK

    agent(team, "ana")
    case = queued(team)
    Case.objects.filter(pk=case.pk).update(assignment_reason=AWAITING_FEEDBACK)

    assign_waiting()

    assert assignee_name(case) is None


@pytest.mark.django_db
def test_case_analysed_without_topic_assigned(team):
    agent(team, "ana")
    case = queued(team, topic=None)

    assign_waiting()

    assert case.trigger_feedback.analyzed_at is not None
    assert assignee_name(case) == "ana"


@pytest.mark.django_db
def test_case_unassigned_by_lead_left_alone(team):
    ana = agent(team, "ana")
    boss = lead(team, "boss")
    case = working(ana)
    workflow.case_assign_to(case=case, actor=boss.user, assignee=None)

    assign_waiting()

    assert assignee_name(case) is None


@pytest.mark.django_db
def test_moved_case_assigned_in_new_team(team):
    billing = TeamFactory(name="Billing")
    ana = agent(team, "ana")
    agent(billing, "ben")
    boss = lead(team, "boss")
    case = working(ana)
    workflow.case_assign_to(case=case, actor=boss.user, assignee=None)
    workflow.case_move_team(
        case=case, actor=boss.user, team=billing, reason="Invoice issue"
    )

    assign_waiting()

    assert assignee_name(case) == "ben"


# Timeline


@pytest.mark.django_db
def test_assignment_records_event(team):
    ana = agent(team, "ana")
    case = queued(team)

    assign_waiting()

    case.refresh_from_db()
    event = CaseEvent.objects.get(case=case, kind=CaseEvent.Kind.ASSIGNED)
    assert event.actor is None
    assert event.changes == {
        "assignee": [None, ana.user.pk],
        "state": [State.NEW, State.ASSIGNED],
    }
    assert event.body == case.assignment_reason


@pytest.mark.django_db
def test_assignment_stamps_agent_and_case(team):
    ana = agent(team, "ana")
    case = queued(team, updated_at=timezone.now() - timedelta(days=1))
    now = timezone.now()

    case_assign_waiting(now=now)

    ana.refresh_from_db()
    case.refresh_from_db()
    assert ana.last_assigned_at == now
    assert case.updated_at == now


# Schedule


def test_beat_schedule_runs_sweep_every_minute(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["case-assign-waiting"]

    assert entry["task"] == "cases.tasks.case_assign_waiting_task"
    assert entry["schedule"] == 60
    assert entry["options"]["expires"] < 60


@pytest.mark.django_db
def test_run_scheduler_runs_sweep(settings, team):
    agent(team, "ana")
    case = queued(team)
    (task,) = [
        task
        for task in periodic_tasks_from_schedule(settings.CELERY_BEAT_SCHEDULE)
        if task.entry == "case-assign-waiting"
    ]

    task.function(*task.args, **task.kwargs)

    assert task.interval_seconds == 60
    assert assignee_name(case) == "ana"


# Races, each thread on its own connection


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_sweeps_at_once_fill_each_slot_once():
    team = TeamFactory(name="Support")
    members = [agent(team, name, max_open_cases=3) for name in ("ana", "ben")]
    cases = [queued(team) for _ in range(10)]

    results = run_at_once(lambda _: assign_waiting(), range(4))

    assert sum(result.assigned for result in results) == 6
    for member in members:
        assert Case.objects.filter(assignee=member.user, is_open=True).count() == 3
    assert CaseEvent.objects.filter(kind=CaseEvent.Kind.ASSIGNED).count() == 6
    unassigned = Case.objects.filter(pk__in=[case.pk for case in cases], assignee=None)
    assert unassigned.count() == 4


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_sweep_while_agent_closes_case():
    team = TeamFactory(name="Support")
    ana = agent(team, "ana", max_open_cases=2)
    busy = working(ana)
    working(ana)
    waiting = [queued(team) for _ in range(3)]

    def close_or_sweep(step: str) -> None:
        # Closing queues the sweep on commit, which runs in-process here.
        if step == "close":
            resolve(busy, ana.user)
        else:
            assign_waiting()

    run_at_once(close_or_sweep, ["close", "sweep", "sweep"])

    assert Case.objects.filter(assignee=ana.user, is_open=True).count() == 2
    assert [assignee_name(case) for case in waiting].count("ana") == 1
    assert CaseEvent.objects.filter(kind=CaseEvent.Kind.ASSIGNED).count() == 1


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_sweep_waits_for_intake_assignment(topics):
    """A sweep that starts while an evaluation has assigned a new case and
    not committed waits on the team row, then counts that case."""
    service = Team.objects.get(name="Customer Service")
    ana = agent(service, "ana", max_open_cases=2)
    working(ana)
    waiting = queued(service)
    feedback = FeedbackFactory(score=1, primary_topic=topics["delivery"])
    assigned = threading.Event()
    release = threading.Event()

    def evaluate_or_sweep(step: str) -> None:
        if step == "sweep":
            assigned.wait(timeout=30)
            assign_waiting()
            return
        with transaction.atomic():
            feedback_evaluate(feedback_ids=[feedback.pk])
            assigned.set()
            release.wait(timeout=30)

    errors: list[BaseException] = []

    def run_both() -> None:
        try:
            run_at_once(evaluate_or_sweep, ["evaluate", "sweep"])
        except BaseException as error:  # re-raised in the test thread below
            errors.append(error)

    runner = threading.Thread(target=run_both)
    runner.start()
    assigned.wait(timeout=30)
    _wait_for_lock_wait()
    release.set()
    runner.join(timeout=60)

    assert errors == []
    assert Case.objects.get(trigger_feedback=feedback).assignee == ana.user
    assert assignee_name(waiting) is None
    assert Case.objects.filter(assignee=ana.user, is_open=True).count() == 2
