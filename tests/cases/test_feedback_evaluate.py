import math
from functools import partial

import pytest
from django.db import connection, transaction
from django.db.models import AutoField
from django.test.utils import CaptureQueriesContext

from cases import selectors
from cases.models import Case, CaseEvent, CaseFeedback, CaseRule, Priority
from cases.seeds import DEFAULT_CASE_RULES
from cases.services import EvaluationResult, feedback_evaluate
from cases.tasks import feedback_evaluate_task
from cases.workflow import case_events_record_opening
from feedback.models import Feedback

from .factories import CustomerFactory, FeedbackFactory, TeamMemberFactory

pytestmark = pytest.mark.django_db


def evaluate(*feedback: Feedback) -> EvaluationResult:
    return feedback_evaluate(feedback_ids=[row.pk for row in feedback])


def _score_rule_cases():
    for position, name, kind, low, high, _sentiment, priority in DEFAULT_CASE_RULES:
        if kind == Feedback.Kind.TEXT:
            continue
        for score in sorted({low, high}):
            yield pytest.param(kind, score, name, priority, id=f"{kind}-{score}")


@pytest.mark.parametrize(
    ("kind", "score", "rule_name", "priority"), list(_score_rule_cases())
)
def test_seeded_score_rule_opens_case(kind, score, rule_name, priority):
    feedback = FeedbackFactory(kind=kind, score=score)

    result = evaluate(feedback)

    case = Case.objects.get(trigger_feedback=feedback)
    assert result == EvaluationResult(evaluated=1, cases_opened=1, attached=0)
    assert case.rule.name == rule_name
    assert case.priority == priority
    assert f"score {score} " in case.rule_reason
    assert case.rule_reason.endswith(f"(rule '{rule_name}')")
    assert case.is_open
    assert case.customer_id == feedback.customer_id


@pytest.mark.parametrize(
    ("kind", "score", "reason"),
    [
        ("nps", 2, "NPS score 2 is within 0-3 (rule 'NPS detractor 0-3')"),
        ("nps", 6, "NPS score 6 is within 4-6 (rule 'NPS detractor 4-6')"),
        ("csat", 1, "CSAT score 1 equals 1 (rule 'CSAT very dissatisfied (1)')"),
        ("ces", 2, "CES score 2 is within 1-2 (rule 'CES very difficult (1-2)')"),
        ("rating", 2, "Rating score 2 equals 2 (rule 'Two-star rating')"),
    ],
)
def test_rule_reason_wording(kind, score, reason):
    feedback = FeedbackFactory(kind=kind, score=score)

    evaluate(feedback)

    assert Case.objects.get(trigger_feedback=feedback).rule_reason == reason


@pytest.mark.parametrize(
    ("kind", "score"),
    [("nps", 7), ("nps", 10), ("csat", 3), ("csat", 5), ("ces", 4), ("rating", 3)],
)
def test_score_outside_unhappy_band_opens_nothing(kind, score):
    feedback = FeedbackFactory(kind=kind, score=score)

    result = evaluate(feedback)

    assert result == EvaluationResult(evaluated=1, cases_opened=0, attached=0)
    assert not Case.objects.exists()
    feedback.refresh_from_db()
    assert feedback.evaluated_at is not None


@pytest.mark.parametrize("kind", ["nps", "csat", "ces", "rating"])
def test_skipped_question_opens_nothing(kind):
    feedback = FeedbackFactory(
        kind=kind, score=None, comment="No answer", sentiment=-0.9
    )

    result = evaluate(feedback)

    assert result.evaluated == 1
    assert result.cases_opened == 0


def test_text_rule_matches_negative_sentiment():
    feedback = FeedbackFactory(
        kind="text", score=None, comment="Awful.", sentiment=-0.72
    )

    evaluate(feedback)

    case = Case.objects.get(trigger_feedback=feedback)
    assert case.rule.name == "Strongly negative text"
    assert case.priority == Priority.NORMAL
    assert case.rule_reason == (
        "sentiment -0.72 is at most -0.5 (rule 'Strongly negative text')"
    )


@pytest.mark.parametrize("sentiment", [-0.49, 0.0, 0.8, None])
def test_text_rule_ignores_milder_sentiment(sentiment):
    feedback = FeedbackFactory(
        kind="text", score=None, comment="Fine.", sentiment=sentiment
    )

    result = evaluate(feedback)

    assert result.evaluated == 1
    assert result.cases_opened == 0


def test_text_rule_boundary_sentiment_matches():
    feedback = FeedbackFactory(kind="text", score=None, comment="Bad.", sentiment=-0.5)

    assert evaluate(feedback).cases_opened == 1


