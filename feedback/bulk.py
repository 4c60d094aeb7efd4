"""Storing imported feedback in chunks on PostgreSQL, cases included.

The new rows of a chunk get their ids from the feedback sequence in one
statement. Then COPY writes them into the feedback table in batches, with
no staging table and no per-row conflict check. Rollups, case rules, cases, links and events follow as a fixed
number of set-based statements over the chunk, in the same transaction
(``cases.bulk.cases_open_for_chunk``). So ``evaluated_at`` is written with
the row instead of by a later UPDATE, and the cases are open when the chunk
commits. The statements release the interpreter while PostgreSQL works,
so the importer parses the next chunk on another thread meanwhile.

Text analysis (language, sentiment, topics) is left to
``feedback_analyze_task`` on the workers, queued when the chunk commits.
Until then the rows have no topic, so their cases are keyed and routed
without one, and ``cases.triage`` completes them after the analysis. Rows
of a kind whose case rules read the sentiment wait for it unevaluated.

Duplicates and conflicts (a reused id with other content) are
distinguished exactly as in ``feedback_ingest``. The keys are not looked up first: a new
file has none stored, and when some are (a file imported again, or another
writer), the COPY fails on the unique index and the chunk's rows go in
with ``ON CONFLICT DO NOTHING`` instead.
"""

import logging
from collections.abc import Sequence
from datetime import datetime
from functools import partial

from django.conf import settings
from django.db import IntegrityError, OperationalError, connection, transaction
from psycopg.errors import DeadlockDetected, ForeignKeyViolation, SerializationFailure

from cases import selectors
from cases.bulk import CHUNK_TABLE, cases_open_for_chunk, kinds_evaluated_at_intake
from cases.services import EvaluationResult

from . import pgcopy
from .intake import FeedbackInput
from .models import Feedback, MetricRollup
from .services import (
    _CONTACT_FIELDS,
    IngestResult,
    _customer_ids,
    _existing_ids,
    ingest_result,
)

logger = logging.getLogger(__name__)

_FEEDBACK_COLUMNS = (
    "id",
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
    "sentiment_label",
    "evaluated_at",
)
# The PostgreSQL types of those columns, for the binary COPY.
_FEEDBACK_TYPES = (
    "int8",
    "int8",
    "text",
    "int2",
    "text",
    "text",
    "text",
    "text",
    "text",
    "timestamptz",
    "timestamptz",
    "text",
    "jsonb",
    "text",
    "timestamptz",
)
_CHUNK_COLUMNS = (
    "id",
    "customer_id",
    "kind",
    "score",
    "source",
    "touchpoint",
    "occurred_at",
    "evaluated_at",
)


class CustomerCache:
    """Ids of the customers that one import has stored, by external id.

    A customer sends many rows, so most chunks of a file name customers
    that an earlier chunk already looked up or created. Those skip the
    look-up unless a row brings a contact detail that the stored customer
    lacks (blanks are filled, as on every intake path). The ids are not
    checked again here: the feedback table's foreign key checks them at
    commit, and a chunk that names a customer deleted in the meantime is
    stored again with the cache emptied. Writer threads share one cache.
    """

    def __init__(self, *, max_size: int = 1_000_000):
        self.max_size = max_size
        self._known: dict[str, tuple[int, tuple[bool, ...]]] = {}

    def customer_ids(self, items: Sequence[FeedbackInput]) -> dict[str, int]:
        """Return the customer ids of ``items``, creating the new customers."""
        ids: dict[str, int] = {}
        pending: dict[str, FeedbackInput] = {}
        for item in items:
            key = item.customer
            if not key or key in ids or key in pending:
                continue
            entry = self._known.get(key)
            if entry is not None and self._complete(entry[1], item):
                ids[key] = entry[0]
            else:
                pending[key] = item
        if pending:
            learned: dict[str, tuple[int, tuple[bool, ...]]] = {}
            # Only the first row of each customer brings contact details on
            # the uncached path too, so the pending rows give the same result.
            ids.update(_customer_ids(list(pending.values()), known=learned))
            if len(self._known) + len(learned) <= self.max_size:
                self._known.update(learned)
        return ids

    def clear(self) -> None:
        self._known.clear()

    @staticmethod
    def _complete(filled: tuple[bool, ...], item: FeedbackInput) -> bool:
        return all(
            is_filled or not getattr(item, name)
            for name, is_filled in zip(_CONTACT_FIELDS, filled)
        )


