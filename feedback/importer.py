"""Import of feedback files (CSV or JSON Lines) in batches.

Rows are read with a real CSV parser (quoted newlines, Windows line ends and
a UTF-8 byte order mark are handled), mapped onto feedback fields, validated
and stored through ``feedback_ingest``. Every rejected row is written with
its reason to ``FILE.rejected.csv``; valid rows are never dropped because a
neighbour is bad.
"""

import csv
import hashlib
import json
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from .analysis import Analyzer
from .intake import FIELDS, FeedbackInput, InvalidItem, validate_item
from .services import feedback_ingest

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

    total = path.stat().st_size
    summary = ImportSummary(rejected_path=path.with_name(path.name + ".rejected.csv"))
    batch_size = options.batch_size or settings.OSCM_BATCH_SIZE
    defaults = {"kind": options.kind, "source": options.source, "language": options.language}
    analyzer = Analyzer.from_database()
    now = timezone.now()
    # A report left by an earlier run of the same file would mislead.
    summary.rejected_path.unlink(missing_ok=True)
    rejects = _RejectWriter(summary.rejected_path)

    with handle:
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
                _store(batch, batch_rows, summary, analyzer, rejects)
                batch, batch_rows = [], []
                if on_progress:
                    on_progress(handle.buffer.tell(), total)
        if batch:
            _store(batch, batch_rows, summary, analyzer, rejects)
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


def _store(
    batch: list[FeedbackInput],
    rows: list[tuple[int, dict]],
    summary: ImportSummary,
    analyzer: Analyzer,
    rejects: "_RejectWriter",
) -> None:
    result = feedback_ingest(inputs=batch, analyzer=analyzer)
    summary.imported += result.created_count
    summary.duplicates += result.duplicate_count
    for index, reason in result.conflicts.items():
        number, raw = rows[index]
        rejects.write(number, reason, raw)


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
        if _has_undecodable(values):
            yield number, raw, "row contains bytes that are not UTF-8; save the file as UTF-8"
            continue
        if any("\x00" in value for value in values):
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
                    f"its columns are: {', '.join(header)}."
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
