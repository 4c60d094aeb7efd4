import json

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from cases.models import Case
from feedback.models import Feedback

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/feedback/"


@pytest.fixture
def user():
    account = get_user_model().objects.create_user("integration", password="pw-123456789")
    account.user_permissions.add(Permission.objects.get(codename="add_feedback"))
    return account


@pytest.fixture
def client(user):
    api = APIClient()
    api.force_authenticate(user)
    return api


def detractor(**fields):
    item = {
        "external_id": "s-1",
        "kind": "nps",
        "source": "survey",
        "score": 2,
        "comment": "The courier lost my parcel",
        "customer": "cust-1",
        "email": "cust1@example.com",
        "touchpoint": "delivery",
    }
    item.update(fields)
    return item


def test_post_one_object_creates_feedback_and_case(client):
    response = client.post(URL, detractor(), format="json")
    assert response.status_code == 201
    assert response.json()["results"] == [
        {"index": 0, "id": Feedback.objects.get().id, "status": "created"}
    ]
    case = Case.objects.get()
    assert case.trigger_feedback.external_id == "s-1"
    assert case.customer.email == "cust1@example.com"


def test_post_list_with_invalid_items_keeps_valid(client):
    items = [detractor(external_id="a"), detractor(external_id="b", score=11), {"kind": "nps"}]
    response = client.post(URL, items, format="json")
    body = response.json()
    assert response.status_code == 400
    assert body["created"] == 1
    assert body["rejected"] == 2
    assert body["errors"][0] == {
        "index": 1, "field": "score", "message": "score 11 is outside the nps range 0-10."
    }
    assert body["errors"][1]["index"] == 2
    assert body["errors"][1]["field"] == "source"
    assert Feedback.objects.filter(external_id="a").exists()


def test_post_again_is_duplicate_not_double_counted(client):
    first = client.post(URL, detractor(), format="json").json()
    second = client.post(URL, detractor(), format="json")
    assert second.status_code == 201
    assert second.json()["results"][0] == {
        "index": 0, "id": first["results"][0]["id"], "status": "duplicate"
    }
    assert Feedback.objects.count() == 1
    assert Case.objects.count() == 1


def test_post_without_external_id_retry_is_duplicate(client):
    item = detractor()
    del item["external_id"]
    client.post(URL, item, format="json")
    response = client.post(URL, item, format="json")
    assert response.json()["duplicates"] == 1
    assert Feedback.objects.count() == 1


def test_post_same_item_twice_in_one_list(client):
    response = client.post(URL, [detractor(), detractor()], format="json")
    statuses = [result["status"] for result in response.json()["results"]]
    assert statuses == ["created", "duplicate"]


def test_post_rejects_empty_and_oversized_lists(client):
    assert client.post(URL, [], format="json").status_code == 400
    response = client.post(URL, [detractor(external_id=str(i)) for i in range(1001)], format="json")
    assert response.status_code == 400
    assert "at most 1000" in response.json()["detail"]


def test_post_malformed_json(client):
    response = client.post(URL, "{bad", content_type="application/json")
    assert response.status_code == 400


def test_post_requires_authentication():
    response = APIClient().post(URL, detractor(), format="json")
    assert response.status_code in (401, 403)
    assert Feedback.objects.count() == 0


def test_post_with_token(user):
    token = Token.objects.create(user=user)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert api.post(URL, detractor(), format="json").status_code == 201


def test_session_post_requires_csrf(user):
    api = APIClient(enforce_csrf_checks=True)
    api.login(username="integration", password="pw-123456789")
    assert api.post(URL, detractor(), format="json").status_code == 403


def test_post_unknown_field_rejected(client):
    response = client.post(URL, detractor(coment="typo"), format="json")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "coment"
    assert "'coment' is not a feedback field" in response.json()["errors"][0]["message"]


def test_post_metadata_kept_in_raw(client):
    client.post(URL, detractor(metadata={"order": "A-17"}), format="json")
    assert Feedback.objects.get().raw["metadata"] == {"order": "A-17"}


def test_post_nul_item_rejected_valid_kept(client):
    items = [detractor(external_id="ok"), detractor(external_id="nul", comment="a\x00b")]
    response = client.post(URL, items, format="json")
    assert response.status_code == 400
    assert "NUL character" in response.json()["errors"][0]["message"]
    assert Feedback.objects.filter(external_id="ok").exists()


