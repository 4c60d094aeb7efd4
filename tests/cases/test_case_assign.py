import random
from datetime import datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from cases.models import Case, Team, TeamMember
from cases.services import _AgentPool, feedback_evaluate

from .factories import CustomerFactory, FeedbackFactory, TeamMemberFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def service_team(teams) -> Team:
    """Customer Service, which receives the delivery cases these tests open."""
    return teams["Customer Service"]


def open_cases(count: int, topics) -> list[Case]:
    """Open ``count`` delivery cases in one batch, in feedback order."""
    rows = [
        FeedbackFactory(
            score=1, primary_topic=topics["delivery"], customer=CustomerFactory()
        )
        for _ in range(count)
    ]
    feedback_evaluate(feedback_ids=[row.pk for row in rows])
    return list(
        Case.objects.filter(trigger_feedback__in=rows)
        .select_related("assignee")
        .order_by("trigger_feedback_id")
    )


def assignees(cases: list[Case]) -> list[str | None]:
    return [case.assignee.username if case.assignee else None for case in cases]


def agent(team: Team, username: str, **fields) -> TeamMember:
    return TeamMemberFactory(team=team, user=UserFactory(username=username), **fields)


def test_round_robin_least_recent_first(service_team, topics):
    now = timezone.now()
    agent(service_team, "ana", last_assigned_at=now - timedelta(hours=1))
    agent(service_team, "ben", last_assigned_at=now - timedelta(hours=2))
    agent(service_team, "cho", last_assigned_at=None)

    cases = open_cases(4, topics)

    assert assignees(cases) == ["cho", "ben", "ana", "cho"]
    assert {case.state for case in cases} == {Case.State.ASSIGNED}
    assert cases[0].assignment_reason == (
        "round-robin in Customer Service: cho was the least recently assigned "
        "available agent (0 of 25 open cases)"
    )


def test_round_robin_continues_next_batch(service_team, topics):
    agent(service_team, "ana")
    agent(service_team, "ben")
    agent(service_team, "cho")

    first = open_cases(2, topics)
    second = open_cases(2, topics)

    assert assignees(first) == ["ana", "ben"]
    assert assignees(second) == ["cho", "ana"]


def test_round_robin_skips_full_agent(service_team, topics):
    agent(service_team, "ana", max_open_cases=1)
    agent(service_team, "ben", max_open_cases=5)

    cases = open_cases(3, topics)

    assert assignees(cases) == ["ana", "ben", "ben"]


def test_capacity_most_spare_first(service_team, topics):
    service_team.assignment_strategy = Team.AssignmentStrategy.CAPACITY
    service_team.save()
    agent(service_team, "ana", max_open_cases=3)
    agent(service_team, "ben", max_open_cases=5)
    busy = agent(service_team, "cho", max_open_cases=10)
    for _ in range(6):
        open_case_for(busy.user, service_team)

    cases = open_cases(4, topics)

    # Spare slots start at ana 3, ben 5, cho 4. After ben, ben and cho tie at
    # 4 and cho was assigned less recently. Then ben leads with 4, and last
    # all tie at 3, so ana, never assigned, wins.
    assert assignees(cases) == ["ben", "cho", "ben", "ana"]
    assert cases[0].assignment_reason == (
        "most spare capacity in Customer Service: ben had 5 of 5 slots free"
    )


def test_capacity_counts_open_cases_only(service_team, topics):
    service_team.assignment_strategy = Team.AssignmentStrategy.CAPACITY
    service_team.save()
    ana = agent(service_team, "ana", max_open_cases=1)
    closed = open_case_for(ana.user, service_team)
    closed.is_open = False
    closed.state = Case.State.CLOSED
    closed.save()

    cases = open_cases(1, topics)

    assert assignees(cases) == ["ana"]


def test_away_and_inactive_agents_skipped(service_team, topics):
    agent(service_team, "ana", is_away=True)
    TeamMemberFactory(
        team=service_team, user=UserFactory(username="ben", is_active=False)
    )
    agent(service_team, "cho")

    cases = open_cases(2, topics)

    assert assignees(cases) == ["cho", "cho"]


