"""Import of feedback files (CSV or JSON Lines) in batches.

Rows are read with a real CSV parser (quoted newlines, Windows line ends and
a UTF-8 byte order mark are handled), mapped onto feedback fields, validated
and stored through ``feedback_ingest``. Every rejected row is written with
its reason to ``FILE.rejected.csv``; valid rows are never dropped because a
neighbour is bad.
"""

import contextlib
import copy
import csv
import gc
import hashlib
import heapq
import itertools
import json
import logging
import math
import queue
import re
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
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
from .services import IngestResult, feedback_ingest

logger = logging.getLogger(__name__)

# Fields the importer maps from columns; kind and source come from options.
MAPPABLE_FIELDS = tuple(name for name in FIELDS if name not in ("kind", "source"))
# Comments of 10,000 characters and more must fit in one CSV field.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
# Maximum length of a line, or of a record whose quoted field spans lines,
# in characters with line ends. A valid comment has at most 20,000
# characters (MAX_COMMENT_LENGTH) and the other fields a few hundred each,
# so a longer record is a quote that never closed or a file that is not CSV.
MAX_RECORD_LENGTH = 1_000_000
# Characters of an unreadable line kept in the rejected-row report: room for
# a row with the longest valid comment.
REPORT_LINE_LENGTH = 32_768
# Column of the rejected-row report with the text of a line that could not
# be split into the file's columns (the whole line, for JSON Lines).
_LINE_COLUMN = "line"
# Key of that text in a CSV row's raw values, apart from the file's columns.
_AS_READ = object()
# A row in a batch: its number, raw values and, for JSON Lines, its text.
_BatchRow = tuple[int, dict, str | None]


class ImportFileError(Exception):
    """The file cannot be read at all; nothing was imported."""


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
        json_lines = _JsonLines(handle) if fmt == "jsonl" else None
        rows = _csv_rows(handle, options) if json_lines is None else iter(json_lines)
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


def _csv_rows(handle, options: ImportOptions) -> Iterator:
    """Yield the header, then ``(row number, raw, problem)`` for every row.

    A quoted field may span lines. A record that spans lines and turns out
    broken (invalid CSV, the wrong number of fields, or a quote still open
    at the end of the file) most likely has a quote on its first line that
    never closed. So only that line is rejected, and parsing starts again
    at the next line, which reads the rows after it normally. A record
    longer than ``MAX_RECORD_LENGTH`` whose quote closes and whose field
    count is right is rejected whole instead.
    """
    delimiter = "\t" if options.delimiter in ("\\t", "tab") else options.delimiter
    if len(delimiter) != 1:
        raise ImportFileError(
            f"--delimiter {options.delimiter!r} must be one character (or 'tab')."
        )
    lines = _PhysicalLines(handle, delimiter)
    # strict: a stray quote inside an unquoted field, or text after a
    # closing quote, is a csv.Error instead of a silently altered value.
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    header = _csv_header(reader)
    yield header
    lines.field_count = len(header)
    record_lines = lines.record_lines
    record_lines.clear()
    number = 0
    while True:
        number += 1
        # csv.reader reads no line ahead, so the next line starts the record.
        first_line = lines.line_number + 1
        error: csv.Error | None = None
        raw = problem = None
        try:
            values = next(reader)
        except StopIteration:
            return
        except _RecordTooLong as caught:
            raw, problem = lines.reject_long_record(caught, first_line)
        except _SameEnd as caught:
            raw = {_AS_READ: _report_text(record_lines[0])}
            problem = _broken_record_reason(first_line, caught.last_line, caught.cause)
        except csv.Error as caught:
            error, values = caught, None
        if raw is None and (
            values is None or (len(record_lines) > 1 and len(values) != len(header))
        ):
            raw, problem = _unreadable_record(lines, first_line, values, header, error)
        if raw is not None:
            yield number, raw, problem
            record_lines.clear()
            # The reader may have reached the end of the lines it was
            # given; a new one reads the lines handed back first.
            reader = csv.reader(lines, delimiter=delimiter, strict=True)
            continue
        if not values:
            # A blank line is no row at all.
            number -= 1
            record_lines.clear()
            continue
        raw = dict(zip(header, values))
        if len(values) != len(header):
            raw[_AS_READ] = _report_text(record_lines[0])
            record_lines.clear()
            yield number, raw, (
                f"row has {_count_of(len(values), 'field')} but the header has "
                f"{len(header)}; check the delimiter and quoting"
            )
            continue
        text = "".join(values)
        if not text.isascii() and _has_undecodable([text]):
            raw[_AS_READ] = _report_text(_escape_undecodable("".join(record_lines)))
            record_lines.clear()
            yield number, raw, (
                "row contains bytes that are not UTF-8 (shown as \\xNN escapes in the "
                "line column); save the file as UTF-8"
            )
            continue
        if "\x00" in text:
            raw[_AS_READ] = _report_text("".join(record_lines))
            record_lines.clear()
            yield number, raw, "row contains a NUL character (\\x00); remove it"
            continue
        record_lines.clear()
        yield number, raw, None


