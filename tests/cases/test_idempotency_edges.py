"""Edge cases of repeated POSTs: keys on other spellings of one URL, the
key lifetime setting, and chunked API bodies without a Content-Length."""

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.http import HttpResponse
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from cases.models import CaseEvent
from feedback.models import Feedback
from oscm.idempotency.models import IdempotencyKey
from oscm.idempotency.services import request_fingerprint
from oscm.idempotency.web import submission_token_new
from oscm.middleware import ChunkedApiBodyMiddleware

from .personas import make_personas

PROJECT_ROOT = Path(__file__).resolve().parents[2]
COMMENT = {"body": "Called the courier", "visibility": "internal"}
FEEDBACK = {
    "external_id": "chunked-1",
    "kind": "nps",
    "source": "survey",
    "score": 3,
    "customer": "chunked",
}


@pytest.fixture
def people():
    return make_personas()


def _api_client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _comment(client: APIClient, case_path: str, key: str, body: dict = COMMENT):
    return client.post(
        f"/api/v1/cases/{case_path}/comment/",
        body,
        format="json",
        headers={"Idempotency-Key": key},
    )


def _comments(case, user) -> int:
    return CaseEvent.objects.filter(
        case=case, actor=user, kind=CaseEvent.Kind.COMMENT
    ).count()


# Keys on other spellings of one URL