def test_lead_gets_no_cases(service_team, topics):
    agent(service_team, "lee", role=TeamMember.Role.LEAD)

    cases = open_cases(1, topics)

    assert assignees(cases) == [None]


def test_nobody_available_leaves_case_new(service_team, topics):
    agent(service_team, "ana", is_away=True)
    TeamMemberFactory(
        team=service_team, user=UserFactory(username="ben", is_active=False)
    )
    full = agent(service_team, "cho", max_open_cases=1)
    open_case_for(full.user, service_team)

    cases = open_cases(1, topics)

    assert assignees(cases) == [None]
    assert cases[0].state == Case.State.NEW
    assert cases[0].assignment_reason == (
        "no available agent in Customer Service: 1 away, 1 inactive, 1 at capacity"
    )


def test_team_without_agents_leaves_case_new(topics):
    cases = open_cases(1, topics)

    assert cases[0].state == Case.State.NEW
    assert cases[0].assignment_reason == (
        "no available agent in Customer Service: the team has no agents"
    )


def test_agent_workload_spans_teams(service_team, teams, topics):
    ana = agent(service_team, "ana", max_open_cases=1)
    open_case_for(ana.user, teams["Product"])

    cases = open_cases(1, topics)

    assert assignees(cases) == [None]


def open_case_for(user, team: Team) -> Case:
    """An open case already assigned to ``user``, outside any evaluation."""
    feedback = FeedbackFactory(score=1)
    return Case.objects.create(
        customer=feedback.customer,
        trigger_feedback=feedback,
        team=team,
        assignee=user,
        state=Case.State.ASSIGNED,
        dedup_key=f"f{feedback.pk}",
        rule_reason="set up by the test",
        routing_reason="set up by the test",
    )


def _reference_picks(members: list[TeamMember], *, by_capacity: bool, cases: int):
    """Return the user ids a list-based pool assigns: every case scans the
    agents with a spare slot, in rotation order, and the pick moves to the
    back. Capacity picks the first of those with the most spare slots."""
    available = sorted(
        (member for member in members if not member.is_away and member.user.is_active),
        key=lambda member: (
            member.last_assigned_at is not None,
            member.last_assigned_at or datetime.min,
            member.pk,
        ),
    )
    spare = {
        member.pk: max(member.max_open_cases - member.open_case_count, 0)
        for member in available
    }
    picks = []
    for _ in range(cases):
        candidates = [member for member in available if spare[member.pk] > 0]
        if not candidates:
            picks.append(None)
            continue
        if by_capacity:
            member = max(candidates, key=lambda candidate: spare[candidate.pk])
        else:
            member = candidates[0]
        spare[member.pk] -= 1
        available.remove(member)
        available.append(member)
        picks.append(member.user.pk)
    return picks


def _random_members(generator: random.Random) -> list[TeamMember]:
    """Unsaved agents with random workload, state and ties in last_assigned_at."""
    now = timezone.now()
    members = []
    for number in range(generator.randint(0, 6)):
        member = TeamMember(
            pk=number + 1,
            user=get_user_model()(
                pk=number + 101,
                username=f"agent-{number}",
                is_active=generator.random() > 0.1,
            ),
            is_away=generator.random() < 0.1,
            max_open_cases=generator.randint(0, 6),
            last_assigned_at=generator.choice(
                [None, now, now - timedelta(minutes=generator.randint(1, 3))]
            ),
        )
        member.open_case_count = generator.randint(0, 4)
        members.append(member)
    return members


@pytest.mark.parametrize("strategy", Team.AssignmentStrategy.values)
def test_pool_matches_list_scan(strategy):
    """The queued pool picks the same agents as scanning the whole list."""
    generator = random.Random(7)
    for _ in range(300):
        members = _random_members(generator)
        cases = [Case() for _ in range(generator.randint(1, 25))]
        pool = _AgentPool(
            team=Team(name="Pool", assignment_strategy=strategy), members=members
        )

        for case in cases:
            pool.assign(case)

        expected = _reference_picks(
            members,
            by_capacity=strategy == Team.AssignmentStrategy.CAPACITY,
            cases=len(cases),
        )
        assert [case.assignee_id for case in cases] == expected
        assert pool.assigned == sum(pick is not None for pick in expected)