def test_post_deeply_nested_json_is_400(client):
    body = "[" * 100_000 + "]" * 100_000
    response = client.post(URL, body, content_type="application/json")
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]


def test_post_oversized_body_is_413(client, settings):
    settings.OSCM_API_MAX_BODY_BYTES = 1000
    response = client.post(URL, detractor(comment="x" * 2000), format="json")
    assert response.status_code == 413
    assert "the limit is 1000 bytes" in response.json()["detail"]


def test_post_body_over_django_default_accepted(client):
    # 140 items of 19,000 characters: about 2.7 MB, over Django's default
    # 2.5 MB cap on request bodies and well within the API's limit.
    items = [detractor(external_id=f"big-{number}", comment="x" * 19_000) for number in range(140)]
    response = client.post(URL, items, format="json")
    assert response.status_code == 201
    assert Feedback.objects.count() == 140


def test_post_body_over_django_cap_is_413_json(client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = client.post(URL, detractor(comment="x" * 2000), format="json")
    assert response.status_code == 413
    assert "larger than 1000 bytes" in response.json()["detail"]


def test_post_email_without_customer_groups_cases(client):
    for external_id in ("e1", "e2"):
        item = detractor(external_id=external_id, email="same@example.com")
        del item["customer"]
        client.post(URL, item, format="json")
    assert Case.objects.count() == 1
    assert Case.objects.get().feedback.count() == 2


def test_post_anonymous_gets_401():
    assert APIClient().post(URL, detractor(), format="json").status_code == 401


def test_post_reused_id_with_other_content_rejected(client):
    client.post(URL, detractor(), format="json")
    response = client.post(URL, [detractor(score=9), detractor(external_id="new")], format="json")
    body = response.json()
    assert response.status_code == 400
    assert body["errors"][0]["index"] == 0
    assert body["errors"][0]["field"] == "external_id"
    assert "already stored with a different" in body["errors"][0]["message"]
    assert body["results"] == [{"index": 1, "id": Feedback.objects.get(external_id="new").id, "status": "created"}]
    assert body["duplicates"] == 0
    assert Feedback.objects.get(external_id="s-1").score == 2


def test_post_without_permission_forbidden():
    agent = get_user_model().objects.create_user("agent", password="pw-123456789")
    api = APIClient()
    api.force_authenticate(agent)
    response = api.post(URL, detractor(), format="json")
    assert response.status_code == 403
    assert "Can add feedback" in response.json()["detail"]
    assert Feedback.objects.count() == 0


def test_post_identical_anonymous_items_are_distinct(client):
    item = {"kind": "nps", "source": "survey", "score": 10}
    first = client.post(URL, [item, item], format="json").json()
    again = client.post(URL, [item, item], format="json").json()
    assert first["created"] == 2
    assert again["duplicates"] == 2
    assert Feedback.objects.count() == 2


def test_post_blank_external_ids_are_anonymous(client):
    item = {"kind": "nps", "source": "survey", "score": 10, "external_id": "   "}
    response = client.post(URL, [item, item], format="json").json()
    assert response["created"] == 2
    assert Feedback.objects.count() == 2


def test_post_zero_external_id_kept(client):
    item = {"kind": "nps", "source": "survey", "score": 10}
    first = client.post(URL, {**item, "external_id": 0}, format="json").json()
    again = client.post(URL, {**item, "external_id": "0"}, format="json").json()
    assert first["created"] == 1
    assert again["duplicates"] == 1
    assert Feedback.objects.get().external_id == "0"


def test_post_lone_surrogate_rejected_valid_kept(client):
    good = json.dumps(detractor(external_id="ok"))
    bad = json.dumps(detractor(external_id="bad")).replace(
        '"The courier lost my parcel"', '"lost \\ud800 parcel"'
    )
    response = client.generic("POST", URL, f"[{good}, {bad}]", content_type="application/json")
    body = response.json()
    assert response.status_code == 400
    assert body["created"] == 1
    assert body["errors"][0]["field"] == "comment"
    assert Feedback.objects.filter(external_id="ok").exists()
