"""Validation of incoming feedback, shared by the API and the file importer.

Pure functions with no database access: each turns one raw item into a
``FeedbackInput`` or raises ``InvalidItem`` with a message that names the
value and how to fix it.
"""

import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator
from django.utils import timezone

from .models import Feedback

KINDS = set(Feedback.Kind.values)
SOURCES = set(Feedback.Source.values)
SCORE_RANGES = {str(kind): bounds for kind, bounds in Feedback.SCORE_RANGES.items()}

# Fields a caller may set on one feedback item; the importer maps file
# columns onto these names.
FIELDS = (
    "external_id",
    "customer",
    "email",
    "name",
    "segment",
    "kind",
    "score",
    "comment",
    "source",
    "touchpoint",
    "product",
    "language",
    "occurred_at",
)

MAX_LENGTHS = {
    "external_id": 200,
    "customer": 200,
    "email": 254,
    "name": 200,
    "segment": 100,
    "touchpoint": 50,
    "product": 200,
    "language": 8,
}
# Occurrence times further ahead than this are rejected as clock errors.
FUTURE_TOLERANCE = timedelta(days=1)
# Occurrence times before this are taken as a wrong column or format.
EARLIEST_OCCURRED_AT = datetime(1970, 1, 1, tzinfo=UTC)
# Longer comments are rejected: ten times the length the survey page takes
# and still room for the longest real reviews.
MAX_COMMENT_LENGTH = 20_000
LANGUAGE_CODE_RE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})?$")
_WHOLE_NUMBER_RE = re.compile(r"^[+-]?[0-9]+(\.0*)?$")
# Addresses that passed the email validator lately. A customer sends many
# rows of a file, and the validator's regular expressions cost more than the
# rest of a row's checks. Past the limit the set starts over.
_VALID_EMAILS: set[str] = set()
_VALID_EMAILS_LIMIT = 500_000
# Free-form data a caller may send along; it is kept in ``raw`` only.
EXTRA_KEY = "metadata"
# Parsed scores by (kind, text). The rows of a file repeat a few score
# strings, and parsing one costs more than the rest of the score check.
# Past the limit new strings are parsed every time.
_PARSED_SCORES: dict[tuple[str, str], int] = {}
_PARSED_SCORES_LIMIT = 1_000


