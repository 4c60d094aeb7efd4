"""Team figures on a small fixture whose expected values are counted by hand."""

from datetime import UTC, datetime, timedelta

import pytest

from actions.selectors import team_figures
from cases.models import Case, FollowUp, RootCause

from .conftest import make_case

pytestmark = pytest.mark.django_db

DAY = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def follow_up(case: Case, *, state: str, answered: bool = False) -> FollowUp:
    return FollowUp.objects.create(
        case=case, customer=case.customer, kind="nps", state=state, due_at=DAY,
        sent_at=DAY + timedelta(days=3), answered_at=DAY + timedelta(days=4) if answered else None,
    )


@pytest.fixture
def fixture_cases(people):
    """Four cases of team A (one merged away) and one of team B.

    Team A: case 1 contacted after 2 h, resolved after 10 h, recovered;
    case 2 contacted after 50 h, resolved after 60 h, answered and still
    unhappy; case 3 never contacted, resolved after 30 h, follow-up sent and
    not answered; a fourth merged case is left out. Team B: one case
    contacted after 1 h, open.
    """
    cause = RootCause.objects.create(name="Courier")
    def case(team, *, contact_h, resolve_h, recovered=None, assignee=None):
        row = make_case(team=team, occurred_at=DAY, opened_at=DAY + timedelta(minutes=5), assignee=assignee)
        row.first_response_at = DAY + timedelta(hours=contact_h) if contact_h is not None else None
        row.resolved_at = DAY + timedelta(hours=resolve_h) if resolve_h is not None else None
        row.root_cause = cause if resolve_h is not None else None
        row.is_recovered = recovered
        if recovered is not None:
            row.recovery_score_after = 9 if recovered else 3
        row.save()
        return row

    first = case(people.team_a, contact_h=2, resolve_h=10, recovered=True, assignee=people.agent_a)
    second = case(people.team_a, contact_h=50, resolve_h=60, recovered=False, assignee=people.agent_a)
    third = case(people.team_a, contact_h=None, resolve_h=30)
    merged = case(people.team_a, contact_h=1, resolve_h=1, recovered=True)
    Case.objects.filter(pk=merged.pk).update(merged_into=first)
    case(people.team_b, contact_h=1, resolve_h=None)
    follow_up(first, state=FollowUp.State.ANSWERED, answered=True)
    follow_up(second, state=FollowUp.State.ANSWERED, answered=True)
    follow_up(third, state=FollowUp.State.EXPIRED)
    return first, second, third


def figures(by: str):
    return team_figures(
        cases=Case.objects.all(), since=DAY - timedelta(days=1), until=DAY + timedelta(days=10), by=by
    )


def test_team_figures_per_team(fixture_cases):
    result = figures("team")
    team_a, team_b = result["groups"]
    assert team_a["label"] == "Team A"
    assert team_a["loop_closure"] == {"contacted_within_48h": 1, "opened": 3, "rate": 33.3}
    assert team_a["recovery"] == {
        "recovered": 1, "answered": 2, "non_responders": 1, "resolved": 3, "rate": 50.0,
    }
    assert team_a["follow_up_response"] == {"answered": 2, "sent": 3, "rate": 66.7}
    assert team_a["median_hours_to_first_contact"] == 26.0
    assert team_a["median_hours_to_resolution"] == 30.0
    assert team_b["loop_closure"]["rate"] == 100.0
    assert team_b["recovery"]["rate"] is None


def test_team_figures_total(fixture_cases):
    total = figures("team")["total"]
    assert total["loop_closure"]["opened"] == 4
    assert total["loop_closure"]["contacted_within_48h"] == 2
    assert total["median_hours_to_first_contact"] == 2.0


def test_team_figures_per_agent(fixture_cases, people):
    groups = {row["label"]: row for row in figures("agent")["groups"]}
    assert groups["agent_a"]["loop_closure"]["opened"] == 2
    assert groups[None]["loop_closure"]["opened"] == 2


def test_team_figures_per_source_and_root_cause(fixture_cases):
    (survey,) = figures("source")["groups"]
    assert survey["label"] == "survey"
    assert survey["recovery"]["answered"] == 2
    causes = {row["label"]: row for row in figures("root_cause")["groups"]}
    assert causes["Courier"]["recovery"]["resolved"] == 3


def test_team_figures_scoped_cases(fixture_cases, people):
    result = team_figures(
        cases=Case.objects.filter(team=people.team_b),
        since=DAY - timedelta(days=1), until=DAY + timedelta(days=10), by="team",
    )
    assert [row["label"] for row in result["groups"]] == ["Team B"]


def test_team_figures_invalid_group(db):
    with pytest.raises(ValueError, match="use one of"):
        team_figures(cases=Case.objects.all(), since=DAY, until=DAY, by="colour")
