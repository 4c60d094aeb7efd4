"""Repeated POSTs: the workspace forms' one-time submission tokens and the
API's Idempotency-Key header, one after the other and at the same moment."""

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from actions.models import Action
from cases.models import Case, CaseEvent
from oscm.idempotency.models import IdempotencyKey
from oscm.idempotency.services import idempotency_keys_delete_expired
from oscm.idempotency.tasks import idempotency_keys_delete_expired_task
from oscm.idempotency.web import submission_token_new
from tests.threads import run_at_once

from .factories import CaseFactory
from .personas import make_personas
from .postgresql import postgresql_only  # noqa: F401 (fixture)

TOKEN_FIELD = re.compile(rb'name="submission_token" value="([^"]+)"')

# The case page forms that add a timeline row, with a body for each and the
# events it adds.
TIMELINE_FORMS = {
    "comment": (
        {"body": "Called the courier", "visibility": CaseEvent.Visibility.INTERNAL},
        CaseEvent.Kind.COMMENT,
    ),
    "contact": (
        {"channel": "phone", "outcome": "reached", "body": "Spoke to the customer"},
        CaseEvent.Kind.CONTACT,
    ),
    "reply": (
        {"body": "The parcel arrived, thanks", "channel": "email"},
        CaseEvent.Kind.CONTACT,
    ),
}
# The same forms in the API, by their action's path.
TIMELINE_ENDPOINTS = {
    "comment": {"body": "Called the courier", "visibility": "internal"},
    "contact": {"channel": "phone", "outcome": "reached", "body": "Spoke to them"},
    "customer-reply": {"body": "The parcel arrived, thanks", "channel": "email"},
}


@pytest.fixture
def people():
    return make_personas()


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def _events(case: Case, kind: str) -> int:
    return CaseEvent.objects.filter(case=case, kind=kind).count()


def _post_form(client: Client, case: Case, name: str, token: str, **extra):
    body, _kind = TIMELINE_FORMS[name]
    return client.post(
        reverse(f"cases_web:{name}", args=[case.pk]),
        {**body, "submission_token": token, **extra},
    )


def _api_client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _create_action(client: APIClient, people, key: str | None = None, **body):
    headers = {} if key is None else {"Idempotency-Key": key}
    payload = {
        "title": "Switch courier",
        "team": people.team_a.pk,
        "owner": people.lead_a.pk,
        "case_ids": [people.case_a.pk],
        **body,
    }
    return client.post("/api/v1/actions/", payload, format="json", headers=headers)


# Workspace forms, one request after the other


@pytest.mark.django_db
def test_case_page_forms_carry_distinct_tokens(client, people):
    client.force_login(people.lead_a)

    content = client.get(reverse("cases_web:case", args=[people.case_a.pk])).content

    main = content.split(b'<main id="main"', 1)[1]
    tokens = TOKEN_FIELD.findall(main)
    assert len(tokens) == main.count(b'<form method="post"')
    assert len(set(tokens)) == len(tokens)


@pytest.mark.django_db
def test_team_board_form_carries_token(client, people):
    client.force_login(people.lead_a)

    content = client.get(reverse("cases_web:team")).content

    assert len(TOKEN_FIELD.findall(content)) == 1


@pytest.mark.django_db
@pytest.mark.parametrize("name", TIMELINE_FORMS)
def test_form_repeat_adds_one_event(client, people, name):
    client.force_login(people.agent_a)
    token = submission_token_new()
    kind = TIMELINE_FORMS[name][1]

    first = _post_form(client, people.case_a, name, token)
    second = _post_form(client, people.case_a, name, token)

    assert first.status_code == 302
    assert second.status_code == 302
    assert second["Location"] == first["Location"]
    assert _events(people.case_a, kind) == 1


@pytest.mark.django_db
def test_form_repeat_shows_first_message(client, people):
    client.force_login(people.agent_a)
    token = submission_token_new()
    _post_form(client, people.case_a, "comment", token)
    client.get(reverse("cases_web:case", args=[people.case_a.pk]))

    repeat = _post_form(client, people.case_a, "comment", token)
    page = client.get(repeat["Location"])

    assert _messages(page) == ["Comment added."]


@pytest.mark.django_db
def test_form_without_token_runs_each_time(client, people):
    client.force_login(people.agent_a)
    url = reverse("cases_web:comment", args=[people.case_a.pk])
    body = {"body": "Called the courier", "visibility": "internal"}

    client.post(url, body)
    client.post(url, body)

    assert _events(people.case_a, CaseEvent.Kind.COMMENT) == 2


@pytest.mark.django_db
def test_form_token_with_other_values_rejected(client, people):
    client.force_login(people.agent_a)
    token = submission_token_new()
    _post_form(client, people.case_a, "comment", token)

    response = _post_form(
        client, people.case_a, "comment", token, body="A different note"
    )

    page = client.get(response["Location"])
    assert _events(people.case_a, CaseEvent.Kind.COMMENT) == 1
    assert "already submitted with other values" in _messages(page)[-1]


