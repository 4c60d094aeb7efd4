"""The lead board's bulk form: too many ticked cases, CSRF, and the count
in its messages."""

import pytest
from django.test import Client
from django.urls import reverse

from actions.models import Action
from cases.models import CaseEvent

from .factories import CaseFactory
from .personas import make_personas

pytestmark = pytest.mark.django_db


@pytest.fixture
def people():
    return make_personas()


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def _csrf_client(user) -> tuple[Client, str]:
    """Return a client that enforces CSRF, signed in, with its form token."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get(reverse("cases_web:team"))
    return client, client.cookies["csrftoken"].value


def test_team_bulk_too_many_fields_shows_message(people, settings):
    client, csrf = _csrf_client(people.lead_a)
    team_page = reverse("cases_web:team")
    body = {
        "csrfmiddlewaretoken": csrf,
        "operation": "reassign",
        "assignee": people.agent_a.pk,
        "case": [people.case_a.pk] * (settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1),
    }

    response = client.post(
        reverse("cases_web:team-bulk"),
        body,
        headers={"referer": f"http://testserver{team_page}"},
    )

    assert response.status_code == 302
    assert response["Location"] == team_page
    page = client.get(response["Location"])
    assert _messages(page) == [
        (
            "Too many cases selected: a bulk change takes at most 995 cases. "
            "Select fewer cases and submit again."
        )
    ]
    assert not CaseEvent.objects.filter(kind=CaseEvent.Kind.ASSIGNED).exists()


def test_team_bulk_over_case_limit_shows_message(client, people, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 12
    cases = [CaseFactory(team=people.team_a) for _ in range(8)]
    client.force_login(people.lead_a)

    response = client.post(
        reverse("cases_web:team-bulk"),
        {
            "operation": "reassign",
            "assignee": people.agent_a.pk,
            "case": [case.pk for case in cases],
        },
        follow=True,
    )

    assert "at most 7 cases" in _messages(response)[-1]
    assert not CaseEvent.objects.filter(kind=CaseEvent.Kind.ASSIGNED).exists()


def test_team_bulk_without_csrf_token_403(people):
    client, _csrf = _csrf_client(people.lead_a)

    response = client.post(
        reverse("cases_web:team-bulk"),
        {
            "operation": "reassign",
            "assignee": people.agent_a.pk,
            "case": [people.case_a.pk],
        },
    )

    assert response.status_code == 403
    assert not CaseEvent.objects.filter(kind=CaseEvent.Kind.ASSIGNED).exists()


def test_team_bulk_with_csrf_token_reassigns(people):
    client, csrf = _csrf_client(people.lead_a)

    response = client.post(
        reverse("cases_web:team-bulk"),
        {
            "csrfmiddlewaretoken": csrf,
            "operation": "reassign",
            "assignee": people.agent_a.pk,
            "case": [people.case_a.pk],
        },
    )

    people.case_a.refresh_from_db()
    assert response.status_code == 302
    assert people.case_a.assignee == people.agent_a


def test_team_bulk_anonymous_redirects_to_login(client):
    response = client.post(reverse("cases_web:team-bulk"), {"case": ["1"]})

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize(
    ("count", "expected"), [(1, "1 case reassigned."), (2, "2 cases reassigned.")]
)
def test_team_bulk_message_counts_cases(client, people, count, expected):
    cases = [people.case_a] + [
        CaseFactory(team=people.team_a) for _ in range(count - 1)
    ]
    client.force_login(people.lead_a)

    response = client.post(
        reverse("cases_web:team-bulk"),
        {
            "operation": "reassign",
            "assignee": people.agent_a.pk,
            "case": [case.pk for case in cases],
        },
        follow=True,
    )

    assert _messages(response) == [expected]


@pytest.mark.parametrize(
    ("count", "expected"),
    [(1, "Action Fix created with 1 case."), (2, "Action Fix created with 2 cases.")],
)
def test_action_form_message_counts_cases(client, people, count, expected):
    cases = [people.case_a] + [
        CaseFactory(team=people.team_a) for _ in range(count - 1)
    ]
    client.force_login(people.lead_a)

    response = client.post(
        reverse("actions_web:new"),
        {
            "case": [case.pk for case in cases],
            "title": "Fix",
            "owner": people.lead_a.pk,
        },
        follow=True,
    )

    assert Action.objects.count() == 1
    assert _messages(response) == [expected]
