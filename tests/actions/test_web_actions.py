"""Workspace pages of the actions app: the board and creating from cases."""

import pytest
from django.urls import reverse

from actions.models import Action
from actions.services import action_create

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
