"""Keep ``MetricRollup`` counts in step with the scored feedback.

A rollup row counts the feedback of one UTC day, kind, source, touchpoint,
topic key and score. ``topic_key`` 0 counts every feedback once, and a topic
id counts the feedback tagged with that topic. Metrics are then summed from
these counts, so they equal a query over the feedback table exactly.
"""

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime

from django.db import connection, transaction
from django.db.models import Count, F, Value
from django.db.models.functions import TruncDate

from . import pgcopy
from .models import Feedback, FeedbackTopic, MetricRollup

logger = logging.getLogger(__name__)

# (occurred_at, kind, source, touchpoint, topic_ids, score) of one feedback.
RollupEntry = tuple[datetime, str, str, str, Sequence[int], int | None]
# (day, kind, source, touchpoint, topic_key, score): the rollup unique key.
RollupKey = tuple[date, str, str, str, int, int]

# Column order of every INSERT below, so values, SELECTs and the conflict
# target line up with the unique constraint ``metric_rollup_unique``.
_KEY_FIELDS = ("day", "kind", "source", "touchpoint", "topic_key", "score")
_ROW_FIELDS = (*_KEY_FIELDS, "count")
# PostgreSQL binds at most 65535 parameters a statement, and SQLite reports
# its own limit (999 before SQLite 3.32) through ``max_query_params``.
_DEFAULT_MAX_PARAMS = 65535


def _rollup_keys(entry: RollupEntry) -> list[RollupKey]:
    occurred_at, kind, source, touchpoint, topic_ids, score = entry
    if occurred_at.tzinfo is None:
        raise ValueError(
            f"occurred_at {occurred_at.isoformat()} is naive: pass an aware datetime "
            "so the UTC day is defined"
        )
    day = occurred_at.astimezone(UTC).date()
    keys = [(day, kind, source, touchpoint, 0, score)]
    # A set, because the through table stores a topic once per feedback.
    for topic_id in sorted(set(topic_ids)):
        if topic_id <= 0:
            raise ValueError(f"topic id {topic_id} is invalid: 0 is the all-topics key")
        keys.append((day, kind, source, touchpoint, topic_id, score))
    return keys


def _aggregate(
    entries: Iterable[RollupEntry], sign: int, *, topics_only: bool = False
) -> Counter[RollupKey]:
    deltas: Counter[RollupKey] = Counter()
    for entry in entries:
        if entry[5] is None:
            continue
        for key in _rollup_keys(entry):
            if topics_only and key[4] == 0:
                continue
            deltas[key] += sign
    return deltas


def _quoted_columns(fields: Sequence[str]) -> list[str]:
    quote = connection.ops.quote_name
    return [quote(MetricRollup._meta.get_field(name).column) for name in fields]


def _upsert_sql(row_count: int) -> str:
    quote = connection.ops.quote_name
    table = quote(MetricRollup._meta.db_table)
    columns = _quoted_columns(_ROW_FIELDS)
    count_column = columns[-1]
    placeholders = "(" + ", ".join(["%s"] * len(columns)) + ")"
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) "
        f"VALUES {', '.join([placeholders] * row_count)} "
        f"ON CONFLICT ({', '.join(columns[:-1])}) "
        f"DO UPDATE SET {count_column} = {table}.{count_column} "
        f"+ EXCLUDED.{count_column}"
    )


def _upsert_by_copy(rows: list[tuple]) -> None:
    """Add the counts through COPY and one upsert, keeping the sorted order."""
    table = MetricRollup._meta.db_table
    columns = [MetricRollup._meta.get_field(name).column for name in _ROW_FIELDS]
    quote = connection.ops.quote_name
    count_column = quote(columns[-1])
    with transaction.atomic():
        pgcopy.copy_insert(
            table,
            columns,
            rows,
            on_conflict=(
                f"({', '.join(quote(column) for column in columns[:-1])}) "
                f"DO UPDATE SET {count_column} = {quote(table)}.{count_column} "
                f"+ EXCLUDED.{count_column}"
            ),
        )


