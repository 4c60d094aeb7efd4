"""Privacy requests of customers: erasure of their personal data, and export."""

import logging
import secrets
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from .models import Customer, CustomerErasure, Feedback

logger = logging.getLogger(__name__)

# Text put in place of erased free text on cases and timelines, so each
# entry still shows that something was written.
ERASED_TEXT = "[erased]"


def customer_erase(
    *, customer: Customer, requested_by: AbstractBaseUser | None, reason: str = ""
) -> CustomerErasure:
    """Erase a customer's personal data and free text, keeping the statistics.

    Blanks name, email and time zone, replaces the external id with an
    ``erased-<random>`` pseudonym and opts the customer out of surveys.
    Feedback comments and raw input are emptied, and the bodies of every
    timeline entry and the resolution notes of the customer's cases become
    "[erased]". Scores, kinds, dates, sentiment, topics, cases and the
    metric rollups stay. Records a CustomerErasure row and a
    ``customer_erased`` event on each case, in one transaction.

    Idempotent: a customer already erased is left alone and the existing
    record is returned. The customer row is locked, so two concurrent
    requests erase once.
    """
    from cases.models import Case

    with transaction.atomic():
        locked = Customer.objects.select_for_update().get(pk=customer.pk)
        if locked.erased_at is not None:
            existing = locked.erasures.order_by("-erased_at", "-pk").first()
            if existing is not None:
                return existing

        now = timezone.now()
        feedback_count = Feedback.objects.filter(customer=locked).update(
            comment="", raw={}
        )
        case_ids = list(
            Case.objects.filter(customer=locked).values_list("pk", flat=True)
        )
        _cases_erase_text(case_ids=case_ids, actor=requested_by, now=now)
        locked.name = ""
        locked.email = ""
        locked.time_zone = ""
        locked.external_id = f"erased-{secrets.token_hex(8)}"
        locked.is_opted_out = True
        locked.erased_at = now
        locked.save(
            update_fields=[
                "name",
                "email",
                "time_zone",
                "external_id",
                "is_opted_out",
                "erased_at",
            ]
        )
        erasure = CustomerErasure.objects.create(
            customer=locked,
            requested_by=requested_by,
            reason=reason,
            feedback_count=feedback_count,
            erased_at=now,
        )

    customer.refresh_from_db()
    logger.info(
        "customer erased",
        extra={
            "customer_id": locked.pk,
            "erasure_id": erasure.pk,
            "feedback_count": feedback_count,
            "case_count": len(case_ids),
        },
    )
    return erasure


def _cases_erase_text(
    *, case_ids: list[int], actor: AbstractBaseUser | None, now: datetime
) -> None:
    """Replace the free text on the cases and their timelines, then add a
    ``customer_erased`` event to each."""
    from cases.models import Case, CaseEvent

    if not case_ids:
        return
    events = CaseEvent.objects.filter(case_id__in=case_ids)
    # CaseEvent.save() rejects changes to a stored event, because the
    # timeline is append-only. Erasure is the one sanctioned exception, so it
    # rewrites the rows with queryset updates, which bypass save().
    events.exclude(body="").update(body=ERASED_TEXT)
    # A resolution also stores its note as [old, new] in the event changes.
    for event in events.filter(changes__has_key="resolution_note"):
        changes = {**event.changes, "resolution_note": [ERASED_TEXT, ERASED_TEXT]}
        CaseEvent.objects.filter(pk=event.pk).update(changes=changes)
    Case.objects.filter(pk__in=case_ids).exclude(resolution_note="").update(
        resolution_note=ERASED_TEXT
    )
    # NOTE: the reason a lead gave when moving a case is also copied into
    # Case.routing_reason ("moved by <user>: <reason>") and stays there.
    CaseEvent.objects.bulk_create(
        CaseEvent(
            case_id=case_id,
            actor=actor,
            kind=CaseEvent.Kind.CUSTOMER_ERASED,
            body="The customer's personal data and free text were erased on request.",
            created_at=now,
        )
        for case_id in case_ids
    )


def customer_export(*, customer: Customer) -> dict:
    """Return everything stored about a customer as a JSON-serialisable dict.

    Covers the profile, every feedback with its scores, comments, dates and
    topics, every case with its state and timeline, and the erasure records.
    Staff users who acted on the cases are left out: they are not the
    customer's data.
    """
    feedback = (
        Feedback.objects.filter(customer=customer)
        .select_related("primary_topic")
        .prefetch_related("topics")
        .order_by("occurred_at", "pk")
    )
    return {
        "profile": _customer_profile(customer),
        "feedback": [_feedback_data(row) for row in feedback],
        "cases": _customer_cases(customer),
        "erasures": [
            {"erased_at": _iso(row.erased_at), "reason": row.reason}
            for row in customer.erasures.order_by("erased_at", "pk")
        ],
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _customer_profile(customer: Customer) -> dict:
    return {
        "id": customer.pk,
        "external_id": customer.external_id,
        "name": customer.name,
        "email": customer.email,
        "language": customer.language,
        "segment": customer.segment,
        "time_zone": customer.time_zone,
        "is_opted_out": customer.is_opted_out,
        "created_at": _iso(customer.created_at),
        "erased_at": _iso(customer.erased_at),
    }


def _feedback_data(feedback: Feedback) -> dict:
    return {
        "id": feedback.pk,
        "kind": feedback.kind,
        "score": feedback.score,
        "comment": feedback.comment,
        "source": feedback.source,
        "external_id": feedback.external_id,
        "touchpoint": feedback.touchpoint,
        "product": feedback.product,
        "language": feedback.language,
        "occurred_at": _iso(feedback.occurred_at),
        "received_at": _iso(feedback.received_at),
        "sentiment": feedback.sentiment,
        "sentiment_label": feedback.sentiment_label,
        "primary_topic": feedback.primary_topic.slug
        if feedback.primary_topic
        else None,
        "topics": sorted(topic.slug for topic in feedback.topics.all()),
        "raw": feedback.raw,
    }


def _customer_cases(customer: Customer) -> list[dict]:
    from cases.models import Case

    cases = (
        Case.objects.filter(customer=customer)
        .select_related("team", "topic", "root_cause")
        .prefetch_related("events", "casefeedback_set")
        .order_by("opened_at", "pk")
    )
    return [
        {
            "id": case.pk,
            "state": case.state,
            "priority": case.priority,
            "team": case.team.name,
            "topic": case.topic.slug if case.topic else None,
            "opened_at": _iso(case.opened_at),
            "first_response_at": _iso(case.first_response_at),
            "resolved_at": _iso(case.resolved_at),
            "closed_at": _iso(case.closed_at),
            "root_cause": case.root_cause.name if case.root_cause else None,
            "resolution_note": case.resolution_note,
            "feedback_ids": [link.feedback_id for link in case.casefeedback_set.all()],
            "timeline": [
                {
                    "created_at": _iso(event.created_at),
                    "kind": event.kind,
                    "changes": event.changes,
                    "body": event.body,
                    "visibility": event.visibility,
                    "channel": event.channel,
                    "outcome": event.outcome,
                }
                for event in case.events.all()
            ],
        }
        for case in cases
    ]
