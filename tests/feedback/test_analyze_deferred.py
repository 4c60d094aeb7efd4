"""Analysis of feedback stored without it, as the bulk import stores it."""

import itertools
import os

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from cases.models import Case
from feedback.models import Feedback, FeedbackTopic, MetricRollup, Topic, TopicKeyword
from feedback.rollups import rollup_rebuild, rollup_record
from feedback.services import feedback_analyze
from feedback.tasks import feedback_analyze_task
from tests.cases.factories import CustomerFactory
from tests.threads import run_at_once

REQUIRE_SERVICES = os.environ.get("OSCM_REQUIRE_SERVICES") == "1"

DELIVERY_COMPLAINT = "The courier lost my parcel, terrible and awful, never again"
PRICE_AND_DELIVERY = "Too expensive for the price and the delivery was late"

_external_ids = itertools.count()


def stored_unanalysed(**fields) -> Feedback:
    """Store feedback as the bulk import does: no analysis, no topics, and
    only its all-topics rollup row counted. Scored rows are evaluated."""
    values = {
        "customer": CustomerFactory(),
        "kind": Feedback.Kind.RATING,
        "score": 1,
        "source": Feedback.Source.REVIEW,
        "touchpoint": "app",
        "comment": DELIVERY_COMPLAINT,
        "external_id": f"bulk-{next(_external_ids)}",
    }
    values.update(fields)
    if values["score"] is not None:
        values.setdefault("evaluated_at", timezone.now())
    feedback = Feedback.objects.create(**values)
    rollup_record(
        [
            (
                feedback.occurred_at,
                feedback.kind,
                feedback.source,
                feedback.touchpoint,
                (),
                feedback.score,
            )
        ]
    )
    return feedback


def rollup_counts() -> dict[tuple, int]:
    return {
        (
            row.day,
            row.kind,
            row.source,
            row.touchpoint,
            row.topic_key,
            row.score,
        ): row.count
        for row in MetricRollup.objects.exclude(count=0)
    }


def rollups_rebuilt() -> dict[tuple, int]:
    rollup_rebuild()
    return rollup_counts()


@pytest.mark.django_db
def test_analyze_stores_language_sentiment_topics():
    delivery = Topic.objects.get(slug="delivery")
    feedback = stored_unanalysed()

    assert feedback_analyze(feedback_ids=[feedback.pk]) == 1

    feedback.refresh_from_db()
    assert feedback.analyzed_at is not None
    assert feedback.language == "en"
    assert feedback.sentiment < 0
    assert feedback.sentiment_label == "negative"
    assert feedback.primary_topic == delivery
    assert list(feedback.topics.all()) == [delivery]


@pytest.mark.django_db
def test_analyze_keeps_stored_language():
    feedback = stored_unanalysed(language="pt")

    feedback_analyze(feedback_ids=[feedback.pk])

    feedback.refresh_from_db()
    assert feedback.language == "pt"


@pytest.mark.django_db
def test_analyze_adds_topic_rollups():
    price = Topic.objects.get(slug="price")
    delivery = Topic.objects.get(slug="delivery")
    rows = [stored_unanalysed(comment=PRICE_AND_DELIVERY, score=2) for _ in range(3)]

    feedback_analyze(feedback_ids=[row.pk for row in rows])

    assert MetricRollup.objects.get(topic_key=price.pk).count == 3
    assert MetricRollup.objects.get(topic_key=delivery.pk).count == 3
    assert MetricRollup.objects.get(topic_key=0).count == 3
    assert rollup_counts() == rollups_rebuilt()


@pytest.mark.django_db
def test_analyze_twice_counts_once():
    rows = [
        stored_unanalysed(comment=PRICE_AND_DELIVERY, score=score)
        for score in (1, 2, 5)
    ]
    ids = [row.pk for row in rows]

    assert feedback_analyze(feedback_ids=ids) == 3
    stamps = list(Feedback.objects.order_by("pk").values_list("analyzed_at", flat=True))
    assert feedback_analyze(feedback_ids=ids) == 0

    assert (
        list(Feedback.objects.order_by("pk").values_list("analyzed_at", flat=True))
        == stamps
    )
    assert FeedbackTopic.objects.count() == 6
    assert rollup_counts() == rollups_rebuilt()