def test_unanalysed_text_left_for_later():
    feedback = FeedbackFactory(
        kind="text", score=None, comment="Terrible", sentiment=None, analyzed_at=None
    )

    result = evaluate(feedback)

    feedback.refresh_from_db()
    assert result.evaluated == 0
    assert feedback.evaluated_at is None

    Feedback.objects.filter(pk=feedback.pk).update(
        sentiment=-0.9, analyzed_at=feedback.received_at
    )
    assert evaluate(feedback).cases_opened == 1


def test_unanalysed_score_feedback_evaluated_at_once():
    feedback = FeedbackFactory(kind="nps", score=1, comment="Bad", analyzed_at=None)

    assert evaluate(feedback).cases_opened == 1


def test_inactive_rule_skipped():
    CaseRule.objects.filter(name="NPS detractor 0-3").update(is_active=False)
    feedback = FeedbackFactory(kind="nps", score=1)

    assert evaluate(feedback).cases_opened == 0


def test_same_customer_and_topic_attaches(topics):
    customer = CustomerFactory()
    first = FeedbackFactory(
        customer=customer, score=2, primary_topic=topics["delivery"]
    )
    second = FeedbackFactory(
        customer=customer, score=5, primary_topic=topics["delivery"]
    )

    evaluate(first)
    result = evaluate(second)

    case = Case.objects.get()
    assert result == EvaluationResult(evaluated=1, cases_opened=0, attached=1)
    assert case.trigger_feedback == first
    assert set(case.feedback.all()) == {first, second}
    assert case.dedup_key == f"c{customer.pk}:t{topics['delivery'].pk}"


def test_same_customer_and_topic_in_one_batch_attaches(topics):
    customer = CustomerFactory()
    rows = FeedbackFactory.create_batch(
        3, customer=customer, score=0, primary_topic=topics["price"]
    )

    result = evaluate(*rows)

    case = Case.objects.get()
    assert result == EvaluationResult(evaluated=3, cases_opened=1, attached=2)
    assert case.trigger_feedback == rows[0]
    assert case.feedback.count() == 3


def test_other_topic_opens_second_case(topics):
    customer = CustomerFactory()
    evaluate(
        FeedbackFactory(customer=customer, score=2, primary_topic=topics["delivery"])
    )
    evaluate(FeedbackFactory(customer=customer, score=2, primary_topic=topics["price"]))

    assert Case.objects.filter(customer=customer).count() == 2


def test_closed_case_not_reused(topics):
    customer = CustomerFactory()
    evaluate(
        FeedbackFactory(customer=customer, score=2, primary_topic=topics["delivery"])
    )
    Case.objects.update(is_open=False, state=Case.State.CLOSED)

    result = evaluate(
        FeedbackFactory(customer=customer, score=2, primary_topic=topics["delivery"])
    )

    assert result.cases_opened == 1
    assert Case.objects.filter(is_open=True).count() == 1
    assert Case.objects.count() == 2


def test_feedback_without_customer_never_groups():
    rows = FeedbackFactory.create_batch(2, customer=None, score=1)

    result = evaluate(*rows)

    assert result.cases_opened == 2
    assert sorted(Case.objects.values_list("dedup_key", flat=True)) == sorted(
        f"f{row.pk}" for row in rows
    )


def test_evaluating_twice_opens_nothing_more():
    rows = [FeedbackFactory(score=1), FeedbackFactory(kind="csat", score=2)]

    first = evaluate(*rows)
    second = evaluate(*rows)

    assert first.cases_opened == 2
    assert second == EvaluationResult()
    assert Case.objects.count() == 2
    assert CaseFeedback.objects.count() == 2


def test_concurrent_open_case_attaches_instead(monkeypatch, topics):
    """A case committed by another worker after the dedup lookup makes the
    bulk insert fail on the partial unique index; the feedback attaches."""
    customer = CustomerFactory()
    evaluate(FeedbackFactory(customer=customer, score=2, primary_topic=topics["price"]))
    other = FeedbackFactory(score=3)
    monkeypatch.setattr(selectors, "case_open_ids_by_dedup_key", lambda dedup_keys: {})

    late = FeedbackFactory(customer=customer, score=1, primary_topic=topics["price"])
    result = evaluate(late, other)

    assert result == EvaluationResult(evaluated=2, cases_opened=1, attached=1)
    existing = Case.objects.get(customer=customer)
    assert set(existing.feedback.all()) == {existing.trigger_feedback, late}
    assert Case.objects.filter(trigger_feedback=other).exists()


def test_case_topic_is_primary_topic(topics):
    feedback = FeedbackFactory(score=0, primary_topic=topics["payment-checkout"])

    evaluate(feedback)

    assert Case.objects.get().topic == topics["payment-checkout"]


def test_on_commit_queue_evaluates(django_capture_on_commit_callbacks):
    """The intake queues the task after its transaction commits."""
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with transaction.atomic():
            rows = FeedbackFactory.create_batch(2, score=1)
            transaction.on_commit(
                partial(feedback_evaluate_task.delay, [row.pk for row in rows])
            )
        assert not Case.objects.exists()

    assert len(callbacks) == 1
    assert Case.objects.count() == 2