def _csv_header(reader) -> list[str]:
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFileError("the file is empty: no header row to map columns from.") from None
    except csv.Error as error:
        raise ImportFileError(f"the header row cannot be read as CSV: {error}.") from None
    except _RecordTooLong:
        raise ImportFileError(
            f"the header row is longer than {MAX_RECORD_LENGTH:,} characters "
            "(on one line, or a quote that does not close); check that the file is CSV."
        ) from None
    return [name.strip() for name in header]


def _unreadable_record(
    lines: "_PhysicalLines",
    first_line: int,
    values: list[str] | None,
    header: list[str],
    error: csv.Error | None,
) -> tuple[dict, str]:
    """Reject the first line of a broken record and hand the rest back.

    Returns the raw values and the reason for the rejected-row report.
    """
    record_lines = lines.record_lines
    raw = {_AS_READ: _report_text(record_lines[0])}
    if len(record_lines) == 1:
        if _is_end_of_data(error):
            return raw, (
                f"row cannot be read as CSV: a quote opened on line {first_line} "
                "is still open at the end of the file; close it"
            )
        return raw, (
            f"row cannot be read as CSV: {error} on line {first_line}; "
            'a quote inside a quoted field must be doubled ("")'
        )
    last_line = first_line + len(record_lines) - 1
    lines.fall_back(first_line, at_end_of_file=_is_end_of_data(error))
    if error is not None:
        cause = _broken_cause(str(error), 0, len(header))
    else:
        cause = _broken_cause(None, len(values or []), len(header))
    return raw, _broken_record_reason(first_line, last_line, cause)


def _broken_cause(error: str | None, fields: int, expected: int) -> str:
    if error == _END_OF_DATA:
        return "is still open at the end of the file"
    if error is not None:
        return f"is invalid CSV ({error})"
    return f"has {_count_of(fields, 'field')} but the header has {expected}"


def _broken_record_reason(first_line: int, last_line: int, cause: str) -> str:
    return (
        f"row cannot be read as CSV: the quoted field that opens on line {first_line} "
        f"does not close properly. Read on to line {last_line:,}, the row {cause}. "
        f"Only line {first_line} is rejected and reading goes on at line "
        f"{first_line + 1}; close the quote, or double each quote inside the "
        'field ("")'
    )


# Message of CPython's csv module (3.11) in strict mode when the lines run
# out inside a quoted field. _RecordScanner reports the same.
_END_OF_DATA = "unexpected end of data"


def _is_end_of_data(error: BaseException | None) -> bool:
    return isinstance(error, csv.Error) and str(error) == _END_OF_DATA


