from datetime import UTC, datetime

import pytest

from feedback.intake import InvalidItem, content_key, parse_score, validate_item

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def valid(**fields):
    item = {"kind": "nps", "source": "survey", "score": 9, "comment": "Great"}
    item.update(fields)
    return validate_item(item, now=NOW)


@pytest.mark.parametrize(
    ("kind", "low", "high"), [("nps", 0, 10), ("csat", 1, 5), ("ces", 1, 7), ("rating", 1, 5)]
)
def test_score_range_bounds_per_kind(kind, low, high):
    assert parse_score(low, kind) == low
    assert parse_score(high, kind) == high
    with pytest.raises(InvalidItem, match=f"outside the {kind} range {low}-{high}"):
        parse_score(high + 1, kind)
    with pytest.raises(InvalidItem, match="outside"):
        parse_score(low - 1, kind)


def test_score_skipped_question_is_none_not_zero():
    assert parse_score("", "nps") is None
    assert parse_score(None, "nps") is None
    assert parse_score("  ", "csat") is None


def test_score_whole_numbers_only():
    assert parse_score("7", "nps") == 7
    assert parse_score("7.0", "nps") == 7
    assert parse_score(7.0, "nps") == 7
    for bad in ("7.5", 7.5, "seven", True, "1e1", [3]):
        with pytest.raises(InvalidItem, match="not a whole number"):
            parse_score(bad, "nps")


def test_score_rejected_for_text_kind():
    with pytest.raises(InvalidItem, match="text feedback, which has no score"):
        parse_score(3, "text")


def test_validate_item_names_bad_kind_and_source():
    with pytest.raises(InvalidItem, match="kind 'stars' is not valid; use one of"):
        valid(kind="stars")
    with pytest.raises(InvalidItem, match="source 'email' is not valid"):
        valid(source="email")


def test_validate_item_needs_score_or_comment():
    assert valid(score=None).score is None
    assert valid(comment="").comment == ""
    with pytest.raises(InvalidItem, match="neither a score nor a comment"):
        valid(score=None, comment="   ")


def test_validate_item_dates():
    assert valid(occurred_at="2026-11-02").occurred_at == datetime(2026, 11, 2, tzinfo=UTC)
    offset = valid(occurred_at="2015-02-24T11:35:52-08:00").occurred_at
    assert offset == datetime(2015, 2, 24, 19, 35, 52, tzinfo=UTC)
    assert valid(occurred_at=None).occurred_at == NOW
    with pytest.raises(InvalidItem, match="not an ISO 8601 date"):
        valid(occurred_at="24/02/2015")
    with pytest.raises(InvalidItem, match="lies in the future"):
        valid(occurred_at="2027-01-01")


def test_validate_item_date_format():
    item = {"kind": "nps", "source": "survey", "score": 3, "occurred_at": "11/04/2018 20:09"}
    parsed = validate_item(item, now=NOW, date_format="%d/%m/%Y %H:%M")
    assert parsed.occurred_at == datetime(2018, 4, 11, 20, 9, tzinfo=UTC)
    with pytest.raises(InvalidItem, match="does not match the date format"):
        validate_item({**item, "occurred_at": "2018-04-11"}, now=NOW, date_format="%d/%m/%Y %H:%M")


def test_validate_item_email_and_language():
    assert valid(email="Ana@Example.COM").email == "ana@example.com"
    with pytest.raises(InvalidItem, match="email 'not-an-email' is not a valid address"):
        valid(email="not-an-email")
    assert valid(language="PT").language == "pt"
    with pytest.raises(InvalidItem, match="language 'portu' is not a language code"):
        valid(language="portu")


def test_validate_item_length_limits():
    with pytest.raises(InvalidItem, match="external_id is 201 characters long; the maximum is 200"):
        valid(external_id="x" * 201)
    assert len(valid(comment="é" * 10_000).comment) == 10_000


def test_validate_item_defaults_fill_missing_fields():
    parsed = validate_item({"score": 4}, defaults={"kind": "csat", "source": "survey"}, now=NOW)
    assert parsed.kind == "csat"
    assert parsed.source == "survey"


def test_content_key_stable_for_same_item():
    item = {"kind": "nps", "source": "survey", "score": 3}
    assert content_key(item) == content_key(dict(reversed(item.items())))
    assert content_key(item) != content_key({**item, "score": 4})
    assert valid(external_id=None).external_id.startswith("sha256:")


def test_validate_item_rejects_non_object():
    with pytest.raises(InvalidItem, match="is not an object"):
        validate_item(["nps", 3], now=NOW)


def test_comment_longer_than_the_limit_rejected():
    assert len(valid(comment="x" * 10_000).comment) == 10_000
    with pytest.raises(InvalidItem, match="comment is 20001 characters long; the maximum is 20000"):
        valid(comment="x" * 20_001)


def test_occurred_before_1970_rejected():
    assert valid(occurred_at="1970-01-01T00:00:00+00:00").occurred_at.year == 1970
    with pytest.raises(InvalidItem, match="lies before 1970"):
        valid(occurred_at="1900-01-01")


def test_lone_surrogate_rejected_pair_kept():
    assert valid(comment="great \U0001f600").comment == "great \U0001f600"
    with pytest.raises(InvalidItem, match="comment contains half of a surrogate pair"):
        valid(comment="bad \ud800 text")
    with pytest.raises(InvalidItem, match="metadata contains half of a surrogate pair"):
        valid(metadata={"note": "x\udc00"})