@pytest.mark.django_db
@pytest.mark.parametrize("alias", ["0{pk}", "00{pk}", "+{pk}"])
def test_api_key_alias_path_replays(people, alias):
    client = _api_client(people.agent_a)
    case = people.case_a

    first = _comment(client, str(case.pk), "k1")
    second = _comment(client, alias.format(pk=case.pk), "k1")

    assert first.status_code == 201
    assert second.status_code == 201
    assert second["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert _comments(case, people.agent_a) == 1


@pytest.mark.django_db
def test_api_key_alias_path_other_body_422(people):
    client = _api_client(people.agent_a)
    case = people.case_a
    _comment(client, str(case.pk), "k1")

    response = _comment(client, f"0{case.pk}", "k1", {**COMMENT, "body": "Other"})

    assert response.status_code == 422
    assert f"/api/v1/cases/{case.pk}/comment/" in response.json()["detail"]
    assert _comments(case, people.agent_a) == 1


@pytest.mark.django_db
def test_api_key_stores_canonical_path(people):
    case = people.case_a

    response = _comment(_api_client(people.agent_a), f"0{case.pk}", "k1")

    assert response.status_code == 201
    stored = IdempotencyKey.objects.get()
    assert stored.path == f"/api/v1/cases/{case.pk}/comment/"


@pytest.mark.django_db
def test_api_key_stored_by_raw_path_replays(people):
    """A key stored before keys were scoped by the canonical path, under the
    request's path as sent, still replays."""
    case = people.case_a
    now = timezone.now()
    IdempotencyKey.objects.create(
        user=people.agent_a,
        key="k1",
        path=f"/api/v1/cases/{case.pk}/comment/",
        request_hash=request_fingerprint(COMMENT),
        response_status=201,
        response_body=json.dumps({"id": 1}),
        created_at=now,
        expires_at=now + timedelta(hours=1),
    )

    response = _comment(_api_client(people.agent_a), str(case.pk), "k1")

    assert response.status_code == 201
    assert response["Idempotent-Replayed"] == "true"
    assert response.json() == {"id": 1}
    assert _comments(case, people.agent_a) == 0


@pytest.mark.django_db
def test_api_key_other_case_runs(people):
    client = _api_client(people.admin)

    first = _comment(client, str(people.case_a.pk), "k1")
    second = _comment(client, str(people.case_b.pk), "k1")

    assert first.status_code == 201
    assert second.status_code == 201
    assert "Idempotent-Replayed" not in second
    assert _comments(people.case_a, people.admin) == 1
    assert _comments(people.case_b, people.admin) == 1


@pytest.mark.django_db
def test_api_key_invalid_lookup_404(people):
    response = _comment(_api_client(people.agent_a), "not-a-case", "k1")

    assert response.status_code == 404
    assert IdempotencyKey.objects.count() == 0


@pytest.mark.django_db
def test_form_token_alias_path_replays(client, people):
    client.force_login(people.agent_a)
    case = people.case_a
    url = reverse("cases_web:comment", args=[case.pk])
    alias = url.replace(f"/{case.pk}/", f"/0{case.pk}/")
    body = {**COMMENT, "submission_token": submission_token_new()}

    first = client.post(url, body)
    second = client.post(alias, body)

    assert alias != url
    assert first.status_code == 302
    assert second.status_code == 302
    assert second["Location"] == first["Location"]
    assert _comments(case, people.agent_a) == 1


# The key lifetime setting


def _settings_import(hours: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OSCM_IDEMPOTENCY_KEY_HOURS": hours}
    return subprocess.run(
        [sys.executable, "-c", "import oscm.settings"],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("hours", ["0", "-5"])
def test_key_hours_below_one_rejected(hours):
    result = _settings_import(hours)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert f"OSCM_IDEMPOTENCY_KEY_HOURS={hours} is invalid" in result.stderr


def test_key_hours_one_accepted():
    result = _settings_import("1")

    assert result.returncode == 0, result.stderr


# Chunked API bodies without a Content-Length


@pytest.fixture
def feedback_client():
    account = get_user_model().objects.create_user("chunked", password="pw-123456789")
    account.user_permissions.add(Permission.objects.get(codename="add_feedback"))
    return _api_client(account)


def _post_chunked(client: APIClient, method: str, url: str, body: object, **extra):
    # The test client always sets CONTENT_LENGTH, so an empty value is used
    # in place of the missing one of a WSGI server such as gunicorn.
    send = getattr(client, method.lower())
    return send(
        url,
        json.dumps(body),
        content_type="application/json",
        HTTP_TRANSFER_ENCODING=extra.pop("transfer_encoding", "chunked"),
        CONTENT_LENGTH=extra.pop("content_length", ""),
    )


@pytest.mark.django_db
@pytest.mark.parametrize("coding", ["chunked", "Chunked", "gzip, chunked"])
def test_chunked_feedback_411(feedback_client, coding):
    response = _post_chunked(
        feedback_client, "POST", "/api/v1/feedback/", FEEDBACK, transfer_encoding=coding
    )

    assert response.status_code == 411
    assert "Content-Length" in response.json()["detail"]
    assert Feedback.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_chunked_api_methods_411(people, method):
    client = _api_client(people.admin)

    response = _post_chunked(
        client, method, f"/api/v1/teams/{people.team_a.pk}/", {"name": "Renamed"}
    )

    assert response.status_code == 411
    assert response["Content-Type"] == "application/json"


@pytest.mark.django_db
def test_chunked_with_length_runs(feedback_client):
    body = json.dumps(FEEDBACK)

    response = _post_chunked(
        feedback_client,
        "POST",
        "/api/v1/feedback/",
        FEEDBACK,
        content_length=str(len(body)),
    )

    assert response.status_code == 201
    assert Feedback.objects.count() == 1


def _middleware_response(method: str, path: str, transfer_encoding: str | None):
    request = RequestFactory().generic(method, path, b"{}", "application/json")
    del request.META["CONTENT_LENGTH"]
    if transfer_encoding is not None:
        request.META["HTTP_TRANSFER_ENCODING"] = transfer_encoding
    middleware = ChunkedApiBodyMiddleware(lambda _request: HttpResponse("passed"))
    return middleware(request)


def test_chunked_middleware_without_length_411():
    response = _middleware_response("POST", "/api/v1/feedback/", "chunked")

    assert response.status_code == 411


@pytest.mark.parametrize(
    ("method", "path", "transfer_encoding"),
    [
        ("GET", "/api/v1/feedback/", "chunked"),
        ("DELETE", "/api/v1/teams/1/", "chunked"),
        ("POST", "/app/cases/1/comment/", "chunked"),
        ("POST", "/api/v1/feedback/", None),
        ("POST", "/api/v1/feedback/", "gzip"),
    ],
)
def test_chunked_middleware_passes_others(method, path, transfer_encoding):
    response = _middleware_response(method, path, transfer_encoding)

    assert response.status_code == 200
    assert response.content == b"passed"