def _count_of(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _report_text(line: str) -> str:
    """Return a line as the rejected-row report keeps it: no line end, capped."""
    line = line.rstrip("\r\n")
    if len(line) <= REPORT_LINE_LENGTH:
        return line
    dropped = len(line) - REPORT_LINE_LENGTH
    return f"{line[:REPORT_LINE_LENGTH]} [{dropped:,} more characters not kept]"


def _escape_undecodable(text: str) -> str:
    """Show each byte that is not UTF-8 (a surrogateescape code) as ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class _RecordTooLong(Exception):
    """A line or a record that spans lines is longer than ``MAX_RECORD_LENGTH``.

    ``piece`` is the first ``MAX_RECORD_LENGTH + 1`` characters of an
    overlong line whose rest is still unread, or None when the record grew
    too long with a line of normal length (the last of ``record_lines``).
    """

    def __init__(self, piece: str | None):
        super().__init__("record too long")
        self.piece = piece


class _SameEnd(Exception):
    """The record's open quote ends like a broken record read before, so it is broken too."""

    def __init__(self, last_line: int, cause: str):
        super().__init__(cause)
        self.last_line = last_line
        self.cause = cause


_START_FIELD, _IN_FIELD, _QUOTED, _QUOTE_IN_QUOTED = range(4)


class _RecordScanner:
    """Parse one CSV record as ``csv.reader(strict=True)`` does, keeping no text.

    It counts the record's characters and completed fields and stops at the
    line end that ends the record (``ended``) or at the first error, with
    the csv module's message in ``error``. The quote character is ``"``
    and there is no escape character, as in the importer's reader.
    """

    def __init__(self, delimiter: str):
        self.delimiter = delimiter
        self.state = _START_FIELD
        self.fields = 0
        self.length = 0
        self.ended = False
        self.error: str | None = None
        self._unquoted_end = re.compile(f"[{re.escape(delimiter)}\r\n]")

    def feed(self, text: str) -> None:
        """Parse the next piece of the record: a line, or part of a line."""
        self.length += len(text)
        index, size, delimiter = 0, len(text), self.delimiter
        while index < size and not self.ended:
            state = self.state
            if state == _QUOTED:
                index = text.find('"', index)
                if index < 0:
                    return
                self.state = _QUOTE_IN_QUOTED
                index += 1
                continue
            if state == _IN_FIELD:
                match = self._unquoted_end.search(text, index)
                if match is None:
                    return
                index = match.start()
            char = text[index]
            if char == delimiter:
                self.fields += 1
                self.state = _START_FIELD
            elif char in "\r\n":
                self.fields += 1
                self.ended = True
            elif state == _START_FIELD:
                self.state = _QUOTED if char == '"' else _IN_FIELD
            elif char == '"':
                # A doubled quote inside a quoted field.
                self.state = _QUOTED
            else:
                self.error = f"'{delimiter}' expected after '\"'"
                self.ended = True
            index += 1

    def finish(self) -> None:
        """End the record at the end of the file."""
        if self.ended:
            return
        self.ended = True
        if self.state == _QUOTED:
            self.error = _END_OF_DATA
        else:
            self.fields += 1


@dataclass
class _BrokenStretch:
    """Lines read for a broken record that spans lines, and how that record ended.

    A later record that starts on one of these lines and whose quote is
    still open at the end of its first line is inside a quoted field from
    its second line on, as the broken record is. Both then parse the same
    characters in the same state, so the later record ends on ``last_line``
    in the same way, with ``fields - shadow.fields`` more fields than its
    first line completes. ``shadow`` follows the broken record's parse
    line by line as the lines are read again, and ``next_line`` is the
    next line it has to parse.
    """

    last_line: int
    error: str | None
    fields: int
    shadow: _RecordScanner
    next_line: int


class _PhysicalLines:
    """The lines of a file for ``csv.reader``, with the lines of the current record.

    ``record_lines`` lists the lines read since the caller last cleared it.
    Because ``csv.reader`` reads no line ahead, they are the current record. Lines
    given to ``hand_back`` are read again before the rest of the file.
    ``line_number`` counts the lines handed to ``csv.reader``.

    A line or a record longer than ``MAX_RECORD_LENGTH`` raises
    ``_RecordTooLong`` and is never held whole, so memory stays bounded:
    ``reject_long_record`` reads on to its end with a ``_RecordScanner``,
    which keeps no text.

    Reading cost: after a broken record that spans lines, reading goes on
    at its second line, so those lines are read again. A record starting
    there whose quote stays open ends where the broken record ended (see
    ``_BrokenStretch``), so its outcome is known without reading on. The
    lines are read a third time only by such a record that is valid and
    takes them all. Parsing thus stays linear in the file size, however
    the quotes of a hostile file are placed: in the hostile files of the
    edge-case tests, the characters parsed add up to at most six times the
    file size.
    """

    def __init__(self, handle: TextIO, delimiter: str):
        self._handle = handle
        self._delimiter = delimiter
        self._pending: deque[str] = deque()
        self._stretch: _BrokenStretch | None = None
        self.record_lines: list[str] = []
        self.line_number = 0
        # The header's field count, once it is read.
        self.field_count = 0

    def hand_back(self, lines: list[str]) -> None:
        self._pending.extendleft(reversed(lines))
        self.line_number -= len(lines)

    def __iter__(self) -> Iterator[str]:
        pending, record_lines = self._pending, self.record_lines
        readline = self._handle.readline
        size = 0
        while True:
            if pending:
                line = pending.popleft()
            else:
                line = readline(MAX_RECORD_LENGTH + 1)
                if not line:
                    return
            if len(record_lines) == 1 and self._stretch is not None:
                self._check_stretch(line)
            if len(line) > MAX_RECORD_LENGTH:
                raise _RecordTooLong(line)
            self._take(line, ends_line=True)
            record_lines.append(line)
            if len(record_lines) == 1:
                size = len(line)
            else:
                size += len(line)
                if size > MAX_RECORD_LENGTH:
                    raise _RecordTooLong(None)
            yield line

    def _take(self, text: str, *, ends_line: bool) -> None:
        """Count a line, or a piece of one, and let the broken record's parse follow it."""
        stretch = self._stretch
        if stretch is not None and stretch.next_line == self.line_number + 1:
            stretch.shadow.feed(text)
            if ends_line:
                stretch.next_line += 1
        if ends_line:
            self.line_number += 1
            if stretch is not None and self.line_number >= stretch.last_line:
                self._stretch = None

    def _check_stretch(self, line: str) -> None:
        """Raise ``_SameEnd`` if the record's second line, ``line``, is in the broken stretch."""
        stretch = self._stretch
        if self.line_number + 1 > stretch.last_line:
            return
        first = _RecordScanner(self._delimiter)
        first.feed(self.record_lines[0])
        fields = first.fields + stretch.fields - stretch.shadow.fields
        if stretch.error is None and fields == self.field_count:
            # The record is valid and ends where the broken one did.
            return
        self._pending.appendleft(line)
        raise _SameEnd(
            stretch.last_line, _broken_cause(stretch.error, fields, self.field_count)
        )

    def fall_back(self, first_line: int, *, at_end_of_file: bool) -> None:
        """Hand back all lines of a broken record but its first, and remember how it ended."""
        scanner = _RecordScanner(self._delimiter)
        scanner.feed(self.record_lines[0])
        shadow = copy.copy(scanner)
        for line in self.record_lines[1:]:
            scanner.feed(line)
        if at_end_of_file:
            scanner.finish()
        if scanner.ended:
            self._remember(first_line, first_line + len(self.record_lines) - 1, scanner, shadow)
        self.hand_back(self.record_lines[1:])

    def _remember(
        self, first_line: int, last_line: int, scanner: _RecordScanner, shadow: _RecordScanner
    ) -> None:
        self._stretch = _BrokenStretch(
            last_line=last_line,
            error=scanner.error,
            fields=scanner.fields,
            shadow=shadow,
            next_line=first_line + 1,
        )

    def reject_long_record(self, error: _RecordTooLong, first_line: int) -> tuple[dict, str]:
        """Reject a line or record longer than ``MAX_RECORD_LENGTH``.

        A record whose quoted field closes and whose field count is right is
        rejected whole and reading goes on after it. Otherwise only its first
        line is rejected and reading goes on at the next line, as for any
        broken record. Returns the raw values and the reason for the report.
        """
        record_lines = self.record_lines
        scanner = _RecordScanner(self._delimiter)
        if not record_lines:
            prefix, length, at_end = self._read_line(error.piece, scanner)
            raw = {_AS_READ: prefix.rstrip("\r\n")}
            if not scanner.ended and not at_end:
                # The line ends inside a quoted field: find where the record ends.
                shadow = copy.copy(scanner)
                position = self._handle.tell()
                if self._scan_to_end(scanner):
                    return raw, self._rejected_whole(scanner, first_line, len(raw[_AS_READ]))
                self._remember(first_line, self.line_number, scanner, shadow)
                self._handle.seek(position)
                self.line_number = first_line
            return raw, (
                f"line {first_line} of the file is {length:,} characters long, "
                f"more than the {MAX_RECORD_LENGTH:,} a row may have; the line is rejected "
                f"whole and only its first {len(raw[_AS_READ]):,} characters are kept here"
            )

        raw = {_AS_READ: _report_text(record_lines[0])}
        scanner.feed(record_lines[0])
        shadow = copy.copy(scanner)
        for line in record_lines[1:]:
            scanner.feed(line)
        rest = record_lines[1:]
        position = self._handle.tell()
        if error.piece is not None:
            rest.append(error.piece)
            self._read_line(error.piece, scanner)
        if self._scan_to_end(scanner):
            return raw, self._rejected_whole(scanner, first_line, None)
        self._remember(first_line, self.line_number, scanner, shadow)
        last_line = self.line_number
        self._handle.seek(position)
        self.line_number = first_line
        self._pending.extendleft(reversed(rest))
        cause = _broken_cause(scanner.error, scanner.fields, self.field_count)
        return raw, _broken_record_reason(first_line, last_line, cause)

    def _read_line(self, piece: str, scanner: _RecordScanner) -> tuple[str, int, bool]:
        """Parse an overlong line from its first piece on, keeping only its start.

        Returns that start, the line's length and whether the file ended.
        """
        start = piece[:REPORT_LINE_LENGTH]
        length = 0
        while True:
            length += len(piece)
            scanner.feed(piece)
            if piece[-1] in "\r\n":
                self._take(piece, ends_line=True)
                return start, length, False
            self._take(piece, ends_line=False)
            piece = self._handle.readline(1 << 20)
            if not piece:
                self._take("", ends_line=True)
                scanner.finish()
                return start, length, True

    def _scan_to_end(self, scanner: _RecordScanner) -> bool:
        """Parse on to the end of the record, first through the pending lines.

        The pending lines stay pending unless the record is rejected whole.
        Returns True when the record closed with the header's field count.
        """
        consumed = 0
        for line in self._pending:
            if scanner.ended:
                break
            scanner.feed(line)
            self._take(line, ends_line=line[-1] in "\r\n")
            consumed += 1
        while not scanner.ended:
            piece = self._handle.readline(1 << 20)
            if not piece:
                scanner.finish()
                break
            self._read_line(piece, scanner)
        closed = scanner.error is None and scanner.fields == self.field_count
        if closed:
            for _ in range(consumed):
                self._pending.popleft()
        return closed

    def _rejected_whole(self, scanner: _RecordScanner, first_line: int, kept: int | None) -> str:
        kept_text = (
            f"only the first {kept:,} characters of line {first_line} are kept here"
            if kept is not None
            else f"only line {first_line} is kept here"
        )
        return (
            f"row is {scanner.length:,} characters long, more than the "
            f"{MAX_RECORD_LENGTH:,} a row may have: its quoted field opens on line "
            f"{first_line} and closes on line {self.line_number:,}. The whole row is "
            f"rejected, {kept_text}, and reading goes on at line {self.line_number + 1:,}"
        )


class _LongLine(str):
    """Start of a line longer than ``MAX_RECORD_LENGTH``, with its full ``length``."""

    length: int


def _read_long_line(handle: TextIO, start: str) -> _LongLine:
    """Read to the end of an overlong line, keeping only its start."""
    length = len(start)
    last = start
    while last and last[-1] not in "\r\n":
        last = handle.readline(1 << 20)
        length += len(last)
    prefix = _LongLine(start[:REPORT_LINE_LENGTH])
    prefix.length = length
    return prefix


class _JsonLines:
    """Rows of a JSON Lines file: the header (None), then ``(row number, raw, problem)``.

    ``line`` is the text of the line of the row last yielded, for the
    rejected-row report.
    """

    def __init__(self, handle: TextIO):
        self._handle = handle
        self.line = ""

    def __iter__(self) -> Iterator:
        handle = self._handle
        yield None
        number = 0
        readline = handle.readline
        while line := readline(MAX_RECORD_LENGTH + 1):
            self.line = line
            if len(line) > MAX_RECORD_LENGTH:
                long_line = _read_long_line(handle, line)
                number += 1
                yield number, {_AS_READ: str(long_line)}, (
                    f"line is {long_line.length:,} characters long, more than the "
                    f"{MAX_RECORD_LENGTH:,} a line may have; only its first "
                    f"{len(long_line):,} characters are kept here"
                )
                continue
            if not line.strip():
                continue
            number += 1
            if _has_undecodable([line]):
                yield number, {_AS_READ: line}, (
                    "line contains bytes that are not UTF-8 (shown as \\xNN escapes in "
                    "the line column)"
                )
                continue
            if "\x00" in line or "\\u0000" in line:
                yield number, {_AS_READ: line}, "line contains a NUL character; remove it"
                continue
            try:
                value = json.loads(
                    line,
                    parse_constant=_reject_constant,
                    parse_float=_finite_float,
                    object_pairs_hook=_object_without_duplicates,
                )
            except _DuplicateKey as error:
                yield number, {_AS_READ: line}, (
                    f"line has the key {error.key!r} more than once in one object, so "
                    "its value is ambiguous; keep only one"
                )
                continue
            except _NonFiniteNumber as error:
                yield number, {_AS_READ: line}, (
                    f"line contains the number {error}, which JSON does not allow and the "
                    "database cannot store; write it as a string or leave it out"
                )
                continue
            except json.JSONDecodeError as error:
                yield number, {_AS_READ: line}, f"line is not valid JSON: {error.msg}"
                continue
            if not isinstance(value, dict):
                yield number, {_AS_READ: line}, "line is not a JSON object"
                continue
            # A \uD800-\uDFFF escape outside a surrogate pair decodes to a
            # lone surrogate, which PostgreSQL and UTF-8 cannot store.
            if "\\ud" in line.lower() and _has_undecodable(
                [json.dumps(value, ensure_ascii=False)]
            ):
                yield number, {_AS_READ: line}, (
                    "line contains a \\u escape of a lone surrogate, which is not "
                    "valid Unicode; remove it or escape the whole surrogate pair"
                )
                continue
            yield number, value, None


class _DuplicateKey(ValueError):
    """A JSON object has the same key twice."""

    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _object_without_duplicates(pairs: list[tuple[str, object]]) -> dict:
    # json.loads keeps the last value of a repeated key without a word.
    value = dict(pairs)
    if len(value) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return value


class _NonFiniteNumber(ValueError):
    """A JSON number that is NaN or infinite; the message is its text."""


def _reject_constant(name: str) -> float:
    # json.loads accepts NaN, Infinity and -Infinity, which are not JSON.
    raise _NonFiniteNumber(name)


def _finite_float(text: str) -> float:
    # 1e999 parses as infinity, which jsonb cannot store either.
    value = float(text)
    if not math.isfinite(value):
        raise _NonFiniteNumber(text)
    return value


def _has_undecodable(values: list[str]) -> bool:
    # surrogateescape turns each undecodable byte into a lone surrogate,
    # which strict UTF-8 encoding rejects.
    try:
        "".join(values).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


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
                line = raw.get(_AS_READ)
            if line is None:
                line = json.dumps(raw, ensure_ascii=False)
            return [number, reason, _report_text(_escape_undecodable(line))]
        values = [raw.get(column, "") for column in self.header]
        return [number, reason, *values, raw.get(_AS_READ, "")]

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
