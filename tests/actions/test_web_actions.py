"""Workspace pages of the actions app: the board and creating from cases."""

import pytest
from django.urls import reverse

from actions.models import Action
from actions.services import action_create
from cases.models import Case, RootCause

from .conftest import make_case

pytestmark = pytest.mark.django_db


def test_board_lists_own_team_actions(client, people):
    action_create(
        actor=people.lead_a,
        title="Fix courier",
        team=people.team_a,
        owner=people.lead_a,
    )
    action_create(
        actor=people.lead_b,
        title="Fix app login",
        team=people.team_b,
        owner=people.lead_b,
    )
    client.force_login(people.agent_a)
    response = client.get(reverse("actions_web:board"))
    assert response.status_code == 200
    assert b"Fix courier" in response.content
    assert b"Fix app login" not in response.content


def test_board_has_four_columns(client, people):
    client.force_login(people.lead_a)
    response = client.get(reverse("actions_web:board"))
    titles = [str(column["title"]) for column in response.context["columns"]]
    assert titles == ["Planned", "In progress", "Done", "Verified"]


def test_new_form_lists_selected_cases(client, people):
    first, second = make_case(team=people.team_a), make_case(team=people.team_a)
    client.force_login(people.lead_a)
    response = client.get(reverse("actions_web:new"), {"case": [first.pk, second.pk]})
    assert response.status_code == 200
    assert [case.pk for case in response.context["cases"]] == [first.pk, second.pk]


def test_lead_creates_action_from_cases(client, people):
    first, second = make_case(team=people.team_a), make_case(team=people.team_a)
    client.force_login(people.lead_a)
    response = client.post(
        reverse("actions_web:new"),
        {
            "case": [first.pk, second.pk],
            "title": "Add courier tracking",
            "owner": people.agent_a.pk,
        },
    )
    assert response.status_code == 302
    action = Action.objects.get(title="Add courier tracking")
    assert action.team == people.team_a
    assert action.owner == people.agent_a
    assert set(action.cases.values_list("pk", flat=True)) == {first.pk, second.pk}


def test_agent_creating_action_is_403(client, people):
    case = make_case(team=people.team_a)
    client.force_login(people.agent_a)
    response = client.get(reverse("actions_web:new"), {"case": [case.pk]})
    assert response.status_code == 403


def test_new_with_other_team_case_is_404(client, people):
    case = make_case(team=people.team_b)
    client.force_login(people.lead_a)
    response = client.get(reverse("actions_web:new"), {"case": [case.pk]})
    assert response.status_code == 404


@pytest.mark.parametrize("case_id", ["\u00b2", "99999999999999999999999"])
def test_new_with_invalid_case_id_shows_message(client, people, case_id):
    client.force_login(people.lead_a)
    response = client.get(reverse("actions_web:new"), {"case": [case_id]}, follow=True)
    assert response.status_code == 200
    assert "No cases selected" in str(list(response.context["messages"])[0])


def test_new_without_title_shows_errors(client, people):
    case = make_case(team=people.team_a)
    client.force_login(people.lead_a)
    response = client.post(
        reverse("actions_web:new"), {"case": [case.pk], "owner": people.lead_a.pk}
    )
    assert response.status_code == 400
    assert not Action.objects.exists()


def test_transition_moves_action(client, people):
    action = action_create(
        actor=people.lead_a,
        title="Fix courier",
        team=people.team_a,
        owner=people.lead_a,
    )
    client.force_login(people.lead_a)
    response = client.post(
        reverse("actions_web:transition", args=[action.pk]), {"to_state": "in_progress"}
    )
    assert response.status_code == 302
    action.refresh_from_db()
    assert action.state == Action.State.IN_PROGRESS


def test_transition_not_allowed_shows_message(client, people):
    action = action_create(
        actor=people.lead_a,
        title="Fix courier",
        team=people.team_a,
        owner=people.lead_a,
    )
    client.force_login(people.lead_a)
    response = client.post(
        reverse("actions_web:transition", args=[action.pk]),
        {"to_state": "verified"},
        follow=True,
    )
    assert b"cannot move from planned to verified" in response.content


