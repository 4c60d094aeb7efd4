"""Writes on feedback: intake in batches, corrections, and text analysis of
stored feedback."""

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import NamedTuple

from django.db import connection, transaction
from django.db.models import BooleanField, ExpressionWrapper, Q
from django.utils import timezone

from oscm.errors import DomainError

from . import pgcopy
from .analysis import Analyzer, TextAnalysis
from .intake import FeedbackInput, parse_score
from .models import Customer, Feedback, FeedbackTopic, TopicKeyword
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

    result = ingest_result(keys=keys, inputs=inputs, inserted=inserted, existing=existing)
    logger.info(
        "feedback batch stored",
        extra={"created_count": result.created_count, "duplicate_count": result.duplicate_count},
    )
    return result


def ingest_result(
    *,
    keys: Sequence[tuple[str, str]],
    inputs: Sequence[FeedbackInput],
    inserted: dict[tuple[str, str], int],
    existing: dict[tuple[str, str], tuple[int, tuple]],
) -> IngestResult:
    """Tell, for each input, its stored id and whether it is new, a
    duplicate or a conflict.

    ``inserted`` contains the keys this batch stored, ``existing`` the id and
    content of every other key. The first input of an inserted key is new;
    a later one with the same content is a duplicate, with other content a
    conflict, and likewise against stored content.
    """
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
            source=source, external_id__in=pgcopy.in_values(set(external_ids), sql_type="text")
        ).values_list("external_id", "id", "kind", "score", "comment")
        found.update(
            {
                (source, external_id): (pk, (kind, score, comment))
                for external_id, pk, kind, score, comment in rows
            }
        )
    return found


_CONTACT_FIELDS = ("email", "name", "language", "segment")


def _customer_ids(
    items: Sequence[FeedbackInput], *, known: dict[str, tuple[int, tuple[bool, ...]]] | None = None
) -> dict[str, int]:
    """Return customer ids by external id, creating the customers not stored yet.

    Contact details fill blanks of an existing customer and never overwrite
    a value already stored. Stored customers are read as tuples, not model
    instances, because a batch of thousands of rows reads thousands of them.
    ``known``, when given, receives for each customer read or created here
    its id and which of ``_CONTACT_FIELDS`` are filled once this commits.
    """
    details: dict[str, FeedbackInput] = {}
    for item in items:
        if item.customer:
            details.setdefault(item.customer, item)
    if not details:
        return {}

    stored = {
        row[1]: row
        for row in Customer.objects.filter(
            external_id__in=pgcopy.in_values(details, sql_type="text")
        ).values_list("id", "external_id", *_CONTACT_FIELDS)
    }
    ids = {external_id: row[0] for external_id, row in stored.items()}
    # Sorted, so that two writers creating the same customers wait on each
    # other in one order instead of deadlocking on the unique index.
    missing = sorted(key for key in details if key not in stored)
    created: dict[str, int] = {}
    if missing:
        created, lost = _customers_create(missing, details)
        ids.update(created)
        ids.update(lost)
    _fill_customer_blanks(stored, details)
    if known is not None:
        for key, (pk, _, *values) in stored.items():
            item = details[key]
            filled = (
                bool(value) or bool(getattr(item, name))
                for name, value in zip(_CONTACT_FIELDS, values)
            )
            known[key] = (pk, tuple(filled))
        # A customer that another writer created first is left out, because
        # its contact details are not known here.
        for key, pk in created.items():
            item = details[key]
            known[key] = (pk, tuple(bool(getattr(item, name)) for name in _CONTACT_FIELDS))
    return ids