@pytest.mark.django_db
def test_form_invalid_token_rejected(client, people):
    client.force_login(people.agent_a)

    response = _post_form(client, people.case_a, "comment", "not a token!")

    page = client.get(response["Location"])
    assert _events(people.case_a, CaseEvent.Kind.COMMENT) == 0
    assert "submission token is invalid" in _messages(page)[-1]


@pytest.mark.django_db
def test_form_failed_submission_releases_token(client, people):
    client.force_login(people.agent_a)
    token = submission_token_new()

    failed = _post_form(client, people.case_a, "comment", token, body=" ")
    retried = _post_form(client, people.case_a, "comment", token)

    assert failed.status_code == 302
    assert retried.status_code == 302
    assert _events(people.case_a, CaseEvent.Kind.COMMENT) == 1
    assert IdempotencyKey.objects.count() == 1


@pytest.mark.django_db
def test_form_token_scoped_to_user(client, people):
    token = submission_token_new()
    client.force_login(people.agent_a)
    _post_form(client, people.case_a, "comment", token)
    client.force_login(people.lead_a)

    _post_form(client, people.case_a, "comment", token)

    assert _events(people.case_a, CaseEvent.Kind.COMMENT) == 2


@pytest.mark.django_db
def test_transition_repeat_replays_success(client, people):
    people.case_a.assignee = people.agent_a
    people.case_a.state = Case.State.ASSIGNED
    people.case_a.save()
    client.force_login(people.agent_a)
    url = reverse("cases_web:transition", args=[people.case_a.pk])
    body = {"to_state": "in_progress", "submission_token": submission_token_new()}
    client.post(url, body)
    client.get(reverse("cases_web:case", args=[people.case_a.pk]))

    repeat = client.post(url, body)

    page = client.get(repeat["Location"])
    assert _messages(page) == [f"Case #{people.case_a.pk} is now In progress."]


@pytest.mark.django_db
def test_move_repeat_moves_once(client, people):
    client.force_login(people.admin)
    body = {
        "operation": "move",
        "team": people.team_b.pk,
        "reason": "Payment question",
        "submission_token": submission_token_new(),
    }
    url = reverse("cases_web:case", args=[people.case_a.pk])

    first = client.post(url, body)
    second = client.post(url, body)

    assert second["Location"] == first["Location"]
    assert _events(people.case_a, CaseEvent.Kind.TEAM_CHANGED) == 1


@pytest.mark.django_db
def test_team_bulk_repeat_reassigns_once(client, people):
    client.force_login(people.lead_a)
    body = {
        "operation": "reassign",
        "assignee": people.agent_a.pk,
        "case": [people.case_a.pk],
        "submission_token": submission_token_new(),
    }

    client.post(reverse("cases_web:team-bulk"), body)
    client.get(reverse("cases_web:team"))
    repeat = client.post(reverse("cases_web:team-bulk"), body)

    page = client.get(repeat["Location"])
    assert _events(people.case_a, CaseEvent.Kind.ASSIGNED) == 1
    assert _messages(page) == ["1 case reassigned."]


@pytest.mark.django_db
def test_action_form_repeat_creates_one_action(client, people):
    client.force_login(people.lead_a)
    body = {
        "case": [people.case_a.pk],
        "title": "Switch courier",
        "owner": people.lead_a.pk,
        "submission_token": submission_token_new(),
    }

    first = client.post(reverse("actions_web:new"), body)
    second = client.post(reverse("actions_web:new"), body)

    assert first.status_code == 302
    assert second["Location"] == first["Location"]
    assert Action.objects.count() == 1


@pytest.mark.django_db
def test_action_form_with_errors_releases_token(client, people):
    client.force_login(people.lead_a)
    body = {
        "case": [people.case_a.pk],
        "owner": people.lead_a.pk,
        "submission_token": submission_token_new(),
    }

    invalid = client.post(reverse("actions_web:new"), body)
    valid = client.post(reverse("actions_web:new"), {**body, "title": "Switch"})

    assert invalid.status_code == 400
    assert valid.status_code == 302
    assert Action.objects.count() == 1


# API Idempotency-Key, one request after the other


@pytest.mark.django_db
def test_action_create_key_replays_response(people):
    client = _api_client(people.lead_a)

    first = _create_action(client, people, key="retry-1")
    second = _create_action(client, people, key="retry-1")

    assert first.status_code == 201
    assert second.status_code == 201
    assert second.json() == first.json()
    assert second["Idempotent-Replayed"] == "true"
    assert Action.objects.count() == 1


@pytest.mark.django_db
def test_action_create_key_other_body_422(people):
    client = _api_client(people.lead_a)
    _create_action(client, people, key="retry-1")

    response = _create_action(client, people, key="retry-1", title="Other fix")

    assert response.status_code == 422
    assert "different request body" in response.json()["detail"]
    assert response.json()["idempotency_key"] == "retry-1"
    assert Action.objects.count() == 1


@pytest.mark.django_db
def test_action_create_without_key_unchanged(people):
    client = _api_client(people.lead_a)

    first = _create_action(client, people)
    second = _create_action(client, people)

    assert first.status_code == 201
    assert "Idempotent-Replayed" not in second
    assert Action.objects.count() == 2


