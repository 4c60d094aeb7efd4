"""Submission tokens of the action pages' forms: each rendered form carries
one, and a repeated POST with it changes the action only once."""

import re

import pytest
from django.urls import reverse

from actions.models import Action, ActionEvent
from actions.services import action_create
from cases.models import Case, CaseEvent, RootCause

from .conftest import make_case

pytestmark = pytest.mark.django_db

TOKEN_FIELD = re.compile(rb'name="submission_token" value="([^"]+)"')


def _main(content: bytes) -> bytes:
    return content.split(b'<main id="main"', 1)[1]


def _page_token(content: bytes) -> str:
    tokens = TOKEN_FIELD.findall(_main(content))
    assert len(tokens) == 1
    return tokens[0].decode()


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def _action(people, *, cases=()) -> Action:
    return action_create(
        actor=people.lead_a,
        title="Fix courier",
        team=people.team_a,
        owner=people.lead_a,
        case_ids=[case.pk for case in cases],
    )


def _new_form_body(client, people) -> dict:
    """Open the new action form for one case of team A and fill it in, with
    the token the page rendered."""
    case = make_case(team=people.team_a)
    page = client.get(reverse("actions_web:new"), {"case": [case.pk]})
    return {
        "case": [case.pk],
        "title": "Switch courier",
        "owner": people.lead_a.pk,
        "submission_token": _page_token(page.content),
    }


def _state_changes(action: Action) -> int:
    return ActionEvent.objects.filter(action=action, kind="state_changed").count()


def test_new_form_carries_token(client, people):
    case = make_case(team=people.team_a)
    client.force_login(people.lead_a)

    content = client.get(reverse("actions_web:new"), {"case": [case.pk]}).content

    assert len(TOKEN_FIELD.findall(_main(content))) == 1


def test_new_form_with_errors_carries_new_token(client, people):
    case = make_case(team=people.team_a)
    client.force_login(people.lead_a)
    page = client.get(reverse("actions_web:new"), {"case": [case.pk]})
    token = _page_token(page.content)

    invalid = client.post(
        reverse("actions_web:new"),
        {"case": [case.pk], "owner": people.lead_a.pk, "submission_token": token},
    )

    assert invalid.status_code == 400
    assert _page_token(invalid.content) != token


def test_board_forms_carry_distinct_tokens(client, people):
    _action(people, cases=[make_case(team=people.team_a)])
    RootCause.objects.create(name="Courier delays", is_active=True)
    client.force_login(people.lead_a)

    main = _main(client.get(reverse("actions_web:board")).content)

    tokens = TOKEN_FIELD.findall(main)
    assert b'name="resolve_cases"' in main
    assert len(tokens) == main.count(b'<form method="post"')
    assert len(set(tokens)) == len(tokens)


def test_new_form_repeat_creates_one_action(client, people):
    client.force_login(people.lead_a)
    body = _new_form_body(client, people)

    first = client.post(reverse("actions_web:new"), body)
    second = client.post(reverse("actions_web:new"), body)

    assert first.status_code == 302
    assert second.status_code == 302
    assert second["Location"] == first["Location"]
    assert Action.objects.count() == 1


def test_new_form_repeat_shows_first_message(client, people):
    client.force_login(people.lead_a)
    body = _new_form_body(client, people)
    client.post(reverse("actions_web:new"), body, follow=True)

    repeat = client.post(reverse("actions_web:new"), body, follow=True)

    assert _messages(repeat) == ["Action Switch courier created with 1 case."]


def test_transition_repeat_moves_once(client, people):
    action = _action(people)
    client.force_login(people.lead_a)
    url = reverse("actions_web:transition", args=[action.pk])
    body = {"to_state": "in_progress", "submission_token": "t" * 32}

    first = client.post(url, body, follow=True)
    second = client.post(url, body, follow=True)

    action.refresh_from_db()
    assert first.redirect_chain[0][1] == 302
    assert action.state == Action.State.IN_PROGRESS
    assert _state_changes(action) == 1
    assert _messages(second) == ["Action Fix courier is now In progress."]


def test_transition_without_token_runs_each_time(client, people):
    action = _action(people)
    client.force_login(people.lead_a)
    url = reverse("actions_web:transition", args=[action.pk])

    client.post(url, {"to_state": "in_progress"})
    second = client.post(url, {"to_state": "in_progress"}, follow=True)

    assert _state_changes(action) == 1
    assert "cannot move from in_progress" in _messages(second)[-1]


def test_done_and_resolve_repeat_resolves_once(client, people, root_cause):
    first_case, second_case = (make_case(team=people.team_a) for _ in range(2))
    action = _action(people, cases=[first_case, second_case])
    client.force_login(people.lead_a)
    url = reverse("actions_web:transition", args=[action.pk])
    body = {
        "to_state": "done",
        "resolve_cases": "1",
        "root_cause": root_cause.pk,
        "resolution_note": "Switched courier.",
        "submission_token": "r" * 32,
    }

    client.post(url, body, follow=True)
    repeat = client.post(url, body, follow=True)

    action.refresh_from_db()
    assert action.state == Action.State.DONE
    assert _state_changes(action) == 1
    for case in (first_case, second_case):
        case.refresh_from_db()
        assert case.state == Case.State.RESOLVED
    resolved_events = CaseEvent.objects.filter(
        case__in=[first_case, second_case], kind=CaseEvent.Kind.STATE_CHANGED
    )
    assert resolved_events.count() == 2
    assert _messages(repeat) == [
        "Action Fix courier is now Done.",
        "2 open cases resolved.",
    ]
