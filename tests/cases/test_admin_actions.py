"""Bulk actions of the case admin go through the workflow services."""

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.messages import get_messages
from django.urls import reverse

from cases.models import Case, CaseEvent, Priority
from cases.workflow import case_comment

from .factories import CaseFactory, RootCauseFactory, make_personas

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:cases_case_changelist"


@pytest.fixture
def personas(teams):
    return make_personas(team_a=teams["Product"], team_b=teams["IT"])


@pytest.fixture
def case_a(teams) -> Case:
    return CaseFactory(team=teams["Product"])


def _run(client, action: str, cases: list[Case], **data):
    payload = {
        "action": action,
        ACTION_CHECKBOX_NAME: [case.pk for case in cases],
        **data,
    }
    return client.post(reverse(CHANGELIST), payload, follow=True)


def _messages(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def test_assign_form_lists_team_agents(client, personas, case_a):
    client.force_login(personas["lead_a"])

    response = client.post(
        reverse(CHANGELIST),
        {"action": "assign_to_agent", ACTION_CHECKBOX_NAME: [case_a.pk]},
    )

    choices = dict(response.context["form"].fields["assignee"].choices)
    assert response.status_code == 200
    assert personas["agent_a"].pk in choices
    assert personas["agent_b"].pk not in choices
    assert "0 of 25 open" in choices[personas["agent_a"].pk]


def test_assign_action_assigns_and_records(client, personas, case_a):
    client.force_login(personas["lead_a"])

    _run(
        client, "assign_to_agent", [case_a], apply="1", assignee=personas["agent_a"].pk
    )

    case_a.refresh_from_db()
    event = case_a.events.get(kind=CaseEvent.Kind.ASSIGNED)
    assert case_a.assignee == personas["agent_a"]
    assert case_a.state == Case.State.ASSIGNED
    assert event.actor == personas["lead_a"]


def test_assign_action_reports_wrong_team(client, personas, case_a, teams):
    case_b = CaseFactory(team=teams["IT"])
    client.force_login(personas["superuser"])

    response = _run(
        client,
        "assign_to_agent",
        [case_a, case_b],
        apply="1",
        assignee=personas["agent_a"].pk,
    )

    case_a.refresh_from_db()
    case_b.refresh_from_db()
    messages = _messages(response)
    assert case_a.assignee == personas["agent_a"]
    assert case_b.assignee is None
    assert not case_b.events.filter(kind=CaseEvent.Kind.ASSIGNED).exists()
    assert any(
        f"Case #{case_b.pk}:" in text and "not an active agent" in text
        for text in messages
    )
    assert "1 case assigned to agent_a." in messages


def test_assign_action_rejects_agent(client, personas, case_a):
    client.force_login(personas["agent_a"])

    response = client.post(
        reverse(CHANGELIST),
        {
            "action": "assign_to_agent",
            ACTION_CHECKBOX_NAME: [case_a.pk],
            "apply": "1",
            "assignee": personas["agent_a"].pk,
        },
    )

    case_a.refresh_from_db()
    assert response.status_code == 403
    assert case_a.assignee is None


def test_priority_action_changes_and_records(client, personas, case_a):
    client.force_login(personas["lead_a"])

    response = _run(
        client, "change_priority", [case_a], apply="1", priority=Priority.URGENT
    )

    case_a.refresh_from_db()
    event = case_a.events.get(kind=CaseEvent.Kind.PRIORITY_CHANGED)
    assert case_a.priority == Priority.URGENT
    assert event.changes == {"priority": [Priority.NORMAL, Priority.URGENT]}
    assert "1 case set to priority Urgent." in _messages(response)


def test_priority_action_rejects_agent(client, personas, case_a):
    client.force_login(personas["agent_a"])

    response = client.post(
        reverse(CHANGELIST),
        {
            "action": "change_priority",
            ACTION_CHECKBOX_NAME: [case_a.pk],
            "apply": "1",
            "priority": Priority.URGENT,
        },
    )

    case_a.refresh_from_db()
    assert response.status_code == 403
    assert case_a.priority == Priority.NORMAL


def test_close_action_closes_resolved(client, personas, case_a, teams):
    resolved = CaseFactory(team=teams["Product"])
    Case.objects.filter(pk=resolved.pk).update(
        state=Case.State.RESOLVED, is_open=False, root_cause=RootCauseFactory()
    )
    client.force_login(personas["agent_a"])

    response = _run(client, "close_cases", [resolved, case_a])

    resolved.refresh_from_db()
    case_a.refresh_from_db()
    messages = _messages(response)
    assert resolved.state == Case.State.CLOSED
    assert resolved.events.filter(kind=CaseEvent.Kind.STATE_CHANGED).count() == 1
    assert case_a.state == Case.State.NEW
    assert case_a.is_open is True
    assert not case_a.events.exists()
    assert any(
        f"Case #{case_a.pk}:" in text and "cannot move to closed" in text
        for text in messages
    )
    assert "1 case closed." in messages


def test_case_search_finds_comment_text(client, personas, case_a, teams):
    CaseFactory(team=teams["Product"])
    case_comment(
        case=case_a,
        actor=personas["agent_a"],
        body="Refund promised by phone",
        visibility="internal",
    )
    client.force_login(personas["agent_a"])

    response = client.get(reverse(CHANGELIST), {"q": "refund promised"})

    assert list(response.context["cl"].result_list) == [case_a]


def test_case_page_shows_timeline(client, personas, case_a):
    case_comment(
        case=case_a,
        actor=personas["lead_a"],
        body="Called the courier",
        visibility="internal",
    )
    client.force_login(personas["agent_a"])

    response = client.get(reverse("admin:cases_case_change", args=[case_a.pk]))

    content = response.content.decode()
    assert "Called the courier" in content
    assert "timeline" in content.lower()
    assert (
        reverse("admin:feedback_feedback_change", args=[case_a.trigger_feedback_id])
        in content
    )