def _customers_create(
    keys: list[str], details: dict[str, FeedbackInput]
) -> tuple[dict[str, int], dict[str, int]]:
    """Insert new customers and return the ids of ``keys``: those created
    here, and those that a concurrent batch created first.

    The insert skips a customer that a concurrent batch created first, and
    its id is read back afterwards.
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
    if not lost:
        return ids, {}
    return ids, dict(Customer.objects.filter(external_id__in=lost).values_list("external_id", "id"))


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


def feedback_analyze(*, feedback_ids: Sequence[int]) -> int:
    """Analyse the stored feedback among ``feedback_ids`` that has no analysis yet.

    Each row gets its language (unless one is stored), sentiment, topic
    links and primary topic. Its topics are added to the rollups, because
    only its all-topics rollup row was counted when it was stored. Then
    ``cases.triage.case_triage_after_analysis`` completes the cases opened
    before the analysis, all in one transaction. After commit,
    ``feedback_evaluate_task`` is queued for the analysed rows not yet
    evaluated, such as text feedback, which waits for its sentiment.

    Idempotent: rows are claimed with FOR UPDATE SKIP LOCKED on PostgreSQL
    and only while ``analyzed_at`` is null. So ids analysed already, locked
    by a concurrent call or missing are skipped, and no row is analysed or
    counted in the rollups twice. Returns how many rows were analysed. The
    statements per call are constant whatever the number of ids.
    """
    ids = sorted({int(pk) for pk in feedback_ids})
    if not ids:
        return 0
    analyzer = _analyzer_current()

    with transaction.atomic():
        rows = _analysis_claim(ids)
        if not rows:
            return 0
        analyses = analyzer.analyze_many((row.comment, row.language) for row in rows)
        _analysis_write(rows, analyses, now=timezone.now())
        links = _topic_links_insert(rows, analyses)
        _topic_rollups_add(rows, links)
        from cases.triage import case_triage_after_analysis

        # Every analysed row, with a topic or not: triage also assigns the
        # cases that the bulk import opened without an agent.
        case_triage_after_analysis(feedback_ids=[row.id for row in rows])
        unevaluated = [row.id for row in rows if not row.is_evaluated]
        if unevaluated:
            _queue_evaluation(unevaluated)

    logger.info(
        "Analysed %d of %d feedback",
        len(rows),
        len(ids),
        extra={"feedback_requested": len(ids), "feedback_analyzed": len(rows)},
    )
    return len(rows)


# One analyzer per thread, because an Analyzer's caches are plain dicts that
# two threads must not change at once. Each entry is (keywords, analyzer).
_analyzers = threading.local()


def _analyzer_current() -> Analyzer:
    """Return this thread's analyzer, rebuilt when the active keywords changed.

    Reading the keywords is one query of a few hundred short rows. That
    costs less than building the matchers again and losing the per-token
    caches on every batch.
    """
    keywords = tuple(
        TopicKeyword.objects.filter(topic__is_active=True)
        .order_by("pk")
        .values_list("topic_id", "language", "phrase")
    )
    entry = getattr(_analyzers, "entry", None)
    if entry is None or entry[0] != keywords:
        entry = _analyzers.entry = (keywords, Analyzer(keywords))
    return entry[1]


class _UnanalyzedRow(NamedTuple):
    """The columns of a claimed feedback that analysis, rollups and the
    evaluation queue read, in ``_UNANALYZED_FIELDS`` order."""

    id: int
    comment: str
    language: str
    occurred_at: datetime
    kind: str
    source: str
    touchpoint: str
    score: int | None
    is_evaluated: bool


_UNANALYZED_FIELDS = _UnanalyzedRow._fields[:-1]


def _analysis_claim(ids: list[int]) -> list[_UnanalyzedRow]:
    """Lock the unanalysed feedback among ``ids`` and return it in id order.

    SQLite runs one write transaction at a time, so the plain ORM query is
    enough there.
    """
    if connection.vendor != "postgresql":
        rows = (
            Feedback.objects.filter(pk__in=ids, analyzed_at__isnull=True)
            .annotate(
                is_evaluated=ExpressionWrapper(
                    Q(evaluated_at__isnull=False), output_field=BooleanField()
                )
            )
            .order_by("pk")
            .values_list(*_UNANALYZED_FIELDS, "is_evaluated")
        )
        return [_UnanalyzedRow._make(row) for row in rows]

    # The ids travel as one array literal, not as thousands of bind
    # parameters that psycopg would interpolate and PostgreSQL parse. The
    # evaluation stamp is read as a boolean, which psycopg converts faster
    # than a timestamp.
    quote = connection.ops.quote_name
    columns = ", ".join(
        quote(Feedback._meta.get_field(name).column) for name in _UNANALYZED_FIELDS
    )
    id_array = "{" + ",".join(str(pk) for pk in ids) + "}"
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT {columns}, "evaluated_at" IS NOT NULL '
            f"FROM {quote(Feedback._meta.db_table)} "
            f'WHERE "id" = ANY(%s::bigint[]) AND "analyzed_at" IS NULL '
            f'ORDER BY "id" FOR UPDATE SKIP LOCKED',
            [id_array],
        )
        return [_UnanalyzedRow._make(row) for row in cursor.fetchall()]


# Columns that analysis writes, besides ``analyzed_at``; "id" comes first
# because it is the key of the UPDATE.
_ANALYSIS_COLUMNS = (
    "id",
    "language",
    "sentiment",
    "sentiment_label",
    "primary_topic_id",
)


def _analysis_write(
    rows: Sequence[_UnanalyzedRow], analyses: Sequence[TextAnalysis], *, now: datetime
) -> None:
    """Store the analyses of claimed rows and stamp ``analyzed_at``.

    PostgreSQL gets the values by COPY into a temporary table and one
    ``UPDATE ... FROM``; SQLite gets ``bulk_update``. A language already
    stored is kept, as the analysis used it as the hint.
    """
    values = [
        (
            row.id,
            row.language or analysis.language,
            analysis.sentiment,
            analysis.sentiment_label,
            analysis.topic_ids[0] if analysis.topic_ids else None,
        )
        for row, analysis in zip(rows, analyses)
    ]
    if connection.vendor != "postgresql":
        Feedback.objects.bulk_update(
            [
                Feedback(
                    pk=pk,
                    language=language,
                    sentiment=sentiment,
                    sentiment_label=label,
                    primary_topic_id=topic_id,
                    analyzed_at=now,
                )
                for pk, language, sentiment, label, topic_id in values
            ],
            [
                "language",
                "sentiment",
                "sentiment_label",
                "primary_topic",
                "analyzed_at",
            ],
        )
        return

    quote = connection.ops.quote_name
    table = quote(Feedback._meta.db_table)
    staging = "feedback_analysis_staging"
    column_list = ", ".join(quote(column) for column in _ANALYSIS_COLUMNS)
    assignments = ", ".join(
        f"{quote(column)} = staging.{quote(column)}" for column in _ANALYSIS_COLUMNS[1:]
    )
    with connection.cursor() as cursor:
        # The staging table copies the column types only, and is dropped at
        # commit; a second call in the same transaction empties it first.
        cursor.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {quote(staging)} ON COMMIT DROP AS "
            f"SELECT {column_list} FROM {table} WITH NO DATA"
        )
        cursor.execute(f"TRUNCATE {quote(staging)}")
        pgcopy.copy_rows(staging, _ANALYSIS_COLUMNS, values)
        cursor.execute(
            f'UPDATE {table} SET {assignments}, "analyzed_at" = %s '
            f'FROM {quote(staging)} AS staging WHERE {table}."id" = staging."id"',
            [now],
        )


def _topic_links_insert(
    rows: Sequence[_UnanalyzedRow], analyses: Sequence[TextAnalysis]
) -> list[tuple[int, int]]:
    """Store the topic links found; return the (feedback id, topic id) pairs
    inserted.

    A link that is already stored is skipped and not returned, so the
    rollups count only the links this call adds.
    """
    links = [
        (row.id, topic_id)
        for row, analysis in zip(rows, analyses)
        for topic_id in analysis.topic_ids
    ]
    if not links:
        return []
    table = FeedbackTopic._meta.db_table
    columns = ("feedback_id", "topic_id")
    if connection.vendor == "postgresql":
        return pgcopy.copy_insert(
            table,
            columns,
            links,
            on_conflict="(feedback_id, topic_id) DO NOTHING",
            returning="feedback_id, topic_id",
        )
    return _insert_rows(
        table,
        columns,
        links,
        conflict="(feedback_id, topic_id)",
        returning="feedback_id, topic_id",
    )


def _topic_rollups_add(
    rows: Sequence[_UnanalyzedRow], links: Sequence[tuple[int, int]]
) -> None:
    """Add the topic rollup rows of the links just stored, for scored rows."""
    topics_by_feedback: dict[int, list[int]] = {}
    for feedback_id, topic_id in links:
        topics_by_feedback.setdefault(feedback_id, []).append(topic_id)
    entries = []
    for row in rows:
        topic_ids = topics_by_feedback.get(row.id)
        if topic_ids:
            entries.append(
                (
                    row.occurred_at,
                    row.kind,
                    row.source,
                    row.touchpoint,
                    topic_ids,
                    row.score,
                )
            )
    rollup_record(entries, topics_only=True)


def feedback_analyze_pending(*, limit: int = 2000, older_than_seconds: int = 0) -> int:
    """Analyse up to ``limit`` stored feedback rows still without analysis;
    return how many.

    Finds rows whose ``feedback_analyze_task`` was lost, such as in a broker
    outage, and rows written some other way, such as by a data migration.
    ``older_than_seconds`` leaves recent rows to the task queued for them.
    The rows are picked with SKIP LOCKED on PostgreSQL and kept locked
    while ``feedback_analyze`` analyses them, so overlapping sweeps split
    the work instead of waiting on each other.
    """
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    with transaction.atomic():
        ids = list(
            Feedback.objects.filter(analyzed_at__isnull=True, received_at__lte=cutoff)
            .order_by("pk")
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:limit]
        )
        if not ids:
            return 0
        analyzed = feedback_analyze(feedback_ids=ids)
    logger.info(
        "Sweep analysed %d feedback stored without analysis",
        analyzed,
        extra={"feedback_analyzed": analyzed},
    )
    return analyzed
