"""Writes on feedback: intake in batches, and corrections."""

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from django.db import connection, transaction
from django.utils import timezone

from oscm.errors import DomainError

from . import pgcopy
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


_CONTACT_FIELDS = ("email", "name", "language", "segment")


def _customer_ids(items: Sequence[FeedbackInput]) -> dict[str, int]:
    """Return customer ids by external id, creating the customers not stored yet.

    Contact details fill blanks of an existing customer and never overwrite
    a value already stored. Stored customers are read as tuples, not model
    instances, because a batch of thousands of rows reads thousands of them.
    """
    details: dict[str, FeedbackInput] = {}
    for item in items:
        if item.customer:
            details.setdefault(item.customer, item)
    if not details:
        return {}

    stored = {
        row[1]: row
        for row in Customer.objects.filter(external_id__in=list(details)).values_list(
            "id", "external_id", *_CONTACT_FIELDS
        )
    }
    ids = {external_id: row[0] for external_id, row in stored.items()}
    missing = [key for key in details if key not in stored]
    if missing:
        ids.update(_customers_create(missing, details))
    _fill_customer_blanks(stored, details)
    return ids


def _customers_create(
    keys: list[str], details: dict[str, FeedbackInput]
) -> dict[str, int]:
    """Insert new customers and return the ids of all ``keys``.

    A customer that a concurrent batch created first is skipped by the
    insert and read back afterwards.
    """
    # Other columns take their model defaults, evaluated once per batch.
    defaults = {
        field.column: field.get_default()
        for field in Customer._meta.concrete_fields
        if not field.primary_key and field.name not in ("external_id", *_CONTACT_FIELDS)
    }
    if connection.vendor == "postgresql":
        columns = ("external_id", *_CONTACT_FIELDS, *defaults)
        rows = [
            (key, *(getattr(details[key], name) for name in _CONTACT_FIELDS), *defaults.values())
            for key in keys
        ]
        returned = pgcopy.copy_insert(
            Customer._meta.db_table,
            columns,
            rows,
            on_conflict="(external_id) DO NOTHING",
            returning="external_id, id",
        )
        ids = dict(returned)
    else:
        Customer.objects.bulk_create(
            [
                Customer(
                    external_id=key,
                    **{name: getattr(details[key], name) for name in _CONTACT_FIELDS},
                )
                for key in keys
            ],
            ignore_conflicts=True,
        )
        ids = {}
    lost = [key for key in keys if key not in ids]
    if lost:
        ids.update(
            Customer.objects.filter(external_id__in=lost).values_list("external_id", "id")
        )
    return ids


def _fill_customer_blanks(
    stored: dict[str, tuple], details: dict[str, FeedbackInput]
) -> None:
    changed = []
    for key, (pk, _, *values) in stored.items():
        item = details[key]
        contact = dict(zip(_CONTACT_FIELDS, values))
        blanks = [name for name, value in contact.items() if not value and getattr(item, name)]
        if blanks:
            contact.update({name: getattr(item, name) for name in blanks})
            changed.append(Customer(pk=pk, **contact))
    if changed:
        Customer.objects.bulk_update(changed, list(_CONTACT_FIELDS))


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

    Returns the new ids by (source, external id). Both paths end in
    ON CONFLICT DO NOTHING RETURNING: PostgreSQL gets the rows by COPY
    through a staging table, SQLite in multi-row INSERTs, one per chunk.
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
    if connection.vendor == "postgresql":
        returned = pgcopy.copy_insert(
            Feedback._meta.db_table,
            _FEEDBACK_COLUMNS,
            rows,
            on_conflict="(source, external_id) DO NOTHING",
            returning="id, source, external_id",
        )
    else:
        returned = _insert_rows(
            Feedback._meta.db_table,
            _FEEDBACK_COLUMNS,
            rows,
            conflict="(source, external_id)",
            returning="id, source, external_id",
        )
    return {(source, external_id): pk for pk, source, external_id in returned}


def _insert_topics(won: Sequence[tuple[FeedbackInput, TextAnalysis, int]]) -> None:
    rows = [
        (feedback_id, topic_id)
        for _, analysis, feedback_id in won
        for topic_id in analysis.topic_ids
    ]
    if not rows:
        return
    columns = ("feedback_id", "topic_id")
    if connection.vendor == "postgresql":
        # The feedback ids are new in this transaction, so no row can conflict.
        pgcopy.copy_rows(FeedbackTopic._meta.db_table, columns, rows)
    else:
        _insert_rows(FeedbackTopic._meta.db_table, columns, rows)


def _insert_rows(
    table: str,
    columns: Sequence[str],
    rows: Sequence[tuple],
    *,
    conflict: str = "",
    returning: str = "",
) -> list[tuple]:
    quote = connection.ops.quote_name
    placeholder = "(" + ", ".join(["%s"] * len(columns)) + ")"
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


def feedback_analyze_pending(*, limit: int = 2000, older_than_seconds: int = 0) -> int:
    """Analyse stored feedback that never went through analysis; return how many.

    Intake analyses every row before storing it, so this only finds rows
    written some other way, such as a data migration or a script. Each row
    gets language, sentiment and topics, and its topics are added to the
    rollups (its all-topics row was counted when it was stored). Rows are
    claimed with SKIP LOCKED on PostgreSQL, so overlapping sweeps split the
    work instead of repeating it.
    """
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    analyzer = Analyzer.from_database()
    with transaction.atomic():
        rows = list(
            Feedback.objects.filter(analyzed_at__isnull=True, received_at__lte=cutoff)
            .order_by("pk")
            .select_for_update(skip_locked=True)
            .only("id", "comment", "language", "occurred_at", "kind", "source", "touchpoint", "score")[
                :limit
            ]
        )
        if not rows:
            return 0
        analyses = analyzer.analyze_many((row.comment, row.language) for row in rows)
        now = timezone.now()
        for row, analysis in zip(rows, analyses):
            row.language = row.language or analysis.language
            row.sentiment = analysis.sentiment
            row.sentiment_label = analysis.sentiment_label
            row.primary_topic_id = analysis.topic_ids[0] if analysis.topic_ids else None
            row.analyzed_at = now
        Feedback.objects.bulk_update(
            rows, ["language", "sentiment", "sentiment_label", "primary_topic", "analyzed_at"]
        )
        FeedbackTopic.objects.bulk_create(
            [
                FeedbackTopic(feedback_id=row.pk, topic_id=topic_id)
                for row, analysis in zip(rows, analyses)
                for topic_id in analysis.topic_ids
            ],
            ignore_conflicts=True,
        )
        rollup_record(
            (
                (row.occurred_at, row.kind, row.source, row.touchpoint, analysis.topic_ids, row.score)
                for row, analysis in zip(rows, analyses)
            ),
            topics_only=True,
        )
    logger.info("analysed feedback stored without analysis", extra={"feedback_count": len(rows)})
    return len(rows)