def feedback_store_chunk(
    *,
    inputs: Sequence[FeedbackInput],
    now: datetime,
    customers: CustomerCache | None = None,
) -> tuple[IngestResult, EvaluationResult]:
    """Store a chunk of validated feedback, open its cases and queue its analysis.

    Returns the intake result (ids, duplicates, conflicts, in input order)
    and what the evaluation did. The chunk's new customers commit first in
    a short transaction of their own, so a second writer waits on them only
    briefly. The rest is one transaction with the same number of statements
    whatever the chunk's size, retried when PostgreSQL ends it to break a
    deadlock with another writer. ``customers`` carries the customers of
    earlier chunks of the same import.
    """
    if not inputs:
        return IngestResult(), EvaluationResult()
    keys = [(item.source, item.external_id) for item in inputs]
    fresh: dict[tuple[str, str], FeedbackInput] = {}
    for key, item in zip(keys, inputs):
        fresh.setdefault(key, item)
    new_items = list(fresh.values())
    customers = customers or CustomerCache(max_size=0)
    with transaction.atomic():
        customer_ids = customers.customer_ids(new_items)

    attempt = 1
    while True:
        try:
            inserted, evaluation = _chunk_write(new_items, customer_ids, now=now)
            break
        except IntegrityError as error:
            # A cached customer was deleted after an earlier chunk stored it.
            if connection.in_atomic_block or not isinstance(error.__cause__, ForeignKeyViolation):
                raise
            if attempt >= _ATTEMPTS:
                raise
            logger.warning(
                "Chunk of %d feedback named a customer deleted during the import; "
                "looking its customers up again",
                len(new_items),
                extra={"feedback_count": len(new_items), "attempt": attempt},
            )
            customers.clear()
            with transaction.atomic():
                customer_ids = customers.customer_ids(new_items)
            attempt += 1
        except OperationalError as error:
            if attempt >= _ATTEMPTS or connection.in_atomic_block or not _lock_conflict(error):
                raise
            logger.warning(
                "Chunk of %d feedback rolled back by a lock conflict (%s); storing it again",
                len(new_items),
                error.__cause__.__class__.__name__,
                extra={"feedback_count": len(new_items), "attempt": attempt},
            )
            attempt += 1

    # No look-up came first: a new file has no stored keys, and the COPY
    # falls back to ON CONFLICT when some turn out to be stored.
    stored = [key for key in fresh if key not in inserted]
    existing = _existing_ids(stored) if stored else {}
    result = ingest_result(keys=keys, inputs=inputs, inserted=inserted, existing=existing)
    return result, evaluation


_ATTEMPTS = 3


def _lock_conflict(error: OperationalError) -> bool:
    return isinstance(error.__cause__, (DeadlockDetected, SerializationFailure))


def _chunk_write(
    items: list[FeedbackInput], customer_ids: dict[str, int], *, now: datetime
) -> tuple[dict[tuple[str, str], int], EvaluationResult]:
    with transaction.atomic():
        # Read once, inside the transaction, for the insert and the evaluation.
        rules = selectors.case_rules_by_kind()
        with connection.cursor() as cursor:
            _tables_ensure(cursor)
            inserted = _feedback_insert(
                cursor,
                items,
                customer_ids,
                now=now,
                evaluated_kinds=kinds_evaluated_at_intake(rules),
            )
            _rollups_add(cursor)
        evaluation = cases_open_for_chunk(now=now, rules=rules)
        if inserted:
            _queue_analysis(sorted(inserted.values()))
    return inserted, evaluation


def _queue_analysis(feedback_ids: list[int]) -> None:
    """Queue the analysis in tasks of ``OSCM_BATCH_SIZE`` ids, so that
    several workers share a chunk."""
    from .tasks import feedback_analyze_task

    size = settings.OSCM_BATCH_SIZE
    for start in range(0, len(feedback_ids), size):
        batch = feedback_ids[start : start + size]
        # robust: the chunk stays stored if queueing fails, and the periodic
        # analysis sweep (feedback_analyze_pending) picks up those rows.
        transaction.on_commit(partial(feedback_analyze_task.delay, batch), robust=True)


