"""Writes on feedback: intake in batches, and corrections."""

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from django.db import connection, transaction
from django.utils import timezone

from oscm.errors import DomainError

from .analysis import Analyzer, TextAnalysis
from .intake import FeedbackInput, parse_score
from .models import Customer, Feedback, FeedbackTopic
from .rollups import rollup_record

logger = logging.getLogger(__name__)

# Bind parameters one statement may carry: PostgreSQL allows 65,535 and
# SQLite (3.32 and later) 32,766; both limits are rounded down.
_MAX_PARAMS = {"postgresql": 65_000, "sqlite": 32_000}


@dataclass
class IngestResult:
    """Outcome of one batch, in the order of the inputs.

    ``ids[i]`` is the feedback id of input i: a new row when ``created[i]``,
    otherwise the row already stored under the same source and external id.
    ``conflicts`` maps the index of each input whose external id is stored
    with a different kind, score or comment to the reason; such an input is
    neither stored nor a duplicate.
    """

    ids: list[int] = field(default_factory=list)
    created: list[bool] = field(default_factory=list)
    conflicts: dict[int, str] = field(default_factory=dict)

    @property
    def created_count(self) -> int:
        return sum(self.created)

    @property
    def duplicate_count(self) -> int:
        return len(self.created) - self.created_count - len(self.conflicts)


def feedback_ingest(
    *,
    inputs: Sequence[FeedbackInput],
    analyzer: Analyzer | None = None,
    now: datetime | None = None,
) -> IngestResult:
    """Store a batch of validated feedback and queue its case evaluation.

    Feedback already stored under the same source and external id is left
    as it is and reported as a duplicate, so a retried request or a
    re-imported file never counts twice. An external id that is stored with
    a different kind, score or comment is a conflict: two different pieces
    of feedback share the id, and the new one is reported, not dropped as a
    duplicate. New feedback is analysed (language,
    sentiment, topics) before it is stored, added to the metric rollups in
    the same transaction, and handed to ``feedback_evaluate_task`` after
    commit. Statements per batch are constant, whatever its size.
    """
    now = now or timezone.now()
    if not inputs:
        return IngestResult()

    keys = [(item.source, item.external_id) for item in inputs]
    existing = _existing_ids(keys)
    fresh: dict[tuple[str, str], FeedbackInput] = {}
    for key, item in zip(keys, inputs):
        if key not in existing and key not in fresh:
            fresh[key] = item

    analyzer = analyzer or Analyzer.from_database()
    new_items = list(fresh.values())
    analyses = analyzer.analyze_many((item.comment, item.language) for item in new_items)

    with transaction.atomic():
        customer_ids = _customer_ids(new_items)
        inserted = _insert_feedback(new_items, analyses, customer_ids, now=now)
        won = [
            (item, analysis, inserted[(item.source, item.external_id)])
            for item, analysis in zip(new_items, analyses)
            if (item.source, item.external_id) in inserted
        ]
        _insert_topics(won)
        rollup_record(
            (item.occurred_at, item.kind, item.source, item.touchpoint, analysis.topic_ids, item.score)
            for item, analysis, _ in won
        )
        created_ids = [feedback_id for _, _, feedback_id in won]
        if created_ids:
            _queue_evaluation(created_ids)

    # Rows that lost an insert race to a concurrent batch are duplicates too.
    lost = [key for key in fresh if key not in inserted]
    if lost:
        existing.update(_existing_ids(lost))

    result = IngestResult()
    first_seen: dict[tuple[str, str], tuple] = {}
    for index, (key, item) in enumerate(zip(keys, inputs)):
        content = _content_of(item)
        if key in inserted:
            stored_content = first_seen.get(key, content)
        else:
            stored_content = existing[key][1]
        is_new = key in inserted and key not in first_seen
        first_seen.setdefault(key, content)
        result.ids.append(inserted[key] if key in inserted else existing[key][0])
        result.created.append(is_new)
        if content != stored_content:
            result.conflicts[index] = (
                f"external_id {item.external_id!r} of source {item.source!r} is already "
                "stored with a different kind, score or comment; give this feedback its "
                "own id (the import command's --id-prefix keeps files apart)."
            )
    logger.info(
        "feedback batch stored",
        extra={"created_count": result.created_count, "duplicate_count": result.duplicate_count},
    )
    return result


def _queue_evaluation(feedback_ids: list[int]) -> None:
    from cases.tasks import feedback_evaluate_task

    transaction.on_commit(partial(feedback_evaluate_task.delay, feedback_ids))


def _content_of(item: FeedbackInput) -> tuple:
    return (item.kind, item.score, item.comment)


def _existing_ids(
    keys: Sequence[tuple[str, str]],
) -> dict[tuple[str, str], tuple[int, tuple]]:
    """Return the id and content (kind, score, comment) stored under each key."""
    by_source: dict[str, list[str]] = {}
    for source, external_id in keys:
        by_source.setdefault(source, []).append(external_id)
    found: dict[tuple[str, str], tuple[int, tuple]] = {}
    for source, external_ids in by_source.items():
        rows = Feedback.objects.filter(
            source=source, external_id__in=set(external_ids)
        ).values_list("external_id", "id", "kind", "score", "comment")
        found.update(
            {
                (source, external_id): (pk, (kind, score, comment))
                for external_id, pk, kind, score, comment in rows
            }
        )
    return found