@pytest.mark.django_db
def test_analyze_task_twice_analyses_once():
    rows = [stored_unanalysed() for _ in range(4)]
    ids = [row.pk for row in rows]

    feedback_analyze_task.delay(ids)
    feedback_analyze_task.delay(list(reversed(ids)))

    assert not Feedback.objects.filter(analyzed_at__isnull=True).exists()
    assert FeedbackTopic.objects.count() == 4
    assert rollup_counts() == rollups_rebuilt()


@pytest.mark.django_db
def test_analyze_skips_missing_and_analysed_ids():
    done = stored_unanalysed(analyzed_at=timezone.now())
    pending = stored_unanalysed()

    assert feedback_analyze(feedback_ids=[done.pk, pending.pk, 999_999]) == 1
    assert feedback_analyze(feedback_ids=[]) == 0

    assert not FeedbackTopic.objects.filter(feedback=done).exists()


@pytest.mark.django_db
def test_analyze_queues_only_unevaluated_rows(django_capture_on_commit_callbacks):
    scored = stored_unanalysed()
    text = stored_unanalysed(kind=Feedback.Kind.TEXT, score=None)

    with django_capture_on_commit_callbacks() as callbacks:
        feedback_analyze(feedback_ids=[scored.pk, text.pk])

    assert len(callbacks) == 1
    assert callbacks[0].args == ([text.pk],)


@pytest.mark.django_db
def test_analyze_then_negative_text_opens_case(django_capture_on_commit_callbacks):
    delivery = Topic.objects.get(slug="delivery")
    text = stored_unanalysed(
        kind=Feedback.Kind.TEXT, score=None, source=Feedback.Source.SOCIAL
    )

    with django_capture_on_commit_callbacks(execute=True):
        feedback_analyze(feedback_ids=[text.pk])

    text.refresh_from_db()
    case = Case.objects.get(trigger_feedback=text)
    assert text.evaluated_at is not None
    assert case.rule.name == "Strongly negative text"
    assert case.topic == delivery
    assert case.dedup_key == f"c{text.customer_id}:t{delivery.pk}"


@pytest.mark.django_db
def test_analyze_queries_constant():
    small = [stored_unanalysed() for _ in range(2)]
    large = [stored_unanalysed() for _ in range(12)]

    with CaptureQueriesContext(connection) as small_queries:
        feedback_analyze(feedback_ids=[row.pk for row in small])
    with CaptureQueriesContext(connection) as large_queries:
        feedback_analyze(feedback_ids=[row.pk for row in large])

    assert len(large_queries) == len(small_queries)


@pytest.mark.django_db
def test_analyze_reads_changed_keywords():
    price = Topic.objects.get(slug="price")
    first = stored_unanalysed(comment="Where is my zorbnak")
    second = stored_unanalysed(comment="Where is my zorbnak")
    feedback_analyze(feedback_ids=[first.pk])

    TopicKeyword.objects.create(topic=price, language="en", phrase="zorbnak")
    feedback_analyze(feedback_ids=[second.pk])

    first.refresh_from_db()
    second.refresh_from_db()
    assert first.primary_topic_id != price.pk
    assert second.primary_topic_id == price.pk


def _analyze_in_threads(id_lists: list[list[int]]) -> list[int]:
    return run_at_once(lambda ids: feedback_analyze(feedback_ids=ids), id_lists)


@pytest.mark.django_db(transaction=True)
def test_analyze_overlapping_calls_count_once():
    if connection.vendor != "postgresql":
        if REQUIRE_SERVICES:
            pytest.fail(
                "OSCM_REQUIRE_SERVICES=1 but the tests do not run on PostgreSQL"
            )
        pytest.skip("row locking races need PostgreSQL; SQLite writes one at a time")
    rows = [
        stored_unanalysed(comment=PRICE_AND_DELIVERY, score=1 + n % 5)
        for n in range(300)
    ]
    ids = [row.pk for row in rows]

    results = _analyze_in_threads([ids, ids[100:] + ids[:100], list(reversed(ids))])

    assert sum(results) == 300
    assert not Feedback.objects.filter(analyzed_at__isnull=True).exists()
    assert FeedbackTopic.objects.count() == 600
    assert rollup_counts() == rollups_rebuilt()
