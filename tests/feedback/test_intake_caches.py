"""The caches and single-pass checks of ``validate_item`` give the results
of the plain per-value checks."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from feedback.intake import (
    InvalidItem,
    _email_validator,
    parse_occurred_at,
    parse_score,
    validate_item,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_parse_score_cache_keeps_kinds_apart():
    assert parse_score("9", "nps") == 9
    with pytest.raises(InvalidItem, match="outside the csat range"):
        parse_score("9", "csat")
    with pytest.raises(InvalidItem, match="text feedback"):
        parse_score("9", "text")
    assert parse_score("9", "nps") == 9


def test_parse_score_cache_keeps_rejecting():
    for _ in range(2):
        with pytest.raises(InvalidItem, match="outside the nps range"):
            parse_score("11", "nps")
        with pytest.raises(InvalidItem, match="not a whole number"):
            parse_score("9.5", "nps")


def test_parse_score_cache_returns_zero():
    assert parse_score("0", "nps") == 0
    assert parse_score("0", "nps") == 0


def test_date_cache_keeps_formats_apart():
    day_first = parse_occurred_at("01/02/2025", date_format="%d/%m/%Y", now=NOW)
    month_first = parse_occurred_at("01/02/2025", date_format="%m/%d/%Y", now=NOW)
    assert day_first == datetime(2025, 2, 1, tzinfo=UTC)
    assert month_first == datetime(2025, 1, 2, tzinfo=UTC)
    assert parse_occurred_at("01/02/2025", date_format="%d/%m/%Y", now=NOW) == day_first


def test_date_cache_keeps_time_zones():
    fmt = "%d/%m/%Y %H:%M %z"
    plus_five = parse_occurred_at("01/02/2025 10:00 +0500", date_format=fmt, now=NOW)
    utc = parse_occurred_at("01/02/2025 10:00 +0000", date_format=fmt, now=NOW)
    naive = parse_occurred_at("01/02/2025 10:00", date_format="%d/%m/%Y %H:%M", now=NOW)
    assert plus_five.utcoffset() == timedelta(hours=5)
    assert plus_five == datetime(2025, 2, 1, 5, 0, tzinfo=UTC)
    assert utc == datetime(2025, 2, 1, 10, 0, tzinfo=UTC)
    assert naive == datetime(2025, 2, 1, 10, 0, tzinfo=UTC)
    assert naive.tzinfo is UTC


def test_date_cache_checks_future_each_call():
    text = "01/12/2026"
    assert parse_occurred_at(text, date_format="%d/%m/%Y", now=NOW) == datetime(
        2026, 12, 1, tzinfo=UTC
    )
    earlier = NOW - timedelta(days=30)
    with pytest.raises(InvalidItem, match="lies in the future"):
        parse_occurred_at(text, date_format="%d/%m/%Y", now=earlier)


def test_parse_occurred_at_keeps_aware_datetime():
    aware = datetime(2025, 1, 1, 10, 0, tzinfo=timezone(timedelta(hours=-3)))
    assert parse_occurred_at(aware, now=NOW) is aware


def test_parse_occurred_at_blank_is_now():
    assert parse_occurred_at(" ", now=NOW) is NOW
    assert parse_occurred_at("", now=NOW) is NOW


def test_empty_item_values_leave_defaults():
    parsed = validate_item(
        {"score": "5", "kind": "", "source": None, "language": " "},
        defaults={"kind": "csat", "source": "survey", "language": "pt"},
        now=NOW,
    )
    assert parsed.kind == "csat"
    assert parsed.source == "survey"
    assert parsed.language == ""


@pytest.mark.parametrize(
    ("item", "defaults", "shown"),
    [
        ({"kind": "nps", "score": 5, "source": ""}, None, "None"),
        ({"kind": "nps", "score": 5}, {"source": ""}, "''"),
        ({"kind": "nps", "score": 5, "source": None}, {"source": ""}, "''"),
        ({"kind": "nps", "score": 5, "source": 0}, None, "0"),
    ],
)
def test_source_message_shows_given_value(item, defaults, shown):
    with pytest.raises(InvalidItem, match=f"^source {shown} is not valid"):
        validate_item(item, defaults=defaults, now=NOW)


def test_first_bad_text_field_is_named():
    base = {"kind": "nps", "source": "survey", "score": 5}
    with pytest.raises(InvalidItem, match="^comment contains a NUL") as nul_first:
        validate_item({**base, "comment": "a\x00", "name": "b\ud800"}, now=NOW)
    with pytest.raises(InvalidItem, match="^name contains half") as surrogate_first:
        validate_item({**base, "name": "b\ud800", "comment": "a\x00"}, now=NOW)
    assert nul_first.value.field == "comment"
    assert surrogate_first.value.field == "name"


def test_bad_text_found_beside_numbers():
    item = {"kind": "nps", "source": "survey", "score": 5, "customer": 7}
    item["name"] = "x\x00"
    with pytest.raises(InvalidItem, match="^name contains a NUL"):
        validate_item(item, now=NOW)


@pytest.mark.parametrize(
    "email",
    [
        "ann@example.com",
        "Ann.Lee+tag@mail.example.co.uk",
        "x@localhost",
        "x@[127.0.0.1]",
        "x@[::1]",
        "x@[999.1.1.1]",
        '"quoted name"@example.com',
        "ann@exa_mple.com",
        "ann..lee@example.com",
        "ann@-example.com",
        "ann@example",
        "josé@example.com",
        "ann@bücher.de",
        "ann@xn--bcher-kva.de",
        "a" * 310 + "@example.com",
        "no-at-sign",
        "",
    ],
)
def test_email_validator_agrees_with_django(email):
    def outcome(validator):
        try:
            validator(email)
        except ValidationError:
            return "invalid"
        return "valid"

    assert outcome(_email_validator()) == outcome(validate_email)