def _customer_ids(items: Sequence[FeedbackInput]) -> dict[str, int]:
    """Return customer ids by external id, creating the customers not stored yet.

    Contact details fill blanks of an existing customer and never overwrite
    a value already stored.
    """
    details: dict[str, FeedbackInput] = {}
    for item in items:
        if item.customer:
            details.setdefault(item.customer, item)
    if not details:
        return {}

    stored = {
        customer.external_id: customer
        for customer in Customer.objects.filter(external_id__in=list(details)).only(
            "id", "external_id", "email", "name", "language", "segment"
        )
    }
    missing = [key for key in details if key not in stored]
    if missing:
        Customer.objects.bulk_create(
            [
                Customer(
                    external_id=key,
                    email=details[key].email,
                    name=details[key].name,
                    language=details[key].language,
                    segment=details[key].segment,
                )
                for key in missing
            ],
            ignore_conflicts=True,
        )
        stored.update(
            {
                customer.external_id: customer
                for customer in Customer.objects.filter(external_id__in=missing).only(
                    "id", "external_id"
                )
            }
        )
    _fill_customer_blanks(stored, details, skip=set(missing))
    return {key: customer.id for key, customer in stored.items()}


def _fill_customer_blanks(
    stored: dict[str, Customer], details: dict[str, FeedbackInput], *, skip: set[str]
) -> None:
    changed = []
    for key, customer in stored.items():
        if key in skip:
            continue
        item = details[key]
        updated = False
        for name in ("email", "name", "language", "segment"):
            if getattr(item, name) and not getattr(customer, name):
                setattr(customer, name, getattr(item, name))
                updated = True
        if updated:
            changed.append(customer)
    if changed:
        Customer.objects.bulk_update(changed, ["email", "name", "language", "segment"])


_FEEDBACK_COLUMNS = (
    "customer_id",
    "kind",
    "score",
    "comment",
    "source",
    "touchpoint",
    "product",
    "language",
    "occurred_at",
    "received_at",
    "external_id",
    "raw",
    "sentiment",
    "sentiment_label",
    "primary_topic_id",
    "analyzed_at",
)


def _insert_feedback(
    items: Sequence[FeedbackInput],
    analyses: Sequence[TextAnalysis],
    customer_ids: dict[str, int],
    *,
    now: datetime,
) -> dict[tuple[str, str], int]:
    """Insert feedback rows, skipping any whose key a concurrent batch stored.

    Returns the new ids by (source, external id). A multi-row INSERT with
    ON CONFLICT DO NOTHING RETURNING runs on PostgreSQL and SQLite alike and
    costs one round trip per chunk instead of one per row.
    """
    adapt = connection.ops.adapt_datetimefield_value
    stamp = adapt(now)
    rows = []
    for item, analysis in zip(items, analyses):
        rows.append(
            (
                customer_ids.get(item.customer),
                item.kind,
                item.score,
                item.comment,
                item.source,
                item.touchpoint,
                item.product,
                item.language or analysis.language,
                adapt(item.occurred_at),
                stamp,
                item.external_id,
                json.dumps(item.raw, ensure_ascii=False, default=str),
                analysis.sentiment,
                analysis.sentiment_label,
                analysis.topic_ids[0] if analysis.topic_ids else None,
                stamp,
            )
        )
    returned = _insert_rows(
        Feedback._meta.db_table,
        _FEEDBACK_COLUMNS,
        rows,
        conflict="(source, external_id)",
        returning="id, source, external_id",
        casts={"raw": "::jsonb"} if connection.vendor == "postgresql" else {},
    )
    return {(source, external_id): pk for pk, source, external_id in returned}


def _insert_topics(won: Sequence[tuple[FeedbackInput, TextAnalysis, int]]) -> None:
    rows = [
        (feedback_id, topic_id)
        for _, analysis, feedback_id in won
        for topic_id in analysis.topic_ids
    ]
    if rows:
        _insert_rows(FeedbackTopic._meta.db_table, ("feedback_id", "topic_id"), rows)


def _insert_rows(
    table: str,
    columns: Sequence[str],
    rows: Sequence[tuple],
    *,
    conflict: str = "",
    returning: str = "",
    casts: dict[str, str] | None = None,
) -> list[tuple]:
    casts = casts or {}
    quote = connection.ops.quote_name
    placeholder = "(" + ", ".join("%s" + casts.get(column, "") for column in columns) + ")"
    head = f"INSERT INTO {quote(table)} ({', '.join(quote(c) for c in columns)}) VALUES "
    tail = f" ON CONFLICT {conflict} DO NOTHING" if conflict else " ON CONFLICT DO NOTHING"
    if returning:
        tail += f" RETURNING {returning}"
    chunk = max(1, _MAX_PARAMS.get(connection.vendor, 30_000) // len(columns))
    returned: list[tuple] = []
    with connection.cursor() as cursor:
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            params = [value for row in part for value in row]
            cursor.execute(head + ", ".join([placeholder] * len(part)) + tail, params)
            if returning:
                returned.extend(cursor.fetchall())
    return returned


def feedback_correct_score(*, feedback: Feedback, score: object) -> Feedback:
    """Correct the score of stored feedback and keep the rollups exact.

    The old score is taken out of the rollups and the new one added in the
    same transaction. Raises DomainError when the score is invalid.
    """
    from .intake import InvalidItem

    try:
        new_score = parse_score(score, feedback.kind)
    except InvalidItem as error:
        raise DomainError(error.message, details={"field": "score"}) from None

    with transaction.atomic():
        locked = Feedback.objects.select_for_update().get(pk=feedback.pk)
        if locked.score == new_score:
            return locked
        topic_ids = list(locked.topics.values_list("id", flat=True))
        dimensions = (locked.occurred_at, locked.kind, locked.source, locked.touchpoint, topic_ids)
        rollup_record([(*dimensions, locked.score)], sign=-1)
        rollup_record([(*dimensions, new_score)], sign=1)
        locked.score = new_score
        locked.save(update_fields=["score"])
    logger.info("feedback score corrected", extra={"feedback_id": locked.pk})
    return locked
