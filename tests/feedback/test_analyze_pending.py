from datetime import timedelta

import pytest
from django.utils import timezone

from cases.models import Case
from cases.services import feedback_sweep
from feedback.models import Feedback, MetricRollup, Topic
from feedback.services import feedback_analyze_pending

pytestmark = pytest.mark.django_db


def stored_without_analysis(**fields) -> Feedback:
    values = {
        "kind": "text",
        "source": "social",
        "external_id": "raw-1",
        "comment": "The courier lost my parcel, terrible awful service, never again",
        "received_at": timezone.now() - timedelta(minutes=5),
    }
    values.update(fields)
    return Feedback.objects.create(**values)


def test_analyze_pending_then_sweep_opens_case():
    feedback = stored_without_analysis()

    assert feedback_analyze_pending() == 1
    feedback_sweep(older_than_seconds=0)

    feedback.refresh_from_db()
    assert feedback.analyzed_at is not None
    assert feedback.sentiment_label == "negative"
    assert feedback.primary_topic.slug == "delivery"
    assert Case.objects.filter(trigger_feedback=feedback).exists()


def test_analyze_pending_counts_topics_only_in_rollups():
    delivery = Topic.objects.get(slug="delivery")
    stored_without_analysis(kind="rating", source="review", score=1)

    feedback_analyze_pending()

    assert MetricRollup.objects.filter(topic_key=delivery.pk).get().count == 1
    assert not MetricRollup.objects.filter(topic_key=0).exists()


def test_analyze_pending_skips_recent_and_done_rows():
    stored_without_analysis(received_at=timezone.now())
    stored_without_analysis(external_id="raw-2", analyzed_at=timezone.now())

    assert feedback_analyze_pending(older_than_seconds=60) == 0
    assert feedback_analyze_pending() == 1
    assert feedback_analyze_pending() == 0
