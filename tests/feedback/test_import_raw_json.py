"""The ``raw`` column that the import encodes with orjson for COPY gets the
jsonb value that ``json.dumps`` text would give."""

import json
import math
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import DataError, connection

from feedback import pgcopy
from feedback.models import Feedback

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("the COPY import path runs on PostgreSQL only")


def _deeply_nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


RAW_VALUES = [
    {"comment": "plain"},
    {"comment": "emoji 😀, é, ü, 中文, \u2028 and \u007f"},
    {"comment": 'quotes " and \\ and / and \n\t\r\x01\x1f'},
    {"comment": "the word null", "score": None, "flag": True, "off": False},
    {"nested": {"list": [1, 2.5, None, "x", [], {}], "deep": {"a": {"b": {"c": []}}}}},
    {"floats": [0.1, 1e22, 1e-7, -0.0, 1.5e300, 123456789.123456789]},
    {"big": 2**70, "small": -(2**70), "edge": 2**64, "fits": 2**63 - 1},
    {"deep": _deeply_nested(300)},
    {"when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)},
    {"tuple": (1, "a")},
    {"": "", "1": 1},
]


def _same_jsonb(left: bytes | str, right: str) -> bool:
    if isinstance(left, bytes):
        left = left.decode()
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::jsonb = %s::jsonb", [left, right])
        return cursor.fetchone()[0]


@pytest.mark.parametrize("value", RAW_VALUES)
def test_json_bytes_matches_json_dumps(value):
    expected = json.dumps(value, ensure_ascii=False, default=str)
    assert _same_jsonb(pgcopy.json_bytes(value), expected)


def test_json_bytes_keeps_nan():
    # PostgreSQL rejects NaN in jsonb, and so the chunk fails as before.
    value = {"x": math.nan, "y": math.inf}
    assert pgcopy.json_bytes(value) == b'{"x": NaN, "y": Infinity}'


def test_json_bytes_escapes_nul():
    data = pgcopy.json_bytes({"x": "a\x00b"})
    assert b"\\u0000" in data
    with pytest.raises(DataError):
        _same_jsonb(data, "{}")


def test_json_bytes_rejects_lone_surrogate():
    with pytest.raises(UnicodeEncodeError):
        pgcopy.json_bytes({"x": "a\ud800"})


def _import(path: Path, *args: str) -> str:
    out = StringIO()
    call_command(
        "import_feedback",
        str(path),
        *args,
        "--no-progress",
        stdout=out,
        stderr=StringIO(),
    )
    return out.getvalue().strip()


def test_import_jsonl_stores_raw_as_parsed(tmp_path):
    lines = [
        {"external_id": "j1", "score": 9, "comment": "emoji 😀 é", "metadata": [1, None]},
        {"external_id": "j2", "score": "7", "metadata": {"big": 2**70, "f": 1e22}},
        {"external_id": "j3", "score": 8, "customer": 42, "metadata": {"null": None}},
        {"external_id": "j4", "score": 5, "comment": "pair \U0001f600"},
    ]
    path = tmp_path / "answers.jsonl"
    text = "".join(json.dumps(line) + "\n" for line in lines)
    path.write_text(text, encoding="utf-8")

    summary = _import(path, "--source", "survey", "--kind", "nps")

    assert summary.startswith("imported 4,")

    stored = dict(Feedback.objects.values_list("external_id", "raw"))
    for line in lines:
        assert stored[line["external_id"]] == line


def test_import_csv_stores_raw_as_read(tmp_path):
    path = tmp_path / "answers.csv"
    path.write_text(
        'external_id,score,comment,extra\n'
        'c1,9,"two\nlines, ""quoted"" 😀",null\n'
        'c2,3,,\n',
        encoding="utf-8",
    )

    summary = _import(path, "--source", "survey", "--kind", "nps")

    assert summary.startswith("imported 2,")

    stored = dict(Feedback.objects.values_list("external_id", "raw"))
    assert stored["c1"] == {
        "external_id": "c1",
        "score": "9",
        "comment": 'two\nlines, "quoted" 😀',
        "extra": "null",
    }
    assert stored["c2"] == {
        "external_id": "c2",
        "score": "3",
        "comment": "",
        "extra": "",
    }