def _extra_bulk_insert_queries(model, rows: int) -> int:
    """Return how many more INSERTs than one the backend needs for ``rows``
    rows: SQLite caps a statement at 999 parameters, PostgreSQL needs one."""
    fields = [
        field
        for field in model._meta.concrete_fields
        if not isinstance(field, AutoField)
    ]
    per_query = connection.ops.bulk_batch_size(fields, [None] * rows)
    return math.ceil(rows / per_query) - 1


def _unhappy_batch(size: int, topics) -> list[int]:
    """``size`` new detractors, plus one that attaches to an open case."""
    rows = FeedbackFactory.create_batch(size, score=2, primary_topic=topics["delivery"])
    opened = FeedbackFactory(score=1, primary_topic=topics["price"])
    evaluate(opened)
    attaching = FeedbackFactory(
        customer=opened.customer, score=3, primary_topic=topics["price"]
    )
    return [row.pk for row in rows] + [attaching.pk]


def test_query_count_flat_in_batch_size(django_assert_max_num_queries, teams, topics):
    TeamMemberFactory(team=teams["Customer Service"], max_open_cases=1000)
    TeamMemberFactory(team=teams["Product"], max_open_cases=1000)
    small = _unhappy_batch(10, topics)
    large = _unhappy_batch(200, topics)

    with CaptureQueriesContext(connection) as small_queries:
        small_result = feedback_evaluate(feedback_ids=small)
    # The case events (200 opened, 1 feedback attached) are one bulk insert
    # too, which SQLite splits the same way.
    limit = (
        len(small_queries)
        + _extra_bulk_insert_queries(Case, 200)
        + _extra_bulk_insert_queries(CaseEvent, 201)
    )
    with django_assert_max_num_queries(limit):
        large_result = feedback_evaluate(feedback_ids=large)

    assert small_result == EvaluationResult(evaluated=11, cases_opened=10, attached=1)
    assert large_result == EvaluationResult(evaluated=201, cases_opened=200, attached=1)


def test_opening_queues_case_opened_webhook(teams, topics):
    from cases.models import OutboxMessage, WebhookEndpoint

    WebhookEndpoint.objects.create(
        name="chat", url="http://127.0.0.1:9/hook", secret="s", events=["case.opened"]
    )
    feedback = FeedbackFactory(score=1, primary_topic=topics["price"])

    feedback_evaluate(feedback_ids=[feedback.pk])
    feedback_evaluate(feedback_ids=[feedback.pk])

    message = OutboxMessage.objects.get(channel=OutboxMessage.Channel.WEBHOOK)
    assert message.payload["event"] == "case.opened"
    assert message.payload["body"]["data"]["id"] == Case.objects.get().pk


def _event_fields(event: CaseEvent) -> tuple:
    return (
        event.case_id,
        event.actor_id,
        event.kind,
        event.changes,
        event.body,
        event.visibility,
        event.channel,
        event.outcome,
        event.created_at,
    )


def test_copied_events_match_workflow_events(topics):
    """On PostgreSQL the batch's events are COPY'd; they must equal the rows
    that ``case_events_record_opening`` writes for the same batch."""
    if connection.vendor != "postgresql":
        pytest.skip("the COPY path runs on PostgreSQL only")
    first = FeedbackFactory(score=1, primary_topic=topics["price"])
    evaluate(first)
    attaching = FeedbackFactory(
        customer=first.customer, score=2, primary_topic=topics["price"]
    )
    new = FeedbackFactory(score=0, primary_topic=topics["delivery"])
    last_event = CaseEvent.objects.order_by("pk").last()

    evaluate(attaching, new)

    copied = list(CaseEvent.objects.filter(pk__gt=last_event.pk).order_by("pk"))
    case_events_record_opening(
        opened=[Case.objects.get(trigger_feedback=new)],
        attached=[(Case.objects.get(trigger_feedback=first).pk, attaching.pk)],
        now=copied[0].created_at,
    )
    recorded = list(CaseEvent.objects.filter(pk__gt=copied[-1].pk).order_by("pk"))
    assert [_event_fields(event) for event in copied] == [
        _event_fields(event) for event in recorded
    ]


def test_batch_links_trigger_and_attached_feedback(topics):
    first = FeedbackFactory(score=1, primary_topic=topics["price"])
    evaluate(first)
    attaching = FeedbackFactory(
        customer=first.customer, score=2, primary_topic=topics["price"]
    )
    new = FeedbackFactory(score=0, primary_topic=topics["delivery"])

    evaluate(attaching, new)

    links = CaseFeedback.objects.filter(feedback__in=[attaching, new])
    assert {(link.case.trigger_feedback_id, link.feedback_id) for link in links} == {
        (first.pk, attaching.pk),
        (new.pk, new.pk),
    }
    assert Feedback.objects.get(pk=attaching.pk).evaluated_at is not None
