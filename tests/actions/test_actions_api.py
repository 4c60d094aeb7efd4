from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from actions.models import Action
from cases.models import Case

from .conftest import make_case

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def create(people, user, **body):
    payload = {"title": "Switch courier", "team": people.team_a.pk, "owner": people.agent_a.pk, **body}
    return client_for(user).post("/api/v1/actions/", payload, format="json")


def test_create_by_lead_from_cases(people):
    case = make_case(team=people.team_a)
    response = create(people, people.lead_a, case_ids=[case.pk])
    assert response.status_code == 201, response.json()
    assert response.json()["case_ids"] == [case.pk]
    assert response.json()["allowed_states"] == ["in_progress", "done"]


def test_create_by_agent_forbidden(people):
    response = create(people, people.agent_a)
    assert response.status_code == 403
    assert "leads" in response.json()["detail"]


def test_create_with_other_team_case_rejected(people):
    other = make_case(team=people.team_b)
    response = create(people, people.lead_a, case_ids=[other.pk])
    assert response.status_code == 400
    assert response.json()["case_ids"] == [other.pk]


def test_create_with_out_of_range_case_id_rejected(people):
    response = create(people, people.lead_a, case_ids=[2**63])
    assert response.status_code == 400
    assert "case_ids" in response.json()


def test_list_scoped_to_teams(people):
    create(people, people.lead_a)
    assert len(client_for(people.agent_a).get("/api/v1/actions/").json()["results"]) == 1
    assert client_for(people.agent_b).get("/api/v1/actions/").json()["results"] == []
    assert len(client_for(people.admin).get("/api/v1/actions/").json()["results"]) == 1


def test_detail_other_team_not_found(people):
    action_id = create(people, people.lead_a).json()["id"]
    assert client_for(people.agent_b).get(f"/api/v1/actions/{action_id}/").status_code == 404


def test_transition_conflict_names_allowed(people):
    action_id = create(people, people.lead_a).json()["id"]
    client = client_for(people.lead_a)
    assert client.post(f"/api/v1/actions/{action_id}/transition/", {"to_state": "done"}).status_code == 200
    response = client.post(f"/api/v1/actions/{action_id}/transition/", {"to_state": "in_progress"})
    assert response.status_code == 409
    assert response.json()["state"] == "done"


def test_transition_done_resolves_cases(people, root_cause):
    case = make_case(team=people.team_a)
    action_id = create(people, people.lead_a, case_ids=[case.pk]).json()["id"]
    response = client_for(people.lead_a).post(
        f"/api/v1/actions/{action_id}/transition/",
        {"to_state": "done", "resolve_cases": True, "root_cause": root_cause.pk, "resolution_note": "Fixed."},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert response.json()["cases"]["resolved"] == [case.pk]
    assert response.json()["state"] == "done"
    assert Case.objects.get(pk=case.pk).state == Case.State.RESOLVED


def test_resolve_cases_endpoint(people, root_cause):
    case = make_case(team=people.team_a)
    action_id = create(people, people.lead_a, case_ids=[case.pk]).json()["id"]
    response = client_for(people.lead_a).post(
        f"/api/v1/actions/{action_id}/resolve-cases/",
        {"root_cause": root_cause.pk, "resolution_note": "Fixed."},
        format="json",
    )
    assert response.status_code == 200
    assert response.json() == {"resolved": [case.pk], "skipped": []}


def test_detail_shows_measurement(people):
    action_id = create(people, people.lead_a).json()["id"]
    Action.objects.filter(pk=action_id).update(
        state="verified", verdict="improved", measurement={"kind": "nps", "p_value": 0.01}
    )
    body = client_for(people.agent_a).get(f"/api/v1/actions/{action_id}/").json()
    assert body["verdict"] == "improved"
    assert body["measurement"]["p_value"] == 0.01
    assert [event["kind"] for event in body["events"]] == ["created"]


def test_list_query_count(people, django_assert_max_num_queries):
    for _ in range(3):
        create(people, people.lead_a)
    client = client_for(people.admin)
    with django_assert_max_num_queries(3):
        assert len(client.get("/api/v1/actions/").json()["results"]) == 3


def test_team_figures_endpoint(people):
    make_case(team=people.team_a, first_response_at=timezone.now() + timedelta(hours=1))
    make_case(team=people.team_b)
    response = client_for(people.agent_a).get("/api/v1/team-figures/", {"by": "team"})
    assert response.status_code == 200
    groups = response.json()["groups"]
    assert [group["label"] for group in groups] == ["Team A"]
    assert groups[0]["loop_closure"]["rate"] == 100.0


def test_team_figures_invalid_by(people):
    response = client_for(people.agent_a).get("/api/v1/team-figures/", {"by": "colour"})
    assert response.status_code == 400
    assert "use one of" in str(response.json())


@pytest.mark.parametrize(
    "dates",
    [
        {"until": "9999-12-31"},
        {"since": "9999-12-31", "until": "9999-12-31"},
        {"until": "0001-01-05"},
    ],
)
def test_team_figures_extreme_dates_400(people, dates):
    response = client_for(people.agent_a).get("/api/v1/team-figures/", dates)
    assert response.status_code == 400