@pytest.mark.django_db
def test_action_create_key_scoped_to_user(people):
    _create_action(_api_client(people.lead_a), people, key="retry-1")

    response = _create_action(_api_client(people.admin), people, key="retry-1")

    assert response.status_code == 201
    assert Action.objects.count() == 2


@pytest.mark.django_db
def test_action_create_failure_stores_nothing(people):
    client = _api_client(people.lead_a)

    failed = _create_action(client, people, key="retry-1", title=" ")
    retried = _create_action(client, people, key="retry-1")

    assert failed.status_code == 400
    assert retried.status_code == 201
    assert "Idempotent-Replayed" not in retried


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "   ", "k" * 256])
def test_action_create_invalid_key_400(people, key):
    response = _create_action(_api_client(people.lead_a), people, key=key)

    assert response.status_code == 400
    assert "Idempotency-Key header" in response.json()["detail"]
    assert Action.objects.count() == 0


@pytest.mark.django_db
def test_action_create_expired_key_runs_again(people):
    client = _api_client(people.lead_a)
    _create_action(client, people, key="retry-1")
    IdempotencyKey.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    response = _create_action(client, people, key="retry-1")

    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response
    assert Action.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize("path", TIMELINE_ENDPOINTS)
def test_case_api_key_replays_event(people, path):
    client = _api_client(people.agent_a)
    url = f"/api/v1/cases/{people.case_a.pk}/{path}/"
    body = TIMELINE_ENDPOINTS[path]

    first = client.post(url, body, format="json", headers={"Idempotency-Key": "k1"})
    second = client.post(url, body, format="json", headers={"Idempotency-Key": "k1"})

    assert first.status_code == 201
    assert second.status_code == 201
    assert second.json() == first.json()
    assert (
        CaseEvent.objects.filter(case=people.case_a, actor=people.agent_a).count() == 1
    )


@pytest.mark.django_db
def test_case_api_key_scoped_to_path(people):
    client = _api_client(people.agent_a)
    headers = {"Idempotency-Key": "k1"}
    base = f"/api/v1/cases/{people.case_a.pk}"

    comment = client.post(
        f"{base}/comment/",
        TIMELINE_ENDPOINTS["comment"],
        format="json",
        headers=headers,
    )
    contact = client.post(
        f"{base}/contact/",
        TIMELINE_ENDPOINTS["contact"],
        format="json",
        headers=headers,
    )

    assert comment.status_code == 201
    assert contact.status_code == 201
    assert contact.json()["id"] != comment.json()["id"]


# Clean-up


@pytest.mark.django_db
def test_delete_expired_keeps_live_keys(people):
    client = _api_client(people.lead_a)
    _create_action(client, people, key="old")
    IdempotencyKey.objects.update(expires_at=timezone.now() - timedelta(minutes=1))
    _create_action(client, people, key="live")

    deleted = idempotency_keys_delete_expired(batch_size=1)

    assert deleted == 1
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["live"]


@pytest.mark.django_db
def test_delete_expired_task_deletes_keys(people):
    _create_action(_api_client(people.lead_a), people, key="old")
    IdempotencyKey.objects.update(expires_at=timezone.now() - timedelta(minutes=1))

    idempotency_keys_delete_expired_task.delay()

    assert not IdempotencyKey.objects.exists()


# At the same moment, each request on its own connection (PostgreSQL only)


def _logged_in_clients(user, count: int) -> list[Client]:
    clients = [Client() for _ in range(count)]
    for client in clients:
        client.force_login(user)
    return clients


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", TIMELINE_FORMS)
@pytest.mark.usefixtures("postgresql_only")
def test_parallel_form_repeat_adds_one_event(name):
    people = make_personas()
    case = CaseFactory(team=people.team_a)
    token = submission_token_new()
    kind = TIMELINE_FORMS[name][1]

    responses = run_at_once(
        lambda client: _post_form(client, case, name, token),
        _logged_in_clients(people.agent_a, 3),
    )

    assert [response.status_code for response in responses] == [302, 302, 302]
    assert len({response["Location"] for response in responses}) == 1
    assert _events(case, kind) == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("postgresql_only")
def test_parallel_action_create_key_creates_one():
    people = make_personas()
    clients = [_api_client(people.lead_a) for _ in range(3)]

    responses = run_at_once(
        lambda client: _create_action(client, people, key="retry-1"), clients
    )

    assert [response.status_code for response in responses] == [201, 201, 201]
    assert len({response.json()["id"] for response in responses}) == 1
    assert Action.objects.count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("postgresql_only")
def test_parallel_comment_key_creates_one():
    people = make_personas()
    url = f"/api/v1/cases/{people.case_a.pk}/comment/"
    clients = [_api_client(people.agent_a) for _ in range(3)]

    responses = run_at_once(
        lambda client: client.post(
            url,
            TIMELINE_ENDPOINTS["comment"],
            format="json",
            headers={"Idempotency-Key": "k1"},
        ),
        clients,
    )

    assert [response.status_code for response in responses] == [201, 201, 201]
    assert _events(people.case_a, CaseEvent.Kind.COMMENT) == 1
