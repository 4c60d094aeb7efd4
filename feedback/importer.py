"""Import of feedback files (CSV or JSON Lines) in batches.

Rows are read with a real CSV parser (quoted newlines, Windows line ends and
a UTF-8 byte order mark are handled), mapped onto feedback fields, validated
and stored through ``feedback_ingest``. Every rejected row is written with
its reason to ``FILE.rejected.csv``; valid rows are never dropped because a
neighbour is bad.
"""

import contextlib
import csv
import gc
import hashlib
import heapq
import itertools
import json
import logging
import queue
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from django.conf import settings
from django.db import connection, connections
from django.utils import timezone

from .analysis import Analyzer
from .bulk import CustomerCache, feedback_store_chunk
from .intake import (
    EXTRA_KEY,
    FIELDS,
    MAX_LENGTHS,
    FeedbackInput,
    InvalidItem,
    validate_item,
)
from .readers import (
    AS_READ,
    ImportFileError,
    JsonLines,
    csv_rows,
    escape_undecodable,
    report_text,
)
from .services import IngestResult, feedback_ingest

logger = logging.getLogger(__name__)

# Fields the importer maps from columns; kind and source come from options.
MAPPABLE_FIELDS = tuple(name for name in FIELDS if name not in ("kind", "source"))
# Column of the rejected-row report with the text of a line that could not
# be split into the file's columns (the whole line, for JSON Lines).
_LINE_COLUMN = "line"
# A row in a batch: its number, raw values and, for JSON Lines, its text.
_BatchRow = tuple[int, dict, str | None]


@dataclass
class ImportOptions:
    source: str
    kind: str
    format: str = ""
    mapping: dict[str, str] = field(default_factory=dict)
    delimiter: str = ","
    date_format: str = ""
    language: str = ""
    batch_size: int = 0
    id_prefix: str = ""


@dataclass
class ImportSummary:
    read: int = 0
    imported: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejected_path: Path | None = None

    def line(self) -> str:
        return f"imported {self.imported}, duplicates {self.duplicates}, rejected {self.rejected}"


def parse_mapping(pairs: list[str]) -> dict[str, str]:
    """Parse ``FIELD=COLUMN`` options; ``COLUMN`` may join columns with ``+``."""
    mapping = {}
    for pair in pairs:
        name, sep, column = pair.partition("=")
        name = name.strip()
        if not sep or not column.strip():
            raise ImportFileError(f"--map {pair!r} is not FIELD=COLUMN, for example comment=text.")
        if name not in MAPPABLE_FIELDS:
            raise ImportFileError(
                f"--map field {name!r} is unknown; use one of {', '.join(MAPPABLE_FIELDS)}."
            )
        mapping[name] = column.strip()
    return mapping


def detect_format(path: Path, requested: str) -> str:
    if requested:
        if requested not in ("csv", "jsonl"):
            raise ImportFileError(f"--format {requested!r} is not supported; use csv or jsonl.")
        return requested
    return "jsonl" if path.suffix.lower() in (".jsonl", ".ndjson") else "csv"


