"""Import of feedback files (CSV or JSON Lines) in batches.

Rows are read with a real CSV parser (quoted newlines, Windows line ends and
a UTF-8 byte order mark are handled), mapped onto feedback fields, validated
and stored through ``feedback_ingest``. Every rejected row is written with
its reason to ``FILE.rejected.csv``; valid rows are never dropped because a
neighbour is bad.
"""

import csv
import gc
import hashlib
import json
import logging
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from django.conf import settings
from django.db import connection, connections
from django.utils import timezone

from .analysis import Analyzer
from .bulk import CustomerCache, feedback_store_chunk
from .intake import FIELDS, FeedbackInput, InvalidItem, validate_item
from .services import IngestResult, feedback_ingest

logger = logging.getLogger(__name__)

# Fields the importer maps from columns; kind and source come from options.
MAPPABLE_FIELDS = tuple(name for name in FIELDS if name not in ("kind", "source"))
# Comments of 10,000 characters and more must fit in one CSV field.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


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
        rows = _csv_rows(handle, options) if fmt == "csv" else _jsonl_rows(handle)
        header = next(rows)
        columns = _resolve_mapping(header, options.mapping) if fmt == "csv" else _key_mapping(options.mapping)
        rejects.header = header
        keys = _RowKeys()
        batch: list[FeedbackInput] = []
        batch_rows: list[tuple[int, dict]] = []
        for number, raw, problem in rows:
            summary.read += 1
            if problem:
                rejects.write(number, problem, raw)
                continue
            item = _map_row(raw, columns)
            try:
                feedback = validate_item(
                    item, defaults=defaults, date_format=options.date_format, now=now, raw=raw
                )
            except InvalidItem as error:
                rejects.write(number, error.message, raw)
                continue
            if "external_id" not in item or not item.get("external_id"):
                feedback.external_id = keys.key_for(raw)
            if options.id_prefix:
                feedback.external_id = options.id_prefix + feedback.external_id
            batch.append(feedback)
            batch_rows.append((number, raw))
            if len(batch) >= batch_size:
                store.submit(batch, batch_rows)
                _count(store.done(), summary, rejects)
                batch, batch_rows = [], []
                if on_progress:
                    on_progress(handle.buffer.tell(), total)
        if batch:
            store.submit(batch, batch_rows)
    _count(store.done(), summary, rejects)
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
    stored: list[tuple[IngestResult, list[tuple[int, dict]]]],
    summary: ImportSummary,
    rejects: "_RejectWriter",
) -> None:
    for result, rows in stored:
        summary.imported += result.created_count
        summary.duplicates += result.duplicate_count
        for index, reason in result.conflicts.items():
            number, raw = rows[index]
            rejects.write(number, reason, raw)


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
        self._done: list[tuple[IngestResult, list[tuple[int, dict]]]] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        pass

    def submit(self, batch: list[FeedbackInput], rows: list[tuple[int, dict]]) -> None:
        self._done.append((self._store(batch), rows))

    def done(self) -> list[tuple[IngestResult, list[tuple[int, dict]]]]:
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

    def submit(self, batch: list[FeedbackInput], rows: list[tuple[int, dict]]) -> None:
        self._raise_error()
        self._put((batch, rows))

    def done(self) -> list[tuple[IngestResult, list[tuple[int, dict]]]]:
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
    delimiter = "\t" if options.delimiter in ("\\t", "tab") else options.delimiter
    if len(delimiter) != 1:
        raise ImportFileError(
            f"--delimiter {options.delimiter!r} must be one character (or 'tab')."
        )
    # strict: a quote left open rejects its row instead of silently joining
    # every following line into one field.
    reader = csv.reader(handle, delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFileError("the file is empty: no header row to map columns from.") from None
    except csv.Error as error:
        raise ImportFileError(f"the header row cannot be read as CSV: {error}.") from None
    header = [name.strip() for name in header]
    yield header
    number = 0
    while True:
        number += 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield number, {}, f"row cannot be read as CSV: {error}"
            continue
        if not values:
            # A blank line is no row at all.
            number -= 1
            continue
        raw = dict(zip(header, values))
        if len(values) != len(header):
            yield number, raw, (
                f"row has {len(values)} fields but the header has {len(header)}; "
                "check the delimiter and quoting"
            )
            continue
        text = "".join(values)
        if not text.isascii() and _has_undecodable([text]):
            yield number, raw, "row contains bytes that are not UTF-8; save the file as UTF-8"
            continue
        if "\x00" in text:
            yield number, raw, "row contains a NUL character (\\x00); remove it"
            continue
        yield number, raw, None


def _jsonl_rows(handle) -> Iterator:
    yield None
    number = 0
    for line in handle:
        if not line.strip():
            continue
        number += 1
        if _has_undecodable([line]):
            yield number, {"line": line}, "line contains bytes that are not UTF-8"
            continue
        if "\x00" in line or "\\u0000" in line:
            yield number, {"line": line}, "line contains a NUL character; remove it"
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            yield number, {"line": line}, f"line is not valid JSON: {error.msg}"
            continue
        if not isinstance(value, dict):
            yield number, {"line": line}, "line is not a JSON object"
            continue
        # A \uD800-\uDFFF escape outside a surrogate pair decodes to a
        # lone surrogate, which PostgreSQL and UTF-8 cannot store.
        if "\\ud" in line.lower() and _has_undecodable(
            [json.dumps(value, ensure_ascii=False)]
        ):
            yield number, {"line": line}, (
                "line contains a \\u escape of a lone surrogate, which is not "
                "valid Unicode; remove it or escape the whole surrogate pair"
            )
            continue
        yield number, value, None


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
    """Return the keys read for each field of a JSON Lines object."""
    return {
        name: [part.strip() for part in mapping.get(name, name).split("+")]
        for name in MAPPABLE_FIELDS
    }


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
    """Writes rejected rows, opening the file only when the first one comes."""

    def __init__(self, path: Path):
        self.path = path
        self.header: list[str] | None = None
        self.count = 0
        self._handle = None
        self._writer = None

    def write(self, number: int, reason: str, raw: dict) -> None:
        if self._writer is None:
            self._handle = open(self.path, "w", encoding="utf-8", errors="surrogateescape", newline="")
            self._writer = csv.writer(self._handle)
            self._columns = self.header or ["line"]
            self._writer.writerow(["row", "reason", *self._columns])
        if self.header is None and "line" not in raw:
            # A JSON Lines object that parsed but failed validation.
            raw = {"line": json.dumps(raw, ensure_ascii=False)}
        self._writer.writerow([number, reason, *(raw.get(column, "") for column in self._columns)])
        self.count += 1

    def close(self) -> None:
        if self._handle:
            self._handle.close()