def _chunk_size() -> int:
    max_params = connection.features.max_query_params or _DEFAULT_MAX_PARAMS
    return max(1, max_params // len(_ROW_FIELDS))


def rollup_record(
    entries: Iterable[RollupEntry], *, sign: int = 1, topics_only: bool = False
) -> int:
    """Add ``sign`` times each scored entry to its rollup rows.

    Each entry adds to its ``topic_key=0`` row and to one row per topic id,
    on the UTC date of ``occurred_at``. Entries with a None score are skipped.
    ``sign=-1`` subtracts, so a score correction is ``sign=-1`` with the old
    entry and then ``sign=1`` with the new one. ``topics_only`` skips the
    ``topic_key=0`` rows, for feedback whose topics were found after it was
    counted. Returns the number of rows written.

    Call it in the transaction that writes the feedback, so the rollup and
    the feedback commit together and ``rollup_rebuild`` reads both or neither.
    """
    if sign not in (1, -1):
        raise ValueError(f"sign must be 1 or -1, got {sign}")
    deltas = _aggregate(entries, sign, topics_only=topics_only)
    # Sorted keys make concurrent writers lock rows in the same order, which
    # prevents deadlocks between two intake batches on PostgreSQL.
    rows = [(*key, delta) for key, delta in sorted(deltas.items()) if delta != 0]
    if not rows:
        return 0

    # bulk_create(update_conflicts=True) can only set count = EXCLUDED.count,
    # which would overwrite the stored count, so the upsert is written here.
    if connection.vendor == "postgresql":
        _upsert_by_copy(rows)
        logger.debug("rollup rows written", extra={"rows": len(rows), "sign": sign})
        return len(rows)
    adapt_date = connection.ops.adapt_datefield_value
    size = _chunk_size()
    with transaction.atomic(), connection.cursor() as cursor:
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            params: list[object] = []
            for day, *rest in chunk:
                params.extend([adapt_date(day), *rest])
            cursor.execute(_upsert_sql(len(chunk)), params)

    logger.debug("rollup rows written", extra={"rows": len(rows), "sign": sign})
    return len(rows)


def _all_topics_query():
    return (
        Feedback.objects.filter(score__isnull=False)
        .annotate(rollup_day=TruncDate("occurred_at", tzinfo=UTC))
        .annotate(rollup_topic_key=Value(0))
        .values(
            "rollup_day", "kind", "source", "touchpoint", "rollup_topic_key", "score"
        )
        .annotate(rollup_count=Count("id"))
        .order_by()
    )


def _per_topic_query():
    return (
        FeedbackTopic.objects.filter(feedback__score__isnull=False)
        .annotate(
            rollup_day=TruncDate("feedback__occurred_at", tzinfo=UTC),
            rollup_kind=F("feedback__kind"),
            rollup_source=F("feedback__source"),
            rollup_touchpoint=F("feedback__touchpoint"),
            rollup_topic_key=F("topic_id"),
            rollup_score=F("feedback__score"),
        )
        .values(
            "rollup_day",
            "rollup_kind",
            "rollup_source",
            "rollup_touchpoint",
            "rollup_topic_key",
            "rollup_score",
        )
        .annotate(rollup_count=Count("id"))
        .order_by()
    )


def rollup_rebuild() -> int:
    """Replace every rollup row with counts grouped from the feedback table.

    Runs as one transaction of a DELETE and two INSERT ... SELECT ... GROUP BY
    statements, so no feedback row passes through Python. On PostgreSQL the
    rollup table is locked against writes (reads go on) until the commit, so
    an intake transaction either commits before the rebuild reads the
    feedback or adds its counts after the rebuild. Returns the row count.
    """
    quote = connection.ops.quote_name
    table = quote(MetricRollup._meta.db_table)
    columns = ", ".join(_quoted_columns(_ROW_FIELDS))

    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
        cursor.execute(f"DELETE FROM {table}")
        # Both SELECTs list their columns in _ROW_FIELDS order, which Django
        # 5.2 keeps for values() with annotations.
        for query in (_all_topics_query(), _per_topic_query()):
            select_sql, params = query.query.sql_with_params()
            cursor.execute(f"INSERT INTO {table} ({columns}) {select_sql}", params)

    rows = MetricRollup.objects.count()
    logger.info("rollups rebuilt", extra={"rows": rows})
    return rows