def import_file(
    path: Path,
    options: ImportOptions,
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> ImportSummary:
    """Import one file and return its counts.

    ``on_progress(bytes_read, total_bytes)`` is called after every batch.
    Raises ImportFileError when the file cannot be opened or its columns
    do not fit the mapping; a bad row only rejects that row.
    """
    fmt = detect_format(path, options.format)
    try:
        handle = open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")
    except OSError as error:
        raise ImportFileError(f"cannot open {path}: {error.strerror}.") from None

    # The rows make millions of short-lived objects and almost no cycles, so
    # the cyclic collector would walk every live object over and over.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _import_open_file(path, handle, fmt, options, on_progress)
    finally:
        if collecting:
            gc.enable()


def _import_open_file(
    path: Path,
    handle: TextIO,
    fmt: str,
    options: ImportOptions,
    on_progress: Callable[[int, int], None] | None,
) -> ImportSummary:
    total = path.stat().st_size
    summary = ImportSummary(rejected_path=path.with_name(path.name + ".rejected.csv"))
    bulk = connection.vendor == "postgresql"
    batch_size = options.batch_size or (
        settings.OSCM_IMPORT_CHUNK_SIZE if bulk else settings.OSCM_BATCH_SIZE
    )
    defaults = {"kind": options.kind, "source": options.source, "language": options.language}
    now = timezone.now()
    # A report left by an earlier run of the same file would mislead.
    summary.rejected_path.unlink(missing_ok=True)
    rejects = _RejectWriter(summary.rejected_path)
    store = _store_for(bulk=bulk)

    with handle, store:
        json_lines = JsonLines(handle) if fmt == "jsonl" else None
        rows = csv_rows(handle, options) if json_lines is None else iter(json_lines)
        header = next(rows)
        if fmt == "csv":
            columns = _resolve_mapping(header, options.mapping)
            known_keys = None
        else:
            columns = _key_mapping(options.mapping)
            mapped_keys = itertools.chain(*columns.values())
            known_keys = frozenset((*FIELDS, EXTRA_KEY, *mapped_keys))
        rejects.header = header
        keys = _RowKeys()
        batch: list[FeedbackInput] = []
        batch_rows: list[_BatchRow] = []
        # First row numbers of the batches submitted and not yet counted.
        in_flight: set[int] = set()
        for number, raw, problem in rows:
            summary.read += 1
            # The original text of a JSON Lines row, for the report.
            line = json_lines.line if json_lines is not None else None
            if problem:
                rejects.write(number, problem, raw, line)
                continue
            if known_keys is not None and not known_keys.issuperset(raw):
                rejects.write(number, _unknown_key_reason(raw, known_keys), raw, line)
                continue
            item = _map_row(raw, columns)
            try:
                feedback = validate_item(
                    item, defaults=defaults, date_format=options.date_format, now=now, raw=raw
                )
            except InvalidItem as error:
                rejects.write(number, error.message, raw, line)
                continue
            if "external_id" not in item or not item.get("external_id"):
                feedback.external_id = keys.key_for(raw)
            if options.id_prefix:
                feedback.external_id = options.id_prefix + feedback.external_id
                if len(feedback.external_id) > MAX_LENGTHS["external_id"]:
                    rejects.write(number, _prefixed_id_reason(feedback, options), raw, line)
                    continue
            batch.append(feedback)
            batch_rows.append((number, raw, line))
            if len(batch) >= batch_size:
                in_flight.add(batch_rows[0][0])
                store.submit(batch, batch_rows)
                _count(store.done(), summary, rejects, in_flight)
                batch, batch_rows = [], []
                if on_progress:
                    on_progress(handle.buffer.tell(), total)
        if batch:
            in_flight.add(batch_rows[0][0])
            store.submit(batch, batch_rows)
    _count(store.done(), summary, rejects, in_flight)
    if on_progress:
        on_progress(total, total)

    summary.rejected = rejects.count
    rejects.close()
    if not rejects.count:
        summary.rejected_path = None
    logger.info(
        "feedback file imported",
        extra={
            "file": str(path),
            "read": summary.read,
            "imported": summary.imported,
            "duplicates": summary.duplicates,
            "rejected": summary.rejected,
        },
    )
    return summary


def _count(
    stored: list[tuple[IngestResult, list[_BatchRow]]],
    summary: ImportSummary,
    rejects: "_RejectWriter",
    in_flight: set[int],
) -> None:
    for result, rows in stored:
        in_flight.discard(rows[0][0])
        summary.imported += result.created_count
        summary.duplicates += result.duplicate_count
        for index, reason in result.conflicts.items():
            number, raw, line = rows[index]
            rejects.hold(number, reason, raw, line)
    # Every later conflict comes from a batch in flight or one not yet
    # submitted, whose rows all come after the first row of those in flight.
    rejects.release(below=min(in_flight, default=sys.maxsize))


def _unknown_key_reason(raw: dict, known_keys: frozenset[str]) -> str:
    unknown = next(key for key in raw if key not in known_keys)
    return (
        f"{unknown!r} is not a feedback field; use one of {', '.join(FIELDS)}, put "
        f"other data under {EXTRA_KEY!r}, or read the key with --map FIELD={unknown}"
    )


def _prefixed_id_reason(feedback: FeedbackInput, options: ImportOptions) -> str:
    limit = MAX_LENGTHS["external_id"]
    length = len(feedback.external_id)
    return (
        f"external_id {feedback.external_id!r} is {length} characters long with "
        f"--id-prefix {options.id_prefix!r}; the maximum is {limit}, so "
        "shorten the prefix or the id"
    )


def _store_for(*, bulk: bool) -> "_SerialStore":
    """Pick how batches are stored.

    PostgreSQL takes chunks through ``feedback_store_chunk`` (COPY, cases in
    the same transaction, analysis left to the workers). Outside a
    transaction, ``OSCM_IMPORT_WRITERS`` threads with connections of their
    own store them while this thread parses the next. Inside one (a
    caller's atomic block) another connection would not see the caller's
    rows, so the chunks are stored on this thread. SQLite stores batches
    with ``feedback_ingest``, which analyses the text first.
    """
    if not bulk:
        analyzer = Analyzer.from_database()
        return _SerialStore(lambda inputs: feedback_ingest(inputs=inputs, analyzer=analyzer))

    customers = CustomerCache()

    def store(inputs: list[FeedbackInput]) -> IngestResult:
        return feedback_store_chunk(inputs=inputs, now=timezone.now(), customers=customers)[0]

    if connection.in_atomic_block or settings.OSCM_IMPORT_WRITERS < 1:
        return _SerialStore(store)
    return _ThreadStore(store, writers=settings.OSCM_IMPORT_WRITERS)


class _SerialStore:
    """Stores each batch as it is submitted; ``done`` hands out the results."""

    def __init__(self, store: Callable[[list[FeedbackInput]], IngestResult]):
        self._store = store
        self._done: list[tuple[IngestResult, list[_BatchRow]]] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        pass

    def submit(self, batch: list[FeedbackInput], rows: list[_BatchRow]) -> None:
        self._done.append((self._store(batch), rows))

    def done(self) -> list[tuple[IngestResult, list[_BatchRow]]]:
        finished, self._done = self._done, []
        return finished


_SWITCH_INTERVAL = 0.0002


class _ThreadStore(_SerialStore):
    """Stores batches on writer threads, each with its own connection.

    With two writers, one chunk's rows go in while the other chunk's cases
    and commit run, and PostgreSQL works on both at once. At most two
    chunks wait. An error on a writer stops the import: the next ``submit``
    or the exit re-raises it here, and the chunks committed before it stay.
    """

    def __init__(self, store: Callable[[list[FeedbackInput]], IngestResult], *, writers: int):
        super().__init__(store)
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._run, name=f"import-writer-{number}", daemon=True)
            for number in range(writers)
        ]

    def __enter__(self):
        # A writer wakes up after each statement and must get the
        # interpreter back from the parsing thread. The default switch
        # interval of 5 ms would leave the database idle that long each time.
        self._interval = sys.getswitchinterval()
        sys.setswitchinterval(_SWITCH_INTERVAL)
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        for _ in self._threads:
            self._put(None)
        for thread in self._threads:
            thread.join()
        sys.setswitchinterval(self._interval)
        if exc_type is None:
            self._raise_error()

    def submit(self, batch: list[FeedbackInput], rows: list[_BatchRow]) -> None:
        self._raise_error()
        self._put((batch, rows))

    def done(self) -> list[tuple[IngestResult, list[_BatchRow]]]:
        with self._lock:
            return super().done()

    def _put(self, job) -> None:
        while any(thread.is_alive() for thread in self._threads):
            try:
                self._queue.put(job, timeout=0.5)
                return
            except queue.Full:
                continue

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            while self._error is None and (job := self._queue.get()) is not None:
                batch, rows = job
                result = self._store(batch)
                with self._lock:
                    self._done.append((result, rows))
        except BaseException as error:  # handed to the importing thread
            self._error = error
        finally:
            connections.close_all()