def test_transition_of_other_team_is_404(client, people):
    action = action_create(
        actor=people.lead_b, title="Fix app", team=people.team_b, owner=people.lead_b
    )
    client.force_login(people.lead_a)
    response = client.post(
        reverse("actions_web:transition", args=[action.pk]), {"to_state": "in_progress"}
    )
    assert response.status_code == 404


MEASUREMENT = {
    "kind": "nps",
    "test": "two-sample z-test on the NPS difference",
    "before": {"n": 80, "score": -12.5, "margin": 18.3},
    "after": {"n": 81, "score": 40.7, "margin": 16.9},
    "difference": 53.2,
    "difference_margin": 24.9,
    "p_value": 0.00012,
    "verdict": "improved",
    "reason": "difference +53.2 with p = 0.0001 (below 0.05)",
}


def test_board_shows_measurement_numbers(client, people):
    action = action_create(
        actor=people.lead_a,
        title="Fix courier",
        team=people.team_a,
        owner=people.lead_a,
    )
    Action.objects.filter(pk=action.pk).update(
        state="verified", verdict="improved", measurement=MEASUREMENT
    )
    client.force_login(people.agent_a)

    content = client.get(reverse("actions_web:board")).content.decode()

    for text in ("80", "-12.5", "±18.3", "81", "40.7", "±16.9", "53.2", "±24.9"):
        assert text in content
    assert "0.0001" in content
    assert "two-sample z-test on the NPS difference" in content


def _action_with_cases(people, *, owner, cases) -> Action:
    return action_create(
        actor=people.lead_a,
        title="Fix courier",
        team=people.team_a,
        owner=owner,
        case_ids=[case.pk for case in cases],
    )


def _resolve_form(root_cause: RootCause) -> dict:
    return {
        "to_state": "done",
        "resolve_cases": "1",
        "root_cause": root_cause.pk,
        "resolution_note": "Switched courier.",
    }


def test_board_offers_resolve_on_done_to_leads(client, people):
    action = _action_with_cases(
        people, owner=people.agent_a, cases=[make_case(team=people.team_a)]
    )
    client.force_login(people.agent_a)
    agent_board = client.get(reverse("actions_web:board")).content
    client.force_login(people.lead_a)
    lead_board = client.get(reverse("actions_web:board")).content

    assert b'name="resolve_cases"' not in agent_board
    assert b'name="resolve_cases"' in lead_board
    assert f'action="/actions/{action.pk}/transition/"'.encode() in lead_board


def test_done_with_resolve_resolves_open_cases(client, people):
    root_cause = RootCause.objects.create(name="Courier delays", is_active=True)
    first, second = make_case(team=people.team_a), make_case(team=people.team_a)
    action = _action_with_cases(people, owner=people.lead_a, cases=[first, second])
    client.force_login(people.lead_a)

    response = client.post(
        reverse("actions_web:transition", args=[action.pk]),
        _resolve_form(root_cause),
        follow=True,
    )

    assert b"2 open cases resolved" in response.content
    action.refresh_from_db()
    assert action.state == Action.State.DONE
    for case in (first, second):
        case.refresh_from_db()
        assert case.state == Case.State.RESOLVED
        assert case.root_cause == root_cause
        assert case.resolution_note == "Switched courier."


def test_done_with_resolve_needs_root_cause(client, people):
    case = make_case(team=people.team_a)
    action = _action_with_cases(people, owner=people.lead_a, cases=[case])
    client.force_login(people.lead_a)

    response = client.post(
        reverse("actions_web:transition", args=[action.pk]),
        {"to_state": "done", "resolve_cases": "1", "resolution_note": "Switched."},
        HTTP_REFERER="http://testserver" + reverse("actions_web:board"),
        follow=True,
    )

    assert b"root_cause is missing or not a number" in response.content
    action.refresh_from_db()
    assert action.state == Action.State.PLANNED


def test_owner_agent_resolve_is_403_and_rolls_back(client, people):
    root_cause = RootCause.objects.create(name="Courier delays", is_active=True)
    case = make_case(team=people.team_a)
    action = _action_with_cases(people, owner=people.agent_a, cases=[case])
    client.force_login(people.agent_a)

    response = client.post(
        reverse("actions_web:transition", args=[action.pk]),
        _resolve_form(root_cause),
    )

    assert response.status_code == 403
    action.refresh_from_db()
    assert action.state == Action.State.PLANNED
    case.refresh_from_db()
    assert case.is_open
