"""Cases opened before their trigger feedback was analysed get its topic."""

import itertools
import logging

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from cases import selectors
from cases.models import Case, CaseEvent, RoutingRule
from cases.services import feedback_evaluate
from cases.triage import TriageResult, case_triage_after_analysis
from feedback.models import Customer, Feedback
from feedback.services import feedback_analyze

from .factories import CaseFactory, CustomerFactory, FeedbackFactory, TeamMemberFactory

pytestmark = pytest.mark.django_db

DELIVERY_COMPLAINT = "The courier lost my parcel, terrible and awful, never again"

_external_ids = itertools.count()


def opened_without_topic(
    *,
    customer: Customer,
    touchpoint: str = "website",
    comment: str = DELIVERY_COMPLAINT,
) -> Case:
    """Open a case as the bulk import does: from a one-star rating stored
    without analysis, so it has no topic and is routed by touchpoint."""
    feedback = Feedback.objects.create(
        customer=customer,
        kind=Feedback.Kind.RATING,
        score=1,
        source=Feedback.Source.REVIEW,
        touchpoint=touchpoint,
        comment=comment,
        external_id=f"bulk-{next(_external_ids)}",
    )
    feedback_evaluate(feedback_ids=[feedback.pk])
    return Case.objects.get(trigger_feedback=feedback)


def analyze(*cases: Case) -> None:
    feedback_analyze(feedback_ids=[case.trigger_feedback_id for case in cases])


def test_opened_case_has_no_topic(teams):
    case = opened_without_topic(customer=CustomerFactory())

    assert case.topic_id is None
    assert case.dedup_key == f"c{case.customer_id}:t0"
    assert case.team == teams["IT"]


def test_triage_sets_topic_and_key(topics):
    case = opened_without_topic(customer=CustomerFactory())

    analyze(case)

    case.refresh_from_db()
    assert case.topic == topics["delivery"]
    assert case.dedup_key == f"c{case.customer_id}:t{topics['delivery'].pk}"


def test_triage_moves_new_unassigned_case(teams, topics):
    case = opened_without_topic(customer=CustomerFactory())
    delivery_rule = RoutingRule.objects.get(topic=topics["delivery"])

    analyze(case)

    case.refresh_from_db()
    event = CaseEvent.objects.get(case=case, kind=CaseEvent.Kind.TEAM_CHANGED)
    assert case.team == teams["Customer Service"]
    assert case.state == Case.State.NEW
    assert case.routing_rule == delivery_rule
    assert case.routing_reason.startswith("topic Delivery matched rule")
    assert case.assignment_reason.startswith("no available agent in Customer Service")
    assert case.sla_policy is not None
    assert case.resolution_due_at is not None
    assert event.actor is None
    assert event.changes == {"team": [teams["IT"].pk, teams["Customer Service"].pk]}


def test_triage_keeps_team_of_assigned_case(teams, topics):
    agent = TeamMemberFactory(team=teams["IT"]).user
    case = opened_without_topic(customer=CustomerFactory())
    assert case.assignee == agent
    routing_reason = case.routing_reason

    analyze(case)

    case.refresh_from_db()
    assert case.topic == topics["delivery"]
    assert case.dedup_key == f"c{case.customer_id}:t{topics['delivery'].pk}"
    assert case.team == teams["IT"]
    assert case.assignee == agent
    assert case.routing_reason == routing_reason
    assert not CaseEvent.objects.filter(
        case=case, kind=CaseEvent.Kind.TEAM_CHANGED
    ).exists()


def test_triage_same_team_records_no_event(teams, topics):
    # No routing rule names the touchpoint "store", so the fallback team,
    # Customer Service, gets the case, as the delivery rule would.
    case = opened_without_topic(customer=CustomerFactory(), touchpoint="store")

    analyze(case)

    case.refresh_from_db()
    assert case.topic == topics["delivery"]
    assert case.team == teams["Customer Service"]
    assert case.routing_rule is None
    assert not CaseEvent.objects.filter(
        case=case, kind=CaseEvent.Kind.TEAM_CHANGED
    ).exists()


def test_triage_keeps_key_held_by_open_case(teams, topics, caplog):
    TeamMemberFactory(team=teams["IT"])
    customer = CustomerFactory()
    held_key = f"c{customer.pk}:t{topics['delivery'].pk}"
    holder = CaseFactory(
        trigger_feedback=FeedbackFactory(
            customer=customer, score=1, primary_topic=topics["delivery"]
        ),
        topic=topics["delivery"],
        dedup_key=held_key,
    )
    # An agent has the case, so it is not folded into the holder.
    case = opened_without_topic(customer=customer)
    assert case.assignee_id is not None

    with caplog.at_level(logging.WARNING, logger="cases.triage"):
        analyze(case)

    case.refresh_from_db()
    holder.refresh_from_db()
    assert case.topic == topics["delivery"]
    assert case.dedup_key == f"c{customer.pk}:t0"
    assert holder.dedup_key == held_key
    assert caplog.records[-1].case_ids == [case.pk]