def _resolve_mapping(header: list[str], mapping: dict[str, str]) -> dict[str, list[str]]:
    """Return the columns read for each field.

    A field not named in ``mapping`` reads the column of the same name, if
    the file has one (case-insensitive).
    """
    by_lower = {name.lower(): name for name in header}
    repeated = {name for name in header if header.count(name) > 1}
    columns: dict[str, list[str]] = {}
    for name in MAPPABLE_FIELDS:
        spec = mapping.get(name)
        if spec is None:
            if name in by_lower:
                columns[name] = [by_lower[name]]
            continue
        parts = [spec] if spec in header else [part.strip() for part in spec.split("+")]
        for part in parts:
            if part not in header:
                raise ImportFileError(
                    f"column {part!r} (mapped to {name}) is not in the file; "
                    f"its columns are: {', '.join(header)}.{_delimiter_hint(header)}"
                )
        columns[name] = parts
    if "score" not in columns and "comment" not in columns:
        raise ImportFileError(
            "no column is read as score or comment, so no row would have anything "
            f"to record; the file's columns are: {', '.join(header)}. Name them with "
            "--map score=COLUMN or --map comment=COLUMN, and check --delimiter if "
            f"the columns are not split as expected.{_delimiter_hint(header)}"
        )
    for name, parts in columns.items():
        for part in parts:
            if part in repeated:
                raise ImportFileError(
                    f"column {part!r} (read for {name}) appears more than once in the "
                    "header, so its value is ambiguous; rename one of them."
                )
    return columns


def _delimiter_hint(header: list[str]) -> str:
    """Suggest --delimiter when the whole header came out as one column."""
    if len(header) != 1:
        return ""
    for candidate, option in ((";", ";"), ("\t", "tab"), ("|", "|")):
        if candidate in header[0]:
            return f" The file looks separated by {candidate!r}: pass --delimiter '{option}'."
    return ""


