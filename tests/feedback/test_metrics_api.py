from datetime import UTC, datetime

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from feedback.models import Feedback
from feedback.rollups import rollup_record

from .metric_data import topics_create

URL = "/api/v1/metrics/"


@pytest.fixture
def client():
    user = get_user_model().objects.create_user(username="analyst", password="x")
    api_client = APIClient()
    api_client.force_authenticate(user=user)
    return api_client


@pytest.fixture
def csat_feedback():
    """Store four CSAT responses of the topic metric-test-alpha, in two months."""
    topic = topics_create()[0]
    responses = [(1, 5), (1, 4), (1, 2), (3, 3)]
    entries = []
    for index, (month, score) in enumerate(responses):
        occurred_at = datetime(2025, month, 5, 9, tzinfo=UTC)
        feedback = Feedback.objects.create(
            kind="csat",
            score=score,
            source="survey",
            touchpoint="delivery",
            occurred_at=occurred_at,
            external_id=f"api-{index}",
        )
        feedback.topics.add(topic)
        entries.append((occurred_at, "csat", "survey", "delivery", [topic.id], score))
    rollup_record(entries)


@pytest.mark.django_db
def test_metrics_api_json_shape(client, csat_feedback):
    response = client.get(URL, {"kind": "csat"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "kind",
        "n",
        "score",
        "margin",
        "satisfied",
        "neutral",
        "dissatisfied",
        "mean",
        "mean_margin",
        "sd",
    }
    assert body["n"] == 4
    assert body["score"] == 50.0
    assert body["mean"] == 3.5


@pytest.mark.django_db
def test_metrics_api_by_month_with_filters(client, csat_feedback):
    query = {
        "kind": "csat",
        "by": "month",
        "touchpoint": "delivery",
        "topic": "metric-test-alpha",
        "since": "2025-01-01",
        "until": "2025-03-31",
    }
    response = client.get(URL, query)
    assert response.status_code == 200
    periods = response.json()["periods"]
    assert [p["period"] for p in periods] == ["2025-01-01", "2025-03-01"]
    assert [p["n"] for p in periods] == [3, 1]


@pytest.mark.django_db
def test_metrics_api_empty_set_gives_null_score(client):
    response = client.get(URL, {"kind": "nps", "touchpoint": "nowhere"})
    assert response.status_code == 200
    body = response.json()
    assert body["n"] == 0
    assert body["score"] is None
    assert body["margin"] is None


@pytest.mark.django_db
def test_metrics_api_requires_authentication():
    response = APIClient().get(URL, {"kind": "nps"})
    assert response.status_code in (401, 403)


@pytest.mark.django_db
def test_metrics_api_rejects_bad_kind(client):
    response = client.get(URL, {"kind": "happiness"})
    assert response.status_code == 400
    message = response.json()["kind"][0]
    assert '"happiness"' in message
    assert "nps, csat, ces, rating" in message


@pytest.mark.django_db
def test_metrics_api_requires_kind(client):
    response = client.get(URL)
    assert response.status_code == 400
    assert "kind" in response.json()


@pytest.mark.django_db
def test_metrics_api_rejects_bad_date(client):
    response = client.get(URL, {"kind": "nps", "since": "01/02/2025"})
    assert response.status_code == 400
    message = response.json()["since"][0]
    assert '"01/02/2025"' in message
    assert "YYYY-MM-DD" in message


@pytest.mark.django_db
def test_metrics_api_rejects_reversed_range(client):
    query = {"kind": "nps", "since": "2025-02-01", "until": "2025-01-01"}
    response = client.get(URL, query)
    assert response.status_code == 400
    assert "2025-02-01" in response.json()["since"][0]


@pytest.mark.django_db
def test_metrics_api_unknown_topic_lists_known(client, csat_feedback):
    response = client.get(URL, {"kind": "csat", "topic": "weather"})
    assert response.status_code == 400
    body = response.json()
    assert "'weather'" in body["detail"]
    assert "metric-test-alpha" in body["detail"]
    assert body["topic"] == "weather"
