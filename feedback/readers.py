"""Readers of the rows of feedback files, CSV and JSON Lines.

``csv_rows`` and ``JsonLines`` yield a header (None for JSON Lines), then
``(row number, raw, problem)`` for each row, where ``problem`` is the reason
to reject the row or None. Lines are read in pieces of bounded length, so a
line or an unclosed quoted record of any length is never held whole.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import re
import sys
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from .importer import ImportOptions

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
# Key of a rejected row's line text in its raw values. An object, not a
# string, so it never clashes with a column of the file.
AS_READ = object()


class ImportFileError(Exception):
    """The file cannot be read at all; nothing was imported."""


def csv_rows(handle, options: ImportOptions) -> Iterator:
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
            raw = {AS_READ: report_text(record_lines[0])}
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
            raw[AS_READ] = report_text(record_lines[0])
            record_lines.clear()
            yield number, raw, (
                f"row has {_count_of(len(values), 'field')} but the header has "
                f"{len(header)}; check the delimiter and quoting"
            )
            continue
        text = "".join(values)
        if not text.isascii() and _has_undecodable([text]):
            raw[AS_READ] = report_text(escape_undecodable("".join(record_lines)))
            record_lines.clear()
            yield number, raw, (
                "row contains bytes that are not UTF-8 (shown as \\xNN escapes in the "
                "line column); save the file as UTF-8"
            )
            continue
        if "\x00" in text:
            raw[AS_READ] = report_text("".join(record_lines))
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
    raw = {AS_READ: report_text(record_lines[0])}
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


def report_text(line: str) -> str:
    """Return a line as the rejected-row report keeps it: no line end, capped."""
    line = line.rstrip("\r\n")
    if len(line) <= REPORT_LINE_LENGTH:
        return line
    dropped = len(line) - REPORT_LINE_LENGTH
    return f"{line[:REPORT_LINE_LENGTH]} [{dropped:,} more characters not kept]"


def escape_undecodable(text: str) -> str:
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
            raw = {AS_READ: prefix.rstrip("\r\n")}
            if not scanner.ended and not at_end:
                # The line ends inside a quoted field: find where the record ends.
                shadow = copy.copy(scanner)
                position = self._handle.tell()
                if self._scan_to_end(scanner):
                    return raw, self._rejected_whole(scanner, first_line, len(raw[AS_READ]))
                self._remember(first_line, self.line_number, scanner, shadow)
                self._handle.seek(position)
                self.line_number = first_line
            return raw, (
                f"line {first_line} of the file is {length:,} characters long, "
                f"more than the {MAX_RECORD_LENGTH:,} a row may have; the line is rejected "
                f"whole and only its first {len(raw[AS_READ]):,} characters are kept here"
            )

        raw = {AS_READ: report_text(record_lines[0])}
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


class JsonLines:
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
                yield number, {AS_READ: str(long_line)}, (
                    f"line is {long_line.length:,} characters long, more than the "
                    f"{MAX_RECORD_LENGTH:,} a line may have; only its first "
                    f"{len(long_line):,} characters are kept here"
                )
                continue
            if not line.strip():
                continue
            number += 1
            if _has_undecodable([line]):
                yield number, {AS_READ: line}, (
                    "line contains bytes that are not UTF-8 (shown as \\xNN escapes in "
                    "the line column)"
                )
                continue
            if "\x00" in line or "\\u0000" in line:
                yield number, {AS_READ: line}, "line contains a NUL character; remove it"
                continue
            try:
                value = json.loads(
                    line,
                    parse_constant=_reject_constant,
                    parse_float=_finite_float,
                    object_pairs_hook=_object_without_duplicates,
                )
            except _DuplicateKey as error:
                yield number, {AS_READ: line}, (
                    f"line has the key {error.key!r} more than once in one object, so "
                    "its value is ambiguous; keep only one"
                )
                continue
            except _NonFiniteNumber as error:
                yield number, {AS_READ: line}, (
                    f"line contains the number {error}, which JSON does not allow and the "
                    "database cannot store; write it as a string or leave it out"
                )
                continue
            except json.JSONDecodeError as error:
                yield number, {AS_READ: line}, f"line is not valid JSON: {error.msg}"
                continue
            if not isinstance(value, dict):
                yield number, {AS_READ: line}, "line is not a JSON object"
                continue
            # A \uD800-\uDFFF escape outside a surrogate pair decodes to a
            # lone surrogate, which PostgreSQL and UTF-8 cannot store.
            if "\\ud" in line.lower() and _has_undecodable(
                [json.dumps(value, ensure_ascii=False)]
            ):
                yield number, {AS_READ: line}, (
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
