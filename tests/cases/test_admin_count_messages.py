"""The case admin's bulk actions report the count of changed cases with the
singular or plural form, in English and Indonesian."""

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.messages import get_messages
from django.urls import reverse

from cases.models import Case, Priority

from .factories import CaseFactory, RootCauseFactory, make_personas

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:cases_case_changelist"


@pytest.fixture
def personas(teams):
    return make_personas(team_a=teams["Product"], team_b=teams["IT"])


def _cases(teams, count: int) -> list[Case]:
    return [CaseFactory(team=teams["Product"]) for _ in range(count)]


def _resolved_cases(teams, count: int) -> list[Case]:
    cases = _cases(teams, count)
    Case.objects.filter(pk__in=[case.pk for case in cases]).update(
        state=Case.State.RESOLVED, is_open=False, root_cause=RootCauseFactory()
    )
    return cases


def _run(client, action: str, cases: list[Case], **data) -> list[str]:
    payload = {
        "action": action,
        ACTION_CHECKBOX_NAME: [case.pk for case in cases],
        **data,
    }
    response = client.post(reverse(CHANGELIST), payload, follow=True)
    return [str(message) for message in get_messages(response.wsgi_request)]


@pytest.mark.parametrize(
    ("count", "expected"), [(1, "1 case closed."), (2, "2 cases closed.")]
)
def test_close_message_count(client, personas, teams, count, expected):
    client.force_login(personas["agent_a"])

    messages = _run(client, "close_cases", _resolved_cases(teams, count))

    assert messages == [expected]


@pytest.mark.parametrize(
    ("count", "expected"),
    [(1, "1 case assigned to agent_a."), (2, "2 cases assigned to agent_a.")],
)
def test_assign_message_count(client, personas, teams, count, expected):
    client.force_login(personas["lead_a"])

    messages = _run(
        client,
        "assign_to_agent",
        _cases(teams, count),
        apply="1",
        assignee=personas["agent_a"].pk,
    )

    assert messages == [expected]


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (1, "1 case set to priority Urgent."),
        (2, "2 cases set to priority Urgent."),
    ],
)
def test_priority_message_count(client, personas, teams, count, expected):
    client.force_login(personas["lead_a"])

    messages = _run(
        client,
        "change_priority",
        _cases(teams, count),
        apply="1",
        priority=Priority.URGENT,
    )

    assert messages == [expected]


def test_close_message_in_indonesian(client, personas, teams):
    client.force_login(personas["agent_a"])
    client.cookies["django_language"] = "id"

    messages = _run(client, "close_cases", _resolved_cases(teams, 2))

    assert messages == ["2 kasus ditutup."]


def test_assign_message_in_indonesian(client, personas, teams):
    client.force_login(personas["lead_a"])
    client.cookies["django_language"] = "id"

    messages = _run(
        client,
        "assign_to_agent",
        _cases(teams, 1),
        apply="1",
        assignee=personas["agent_a"].pk,
    )

    assert messages == ["1 kasus ditugaskan kepada agent_a."]