def test_triage_keeps_key_taken_concurrently(topics, monkeypatch):
    customer = CustomerFactory()
    case = opened_without_topic(customer=customer)
    held_key = f"c{customer.pk}:t{topics['delivery'].pk}"
    CaseFactory(
        trigger_feedback=FeedbackFactory(customer=customer, score=1),
        topic=topics["delivery"],
        dedup_key=held_key,
    )
    lookup = selectors.case_open_ids_by_dedup_key
    calls = []

    # The first look-up misses the other case, as when another transaction
    # inserted it and had not committed yet.
    def look_up_late(*, dedup_keys):
        calls.append(set(dedup_keys))
        return {} if len(calls) == 1 else lookup(dedup_keys=dedup_keys)

    monkeypatch.setattr(selectors, "case_open_ids_by_dedup_key", look_up_late)

    analyze(case)

    case.refresh_from_db()
    assert len(calls) == 2
    assert case.topic == topics["delivery"]
    assert case.dedup_key == f"c{customer.pk}:t0"


def test_triage_skips_feedback_without_topic():
    case = opened_without_topic(
        customer=CustomerFactory(), comment="Everything was fine"
    )

    analyze(case)

    case.refresh_from_db()
    assert case.trigger_feedback.analyzed_at is not None
    assert case.topic_id is None
    assert case.dedup_key == f"c{case.customer_id}:t0"


def test_triage_skips_closed_case(teams):
    case = opened_without_topic(customer=CustomerFactory())
    Case.objects.filter(pk=case.pk).update(is_open=False, state=Case.State.CLOSED)

    analyze(case)

    case.refresh_from_db()
    assert case.topic_id is None
    assert case.team == teams["IT"]


def test_triage_without_customer_keeps_key(topics):
    case = opened_without_topic(customer=None)

    analyze(case)

    case.refresh_from_db()
    assert case.topic == topics["delivery"]
    assert case.dedup_key == f"f{case.trigger_feedback_id}"


def test_triage_result_counts(teams, topics):
    TeamMemberFactory(team=teams["IT"], max_open_cases=1)
    assigned = opened_without_topic(customer=CustomerFactory())
    unassigned = opened_without_topic(customer=CustomerFactory())
    assert assigned.assignee_id is not None
    assert unassigned.assignee_id is None
    Feedback.objects.filter(
        pk__in=[assigned.trigger_feedback_id, unassigned.trigger_feedback_id]
    ).update(primary_topic=topics["delivery"])

    result = case_triage_after_analysis(
        feedback_ids=[assigned.trigger_feedback_id, unassigned.trigger_feedback_id]
    )

    assert result == TriageResult(
        topics_set=2, keys_changed=2, keys_kept=0, rerouted=1, moved=1, assigned=0
    )


def test_triage_queries_constant():
    single = [opened_without_topic(customer=CustomerFactory())]
    several = [opened_without_topic(customer=CustomerFactory()) for _ in range(6)]

    with CaptureQueriesContext(connection) as single_queries:
        analyze(*single)
    with CaptureQueriesContext(connection) as several_queries:
        analyze(*several)

    assert len(several_queries) == len(single_queries)
    assert Case.objects.filter(topic__isnull=True).count() == 0


def test_triage_folds_untouched_case_into_holder(topics):
    customer = CustomerFactory()
    holder = CaseFactory(
        trigger_feedback=FeedbackFactory(
            customer=customer, score=1, primary_topic=topics["delivery"]
        ),
        topic=topics["delivery"],
        dedup_key=f"c{customer.pk}:t{topics['delivery'].pk}",
        state=Case.State.WAITING,
    )
    case = opened_without_topic(customer=customer)
    assert case.assignee_id is None
    feedback_id = case.trigger_feedback_id

    analyze(case)

    case.refresh_from_db()
    holder.refresh_from_db()
    assert case.state == Case.State.CLOSED
    assert case.is_open is False
    assert case.merged_into == holder
    assert case.topic == topics["delivery"]
    assert list(case.feedback.all()) == []
    assert feedback_id in holder.feedback.values_list("pk", flat=True)
    assert holder.state == Case.State.IN_PROGRESS
    kinds = set(holder.events.values_list("kind", flat=True))
    assert {CaseEvent.Kind.FEEDBACK_ATTACHED, CaseEvent.Kind.MERGED} <= kinds
    assert case.events.filter(kind=CaseEvent.Kind.MERGED).exists()
    keys = list(Case.objects.filter(is_open=True, customer=customer).values_list("dedup_key", flat=True))
    assert keys == [holder.dedup_key]


def test_triage_result_counts_folded_case(topics):
    customer = CustomerFactory()
    CaseFactory(
        trigger_feedback=FeedbackFactory(
            customer=customer, score=1, primary_topic=topics["delivery"]
        ),
        topic=topics["delivery"],
        dedup_key=f"c{customer.pk}:t{topics['delivery'].pk}",
    )
    case = opened_without_topic(customer=customer)
    Feedback.objects.filter(pk=case.trigger_feedback_id).update(
        primary_topic=topics["delivery"]
    )

    result = case_triage_after_analysis(feedback_ids=[case.trigger_feedback_id])

    assert result == TriageResult(topics_set=1, keys_changed=0, keys_kept=0, folded=1)