def _key_mapping(mapping: dict[str, str]) -> dict[str, list[str]]:
    """Return the keys read for each field of a JSON Lines object.

    As in the API, a line's own kind and source are read; --kind and
    --source fill them in for lines without.
    """
    columns = {
        name: [part.strip() for part in mapping.get(name, name).split("+")]
        for name in MAPPABLE_FIELDS
    }
    columns["kind"] = ["kind"]
    columns["source"] = ["source"]
    return columns


def _map_row(raw: dict, columns: dict[str, list[str]]) -> dict:
    item = {}
    for name, sources in columns.items():
        if len(sources) == 1:
            value = raw.get(sources[0])
            if value is not None:
                item[name] = value
            continue
        parts = [str(raw[source]).strip() for source in sources if raw.get(source)]
        item[name] = "\n".join(part for part in parts if part)
    return item


class _RowKeys:
    """External ids for rows of a file that has no id column.

    The id is a hash of the row's values plus how often the same values came
    before in the file, so identical rows stay distinct feedback while a
    second import of the same file finds every row a duplicate.
    """

    def __init__(self):
        self.seen: dict[bytes, int] = {}

    def key_for(self, raw: dict) -> str:
        digest = hashlib.blake2b(
            json.dumps(raw, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogateescape"),
            digest_size=16,
        ).digest()
        occurrence = self.seen.get(digest, 0)
        self.seen[digest] = occurrence + 1
        return f"row:{digest.hex()}:{occurrence}"


class _RejectWriter:
    """Writes rejected rows in row order, creating the report at the first one.

    Rows rejected while the file is read come in row order and are written
    at once. A row that the store of its batch rejects (a conflict) comes
    after rows read later. Conflicts wait in a heap until no batch with an
    earlier row is in flight, then go to a second file in row order, and
    ``close`` merges the two files. The heap contains at most the conflicts
    of the batches in flight, and the merge reads both files as streams.
    """

    def __init__(self, path: Path):
        self.path = path
        self.header: list[str] | None = None
        self.count = 0
        self._handle = None
        self._writer = None
        self._held: list[tuple[int, int, list]] = []
        self._conflicts = None

    def write(self, number: int, reason: str, raw: dict, line: str | None = None) -> None:
        if self._writer is None:
            self._handle, self._writer = self._open(self.path)
        self._writer.writerow(self._cells(number, reason, raw, line))
        self.count += 1

    def hold(self, number: int, reason: str, raw: dict, line: str | None = None) -> None:
        """Keep a conflict until ``release`` passes its row number."""
        cells = self._cells(number, reason, raw, line)
        heapq.heappush(self._held, (number, self.count, cells))
        self.count += 1

    def release(self, *, below: int) -> None:
        """Write the held conflicts of rows before ``below`` to the second file."""
        if not self._held or self._held[0][0] >= below:
            return
        if self._conflicts is None:
            self._conflicts = tempfile.TemporaryFile(
                "w+", encoding="utf-8", errors="surrogateescape", newline=""
            )
        writer = csv.writer(self._conflicts)
        while self._held and self._held[0][0] < below:
            writer.writerow(heapq.heappop(self._held)[2])

    def close(self) -> None:
        self.release(below=sys.maxsize)
        if self._handle:
            self._handle.close()
        if self._conflicts is not None:
            self._merge_conflicts()

    def _columns(self) -> list[str]:
        if self.header is None:
            return [_LINE_COLUMN]
        title = _LINE_COLUMN if _LINE_COLUMN not in self.header else "line as read"
        return [*self.header, title]

    def _cells(self, number: int, reason: str, raw: dict, line: str | None) -> list:
        """Return the report's cells; ``line`` is a JSON Lines row's original text."""
        if self.header is None:
            if line is None:
                line = raw.get(AS_READ)
            if line is None:
                line = json.dumps(raw, ensure_ascii=False)
            return [number, reason, report_text(escape_undecodable(line))]
        values = [raw.get(column, "") for column in self.header]
        return [number, reason, *values, raw.get(AS_READ, "")]

    def _open(self, path: Path):
        handle = open(path, "w", encoding="utf-8", errors="surrogateescape", newline="")
        writer = csv.writer(handle)
        writer.writerow(["row", "reason", *self._columns()])
        return handle, writer

    def _merge_conflicts(self) -> None:
        """Merge the conflicts file into the report by row number."""
        merged_path = self.path.with_name(self.path.name + ".partial")
        handle, writer = self._open(merged_path)
        with handle, self._conflicts as conflicts:
            conflicts.seek(0)
            streams = [csv.reader(conflicts)]
            if self.path.exists():
                report = open(
                    self.path, encoding="utf-8", errors="surrogateescape", newline=""
                )
                streams.append(csv.reader(report))
                next(streams[-1])
            else:
                report = contextlib.nullcontext()
            with report:
                writer.writerows(heapq.merge(*streams, key=lambda cells: int(cells[0])))
        merged_path.replace(self.path)