def _tables_ensure(cursor) -> None:
    """Create this connection's temporary table once, which each commit empties."""
    cursor.execute(
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {CHUNK_TABLE} ("
        "id bigint, customer_id bigint, kind text, score smallint, source text, "
        "touchpoint text, occurred_at timestamptz, evaluated_at timestamptz"
        ") ON COMMIT DELETE ROWS"
    )


def _feedback_insert(
    cursor,
    items: list[FeedbackInput],
    customer_ids: dict[str, int],
    *,
    now: datetime,
    evaluated_kinds: set[str],
) -> dict[tuple[str, str], int]:
    """Write the new rows to the feedback table and return their ids by key.

    Ids come from the table's sequence in one statement and the rows go in
    by binary COPY, with no staging table and no per-row conflict check.
    The columns that the rollups and the evaluation read are then copied to
    ``CHUNK_TABLE`` by one INSERT ... SELECT. Rows of ``evaluated_kinds``
    carry ``evaluated_at``.
    """
    if not items:
        return {}
    table = Feedback._meta.db_table
    cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [table])
    sequence = cursor.fetchone()[0]
    cursor.execute(
        "SELECT nextval(%s::regclass) FROM generate_series(1, %s)", [sequence, len(items)]
    )
    ids = [row[0] for row in cursor.fetchall()]
    encode = pgcopy.json_bytes
    rows = []
    # Rows go in sorted by key, so that two writers whose chunks share keys
    # wait on each other in one order instead of deadlocking on the unique
    # index. The ids keep the input order, because a new case's trigger is
    # the lowest id among its key's rows in the chunk.
    by_key = sorted(zip(ids, items), key=lambda pair: (pair[1].source, pair[1].external_id))
    for pk, item in by_key:
        customer_id = customer_ids.get(item.customer)
        evaluated_at = now if item.kind in evaluated_kinds else None
        rows.append(
            (
                pk,
                customer_id,
                item.kind,
                item.score,
                item.comment,
                item.source,
                item.touchpoint,
                item.product,
                item.language,
                item.occurred_at,
                now,
                item.external_id,
                pgcopy.json_encoded(encode(item.raw)),
                "",
                evaluated_at,
            )
        )
    try:
        # The wrapper turns psycopg's unique violation into Django's
        # IntegrityError, which the savepoint below catches.
        with transaction.atomic(), connection.wrap_database_errors:
            pgcopy.copy_rows(table, _FEEDBACK_COLUMNS, rows, binary_types=_FEEDBACK_TYPES)
    except IntegrityError:
        # Some keys are stored already (a file imported again, or another
        # writer), so the new rows go in with ON CONFLICT DO NOTHING.
        logger.info(
            "Feedback COPY found stored keys; inserting the chunk with ON CONFLICT",
            extra={"feedback_count": len(rows)},
        )
        returned = pgcopy.copy_insert(
            table,
            _FEEDBACK_COLUMNS,
            rows,
            on_conflict="(source, external_id) DO NOTHING",
            returning="id",
        )
        inserted_ids = {row[0] for row in returned}
        pairs = [(item, pk) for pk, item in zip(ids, items) if pk in inserted_ids]
        ids = [pk for _, pk in pairs]
    else:
        pairs = list(zip(items, ids))
    columns = ", ".join(_CHUNK_COLUMNS)
    if ids and ids[-1] - ids[0] + 1 == len(ids):
        # No other writer took an id in between, so a range finds the rows
        # with one index scan instead of one look-up per id.
        rows_of_chunk, params = "id BETWEEN %s AND %s", [ids[0], ids[-1]]
    else:
        rows_of_chunk, params = "id = ANY(%s::bigint[])", [ids]
    cursor.execute(
        f"INSERT INTO {CHUNK_TABLE} ({columns}) SELECT {columns} "
        f"FROM {connection.ops.quote_name(table)} WHERE {rows_of_chunk}",
        params,
    )
    return {(item.source, item.external_id): pk for item, pk in pairs}


def _rollups_add(cursor) -> None:
    """Add the new scored rows to their all-topics rollup rows.

    Topic rows follow with the analysis. Keys are written in sorted order,
    as ``rollup_record`` writes them, so two writers lock shared rows in the
    same order instead of waiting on each other.
    """
    quote = connection.ops.quote_name
    table = quote(MetricRollup._meta.db_table)
    cursor.execute(
        f"INSERT INTO {table} (day, kind, source, touchpoint, topic_key, score, count) "
        f"SELECT day, kind, source, touchpoint, 0, score, count(*) FROM ("
        f"SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, kind COLLATE \"C\" AS kind, "
        f"source COLLATE \"C\" AS source, touchpoint COLLATE \"C\" AS touchpoint, score "
        f"FROM {CHUNK_TABLE} WHERE score IS NOT NULL) f "
        f"GROUP BY day, kind, source, touchpoint, score "
        f"ORDER BY day, kind, source, touchpoint, score "
        f"ON CONFLICT (kind, day, source, touchpoint, topic_key, score) "
        f"DO UPDATE SET count = {table}.count + EXCLUDED.count"
    )
