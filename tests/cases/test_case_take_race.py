"""Taking a case that someone else took first: the service, the case page's
Take button and the API's assign-to-self, one after the other and racing."""

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from cases import workflow
from cases.models import Case, CaseEvent, TeamMember
from oscm.errors import DomainError
from tests.threads import run_at_once

from .factories import CaseFactory, TeamMemberFactory, UserFactory
from .personas import make_personas
from .postgresql import postgresql_only  # noqa: F401 (fixture)


@pytest.fixture
def people():
    return make_personas()


def _second_agent(people):
    return TeamMemberFactory(
        team=people.team_a, user=UserFactory(username="agent_a2")
    ).user


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


# One after the other


@pytest.mark.django_db
def test_case_take_assigns_free_case(people):
    case = workflow.case_take(case=people.case_a, actor=people.agent_a)

    assert case.assignee == people.agent_a
    assert case.state == Case.State.ASSIGNED


@pytest.mark.django_db
def test_case_take_taken_case_409(people):
    workflow.case_take(case=people.case_a, actor=people.agent_a)

    with pytest.raises(DomainError) as error:
        workflow.case_take(case=people.case_a, actor=_second_agent(people))

    assert error.value.status == 409
    assert "already taken by agent_a" in error.value.message
    assert error.value.details == {"assignee": people.agent_a.pk}


@pytest.mark.django_db
def test_case_take_by_lead_keeps_agent(people):
    workflow.case_take(case=people.case_a, actor=people.agent_a)

    with pytest.raises(DomainError) as error:
        workflow.case_take(case=people.case_a, actor=people.lead_a)

    people.case_a.refresh_from_db()
    assert error.value.status == 409
    assert people.case_a.assignee == people.agent_a


@pytest.mark.django_db
def test_case_take_own_case_changes_nothing(people):
    workflow.case_take(case=people.case_a, actor=people.agent_a)

    workflow.case_take(case=people.case_a, actor=people.agent_a)

    assert (
        CaseEvent.objects.filter(
            case=people.case_a, kind=CaseEvent.Kind.ASSIGNED
        ).count()
        == 1
    )


@pytest.mark.django_db
def test_case_take_other_team_404(people):
    with pytest.raises(DomainError) as error:
        workflow.case_take(case=people.case_a, actor=people.agent_b)

    assert error.value.status == 404


@pytest.mark.django_db
def test_lead_assign_to_self_takes_over(people):
    workflow.case_take(case=people.case_a, actor=people.agent_a)

    case = workflow.case_assign_to(
        case=people.case_a, actor=people.lead_a, assignee=people.lead_a
    )

    assert case.assignee == people.lead_a


@pytest.mark.django_db
def test_take_button_on_taken_case_shows_taker(client, people):
    workflow.case_take(case=people.case_a, actor=people.agent_a)
    client.force_login(_second_agent(people))

    response = client.post(
        reverse("cases_web:take", args=[people.case_a.pk]), follow=True
    )

    assert response.status_code == 200
    assert "already taken by agent_a" in _messages(response)[-1]


@pytest.mark.django_db
def test_api_assign_self_on_taken_case_409(people):
    workflow.case_take(case=people.case_a, actor=people.agent_a)
    agent = _second_agent(people)
    client = APIClient()
    client.force_authenticate(agent)

    response = client.post(
        f"/api/v1/cases/{people.case_a.pk}/assign/",
        {"assignee": agent.pk},
        format="json",
    )

    assert response.status_code == 409
    assert "already taken by agent_a" in response.json()["detail"]


# Racing, each agent on its own connection (PostgreSQL only)


def _agents(team, count: int) -> list:
    return [
        TeamMemberFactory(
            team=team,
            user=UserFactory(username=f"racer{index}"),
            role=TeamMember.Role.AGENT,
        ).user
        for index in range(count)
    ]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("postgresql_only")
def test_take_race_losers_get_409():
    people = make_personas()
    case = CaseFactory(team=people.team_a)

    def take(agent) -> tuple[int, str]:
        # run_at_once raises any exception a thread returns, so the error
        # comes back as its status and message.
        try:
            workflow.case_take(case=case, actor=agent)
        except DomainError as error:
            return error.status, error.message
        return 200, ""

    results = run_at_once(take, _agents(people.team_a, 3))

    case.refresh_from_db()
    assert sorted(status for status, _message in results) == [200, 409, 409]
    for status, message in results:
        if status == 409:
            assert f"already taken by {case.assignee.username}" in message


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("postgresql_only")
def test_take_button_race_loser_sees_taker():
    people = make_personas()
    case = CaseFactory(team=people.team_a)
    clients = []
    for agent in _agents(people.team_a, 2):
        client = Client()
        client.force_login(agent)
        clients.append(client)

    responses = run_at_once(
        lambda client: client.post(
            reverse("cases_web:take", args=[case.pk]), follow=True
        ),
        clients,
    )

    # response.context mixes the two threads' templates, because the test
    # client collects them through a global signal, so the pages are read.
    case.refresh_from_db()
    pages = [response.content.decode() for response in responses]
    taken = f"Case #{case.pk} was already taken by {case.assignee.username}"
    assert sum(f"Case #{case.pk} is assigned to you." in page for page in pages) == 1
    assert sum(taken in page for page in pages) == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("postgresql_only")
def test_api_take_race_loser_gets_409():
    people = make_personas()
    case = CaseFactory(team=people.team_a)
    clients = []
    for agent in _agents(people.team_a, 2):
        client = APIClient()
        client.force_authenticate(agent)
        clients.append((client, agent))

    responses = run_at_once(
        lambda pair: pair[0].post(
            f"/api/v1/cases/{case.pk}/assign/", {"assignee": pair[1].pk}, format="json"
        ),
        clients,
    )

    case.refresh_from_db()
    assert sorted(response.status_code for response in responses) == [200, 409]
    loser = next(response for response in responses if response.status_code == 409)
    assert f"already taken by {case.assignee.username}" in loser.json()["detail"]
