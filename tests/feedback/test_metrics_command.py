import io
import json
from datetime import UTC, datetime

import pytest
from django.core.management import CommandError, call_command

from feedback.models import Feedback
from feedback.rollups import rollup_record

from .metric_data import topics_create


def run_metrics(*arguments: str) -> str:
    output = io.StringIO()
    call_command("metrics", *arguments, stdout=output)
    return output.getvalue()


@pytest.fixture
def nps_feedback():
    """Store five NPS responses: three in January 2025, two in February."""
    responses = [(1, 10), (1, 9), (1, 3), (2, 8), (2, 10)]
    entries = []
    for index, (month, score) in enumerate(responses):
        occurred_at = datetime(2025, month, 10 + index, 12, tzinfo=UTC)
        Feedback.objects.create(
            kind="nps",
            score=score,
            source="survey",
            touchpoint="checkout",
            occurred_at=occurred_at,
            external_id=f"command-{index}",
        )
        entries.append((occurred_at, "nps", "survey", "checkout", [], score))
    rollup_record(entries)


@pytest.mark.django_db
def test_metrics_json_shape(nps_feedback):
    summary = json.loads(run_metrics("--kind", "nps", "--json"))
    assert summary == {
        "kind": "nps",
        "n": 5,
        "score": 40.0,
        "margin": summary["margin"],
        "promoters": 3,
        "passives": 1,
        "detractors": 1,
    }
    assert summary["margin"] > 0


@pytest.mark.django_db
def test_metrics_json_by_month(nps_feedback):
    summary = json.loads(run_metrics("--kind", "nps", "--by", "month", "--json"))
    periods = summary["periods"]
    assert [p["period"] for p in periods] == ["2025-01-01", "2025-02-01"]
    assert [p["n"] for p in periods] == [3, 2]
    assert periods[0]["score"] == pytest.approx(100 / 3, abs=0.05)
    assert periods[1]["score"] == 50.0


@pytest.mark.django_db
def test_metrics_json_since_until(nps_feedback):
    arguments = ("--kind", "nps", "--since", "2025-02-01", "--until", "2025-02-28")
    summary = json.loads(run_metrics(*arguments, "--json"))
    assert summary["n"] == 2


@pytest.mark.django_db
def test_metrics_empty_set_gives_null_score():
    summary = json.loads(run_metrics("--kind", "csat", "--by", "week", "--json"))
    assert summary["n"] == 0
    assert summary["score"] is None
    assert summary["margin"] is None
    assert summary["periods"] == []


@pytest.mark.django_db
def test_metrics_table_lists_periods(nps_feedback):
    output = run_metrics("--kind", "nps", "--by", "month")
    lines = output.splitlines()
    assert lines[0].startswith("nps")
    assert lines[1].split() == [
        "period",
        "n",
        "score",
        "margin",
        "promoters",
        "passives",
        "detractors",
    ]
    assert lines[2].split()[:3] == ["all", "5", "40.0"]
    assert lines[3].split()[0] == "2025-01-01"
    assert lines[4].split()[0] == "2025-02-01"


@pytest.mark.django_db
def test_metrics_table_shows_missing_values_as_dash():
    output = run_metrics("--kind", "ces")
    assert output.splitlines()[2].split() == ["all", "0", "-", "-", "-", "-"]


@pytest.mark.django_db
@pytest.mark.parametrize("option", ["--since", "--until"])
@pytest.mark.parametrize("value", ["2025-13-01", "31/01/2025", "yesterday"])
def test_metrics_rejects_bad_date(option, value):
    with pytest.raises(CommandError) as raised:
        run_metrics("--kind", "nps", option, value)
    message = str(raised.value)
    assert option in message
    assert repr(value) in message
    assert "YYYY-MM-DD" in message


@pytest.mark.django_db
def test_metrics_rejects_bad_kind():
    with pytest.raises(CommandError) as raised:
        run_metrics("--kind", "happiness")
    message = str(raised.value)
    assert "'happiness'" in message
    assert "nps, csat, ces, rating" in message


@pytest.mark.django_db
def test_metrics_rejects_bad_period():
    with pytest.raises(CommandError, match="'fortnight'"):
        run_metrics("--kind", "nps", "--by", "fortnight")


@pytest.mark.django_db
def test_metrics_rejects_unknown_topic():
    topics_create()
    with pytest.raises(CommandError) as raised:
        run_metrics("--kind", "nps", "--topic", "weather")
    message = str(raised.value)
    assert "'weather'" in message
    assert "metric-test-alpha" in message