class InvalidItem(ValueError):
    """One item failed validation; ``field`` names the offending field."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(slots=True)
class FeedbackInput:
    external_id: str
    kind: str
    source: str
    score: int | None
    comment: str
    touchpoint: str
    product: str
    language: str
    occurred_at: datetime
    customer: str
    email: str
    name: str
    segment: str
    raw: dict = field(default_factory=dict)


def _text(item: dict, name: str) -> str:
    value = item.get(name)
    if value is None:
        return ""
    if value.__class__ is not str and not isinstance(value, str):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        else:
            raise InvalidItem(name, f"{name} {value!r} is not text.")
    value = value.strip()
    limit = MAX_LENGTHS.get(name)
    if limit and len(value) > limit:
        raise InvalidItem(
            name, f"{name} is {len(value)} characters long; the maximum is {limit}."
        )
    return value


def _given(values: dict, defaults: dict | None, name: str) -> Any:
    """Return the value that the item or else the defaults gave, or None."""
    value = values.get(name)
    if value == "" and name not in (defaults or {}):
        return None
    return value


def parse_score(value: Any, kind: str) -> int | None:
    """Parse a score as a whole number within the kind's range.

    An empty value is a skipped question and returns None, never zero.
    """
    if value.__class__ is str:
        cached = _PARSED_SCORES.get((kind, value))
        if cached is not None:
            return cached
        number = _parse_score(value, kind)
        if number is not None and len(_PARSED_SCORES) < _PARSED_SCORES_LIMIT:
            _PARSED_SCORES[kind, value] = number
        return number
    return _parse_score(value, kind)


def _parse_score(value: Any, kind: str) -> int | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, bool):
        raise InvalidItem("score", f"score {value!r} is not a whole number.")
    if isinstance(value, float):
        if not value.is_integer():
            raise InvalidItem("score", f"score {value!r} is not a whole number.")
        number = int(value)
    elif isinstance(value, int):
        number = value
    elif isinstance(value, str) and _WHOLE_NUMBER_RE.match(value.strip()):
        number = int(float(value.strip()))
    else:
        raise InvalidItem("score", f"score {value!r} is not a whole number.")
    if kind == Feedback.Kind.TEXT:
        raise InvalidItem(
            "score",
            f"score {number} given for text feedback, which has no score: "
            "use kind nps, csat, ces or rating.",
        )
    low, high = SCORE_RANGES[kind]
    if not low <= number <= high:
        raise InvalidItem(
            "score", f"score {number} is outside the {kind} range {low}-{high}."
        )
    return number


def parse_occurred_at(value: Any, *, date_format: str = "", now: datetime) -> datetime:
    """Parse an occurrence time; naive times are taken as UTC."""
    if value is None:
        return now
    if isinstance(value, datetime):
        parsed = value
    elif not isinstance(value, str):
        raise InvalidItem("occurred_at", f"occurred_at {value!r} is not a date or time.")
    elif not (text := value.strip()):
        return now
    elif date_format:
        try:
            parsed = _parse_with_format(text, date_format)
        except ValueError:
            raise InvalidItem(
                "occurred_at",
                f"occurred_at {value!r} does not match the date format {date_format!r}.",
            ) from None
    else:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidItem(
                "occurred_at",
                f"occurred_at {value!r} is not an ISO 8601 date or time such as "
                "2026-11-02T10:00:00+00:00; for other formats the import command "
                "takes --date-format, for example '%d/%m/%Y %H:%M'.",
            ) from None
    if parsed.utcoffset() is None:
        # Naive, as in django.utils.timezone.is_naive.
        parsed = parsed.replace(tzinfo=UTC)
    if parsed > now + FUTURE_TOLERANCE:
        raise InvalidItem(
            "occurred_at",
            f"occurred_at {value!r} lies in the future; check the date and its time zone.",
        )
    if parsed < EARLIEST_OCCURRED_AT:
        raise InvalidItem(
            "occurred_at",
            f"occurred_at {value!r} lies before 1970; check the column and the date format.",
        )
    return parsed


@functools.cache
def _email_validator() -> EmailValidator:
    """Return Django's email validator with its patterns compiled.

    Django compiles them on first use behind a proxy object, and going
    through the proxy took longer than the matching itself in a timing of
    20,000 short addresses (Django 5.2). The patterns are compiled here on
    first use too, so a process that validates no email never compiles them.
    """

    def compiled(pattern):
        return re.compile(pattern.pattern, pattern.flags)

    class Validator(EmailValidator):
        user_regex = compiled(EmailValidator.user_regex)
        domain_regex = compiled(EmailValidator.domain_regex)
        literal_regex = compiled(EmailValidator.literal_regex)

    return Validator()


# strptime takes microseconds, and the rows of a file often share a date.
# The cache key is the text and the format. It stores the parsed value from
# before a naive time is taken as UTC, so no entry depends on the clock.
@functools.lru_cache(maxsize=4096)
def _parse_with_format(text: str, date_format: str) -> datetime:
    return datetime.strptime(text, date_format)


def content_key(item: dict) -> str:
    """Return a stable id for an item that came without an external id.

    Sending the same item again gives the same key, so a retried request or a
    re-imported file is recognised as a duplicate.
    """
    canonical = json.dumps(item, sort_keys=True, default=str, ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


_KNOWN_KEYS = frozenset((*FIELDS, EXTRA_KEY))


def _check_keys_and_nul(item: dict) -> None:
    if not _KNOWN_KEYS.issuperset(item):
        unknown = [key for key in item if key not in _KNOWN_KEYS]
        raise InvalidItem(
            unknown[0],
            f"{unknown[0]!r} is not a feedback field; use one of {', '.join(FIELDS)}, "
            f"and put any other data under {EXTRA_KEY!r}.",
        )
    # One scan covers all the text values, and the loop below runs only to
    # name the first offending field.
    try:
        text = "".join(item.values())
    except TypeError:
        text = "".join(value for value in item.values() if isinstance(value, str))
    if "\x00" in text or (not text.isascii() and _has_lone_surrogate(text)):
        for key, value in item.items():
            if not isinstance(value, str):
                continue
            if "\x00" in value:
                raise InvalidItem(
                    key, f"{key} contains a NUL character (\\x00); remove it."
                )
            if not value.isascii() and _has_lone_surrogate(value):
                raise InvalidItem(key, f"{key} {_LONE_SURROGATE}")
    extra = item.get(EXTRA_KEY)
    if extra is not None:
        text = json.dumps(extra)
        if "\\u0000" in text:
            raise InvalidItem(EXTRA_KEY, f"{EXTRA_KEY} contains a NUL character (\\u0000); remove it.")
        if "\\ud" in text and _has_lone_surrogate(json.dumps(extra, ensure_ascii=False)):
            raise InvalidItem(EXTRA_KEY, f"{EXTRA_KEY} {_LONE_SURROGATE}")


_LONE_SURROGATE = (
    "contains half of a surrogate pair (a \\ud800-\\udfff escape on its own), "
    "which is not valid Unicode; remove it or send the whole pair."
)


def _has_lone_surrogate(text: str) -> bool:
    """Tell whether the text contains a code point that UTF-8 cannot encode.

    JSON may escape one half of a surrogate pair on its own; PostgreSQL
    cannot store the result, so such text is rejected here.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def validate_item(
    item: dict,
    *,
    defaults: dict | None = None,
    date_format: str = "",
    now: datetime | None = None,
    raw: dict | None = None,
) -> FeedbackInput:
    """Validate one feedback item; ``defaults`` fill fields the item leaves out.

    ``raw`` is the input as received, kept on the feedback; it defaults to
    the item itself.
    """
    if not isinstance(item, dict):
        raise InvalidItem("item", f"item {item!r} is not an object with feedback fields.")
    _check_keys_and_nul(item)
    now = now or timezone.now()
    # None and "" mean a missing value. They stay in ``values`` where no
    # default replaces them, and every reader below takes them as empty.
    values = item
    if defaults:
        values = {**defaults, **item}
        for key, default in defaults.items():
            if item.get(key) in (None, ""):
                values[key] = default

    kind = _text(values, "kind").lower()
    if not kind:
        raise InvalidItem("kind", f"kind is missing; use one of {', '.join(sorted(KINDS))}.")
    if kind not in KINDS:
        raise InvalidItem(
            "kind",
            f"kind {values.get('kind')!r} is not valid; use one of {', '.join(sorted(KINDS))}.",
        )
    source = _text(values, "source").lower()
    if source not in SOURCES:
        raise InvalidItem(
            "source",
            f"source {_given(values, defaults, 'source')!r} is not valid; "
            f"use one of {', '.join(sorted(SOURCES))}.",
        )
    score = parse_score(values.get("score"), kind)
    comment = values.get("comment") or ""
    if not isinstance(comment, str):
        raise InvalidItem("comment", f"comment {comment!r} is not text.")
    comment = comment.strip()
    if len(comment) > MAX_COMMENT_LENGTH:
        raise InvalidItem(
            "comment",
            f"comment is {len(comment)} characters long; the maximum is {MAX_COMMENT_LENGTH}.",
        )
    if score is None and not comment:
        raise InvalidItem(
            "score", "the item has neither a score nor a comment, so there is nothing to record."
        )

    language = _text(values, "language").lower()
    if language and not LANGUAGE_CODE_RE.match(language):
        raise InvalidItem(
            "language", f"language {language!r} is not a language code such as en, id or pt."
        )
    email = _text(values, "email").lower()
    if email and email not in _VALID_EMAILS:
        try:
            _email_validator()(email)
        except ValidationError:
            raise InvalidItem("email", f"email {email!r} is not a valid address.") from None
        if len(_VALID_EMAILS) >= _VALID_EMAILS_LIMIT:
            _VALID_EMAILS.clear()
        _VALID_EMAILS.add(email)

    external_id = _text(values, "external_id") or content_key(item)
    customer = _text(values, "customer")
    if not customer and email:
        # Without a customer id the email address identifies the customer,
        # so two complaints from one address share a case.
        customer = email
        if len(customer) > MAX_LENGTHS["customer"]:
            raise InvalidItem(
                "email",
                f"email is {len(email)} characters long, and an email that "
                f"identifies the customer may have {MAX_LENGTHS['customer']} at most; "
                "give the row a customer id.",
            )
    return FeedbackInput(
        external_id=external_id,
        kind=kind,
        source=source,
        score=score,
        comment=comment,
        touchpoint=_text(values, "touchpoint").lower(),
        product=_text(values, "product"),
        language=language,
        occurred_at=parse_occurred_at(
            values.get("occurred_at"), date_format=date_format, now=now
        ),
        customer=customer,
        email=email,
        name=_text(values, "name"),
        segment=_text(values, "segment"),
        raw=item if raw is None else raw,
    )
