import io
import random
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from django.core.management import call_command

from feedback import rollups
from feedback.models import Feedback, MetricRollup
from feedback.rollups import rollup_rebuild, rollup_record
from feedback.selectors import metric_summary, metric_summary_direct
from oscm.errors import DomainError

from .metric_data import (
    SCORE_RANGES,
    feedback_create_random,
    feedback_entry,
    rollup_rows,
    topics_create,
)

KINDS = ["nps", "csat", "ces", "rating"]
PERIODS = [None, "day", "week", "month"]


def filter_cases(topic_slug: str) -> list[dict]:
    return [
        {},
        {"touchpoint": "checkout"},
        {"touchpoint": ""},
        {"topic": topic_slug},
        {"source": "review"},
        {"since": date(2025, 1, 6), "until": date(2025, 2, 2)},
        {"topic": topic_slug, "touchpoint": "delivery", "since": date(2025, 1, 1)},
    ]


def assert_rollups_exact(topic_slug: str) -> None:
    for kind in KINDS:
        for by in PERIODS:
            for filters in filter_cases(topic_slug):
                expected = metric_summary_direct(kind=kind, by=by, **filters)
                actual = metric_summary(kind=kind, by=by, **filters)
                assert actual == expected, (kind, by, filters)


@pytest.fixture
def topics():
    return topics_create()


@pytest.mark.django_db
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rollups_match_direct_queries(seed, topics):
    feedback_create_random(seed=seed, count=600, topics=topics)
    assert_rollups_exact(topics[0].slug)


@pytest.mark.django_db
def test_rollups_match_with_small_chunks(topics, monkeypatch):
    # Three rows a statement forces many chunks through the upsert loop.
    monkeypatch.setattr(rollups, "_chunk_size", lambda: 3)
    feedback_create_random(seed=4, count=200, topics=topics)
    assert_rollups_exact(topics[1].slug)


@pytest.mark.django_db
def test_rollups_summary_counts_are_not_empty(topics):
    # Guards the equality tests against passing on two empty results.
    feedback_create_random(seed=5, count=400, topics=topics)
    for kind in KINDS:
        summary = metric_summary(kind=kind, by="month", topic=topics[0].slug)
        assert summary["n"] > 0
        assert len(summary["periods"]) >= 2


@pytest.mark.django_db
def test_rollups_correction_stays_exact(topics):
    created = feedback_create_random(seed=6, count=500, topics=topics)
    rng = random.Random(6)
    scored = [(f, ids) for f, ids in created if f.score is not None]
    for feedback, topic_ids in rng.sample(scored, 60):
        rollup_record([feedback_entry(feedback, topic_ids)], sign=-1)
        feedback.score = rng.randint(*SCORE_RANGES[feedback.kind])
        feedback.save(update_fields=["score"])
        rollup_record([feedback_entry(feedback, topic_ids)], sign=1)
    assert_rollups_exact(topics[0].slug)


@pytest.mark.django_db
def test_rollups_correction_to_no_score_stays_exact(topics):
    created = feedback_create_random(seed=7, count=300, topics=topics)
    for feedback, topic_ids in created[:40]:
        rollup_record([feedback_entry(feedback, topic_ids)], sign=-1)
        feedback.score = None
        feedback.save(update_fields=["score"])
    assert_rollups_exact(topics[2].slug)


@pytest.mark.django_db
def test_rollup_rebuild_gives_same_table(topics):
    feedback_create_random(seed=8, count=500, topics=topics)
    recorded = rollup_rows()
    rows = rollup_rebuild()
    assert rollup_rows() == recorded
    assert rows == len(recorded)


@pytest.mark.django_db
def test_rollup_rebuild_drops_stale_and_zero_rows(topics):
    created = feedback_create_random(seed=9, count=200, topics=topics)
    feedback, topic_ids = next((f, ids) for f, ids in created if f.score is not None)
    rollup_record([feedback_entry(feedback, topic_ids)], sign=-1)
    feedback.delete()
    expected = rollup_rows()
    MetricRollup.objects.create(
        day=date(2020, 1, 1), kind="nps", source="survey", score=9, count=5
    )
    rollup_rebuild()
    assert rollup_rows() == expected
    assert not MetricRollup.objects.filter(count=0).exists()


@pytest.mark.django_db
def test_rebuild_rollups_command(topics):
    feedback_create_random(seed=10, count=100, topics=topics)
    recorded = rollup_rows()
    MetricRollup.objects.all().delete()
    output = io.StringIO()
    call_command("rebuild_rollups", stdout=output)
    assert rollup_rows() == recorded
    assert f"rebuilt {len(recorded)} rollup rows" in output.getvalue()


@pytest.mark.django_db
def test_rollup_record_uses_utc_day(topics):
    # 20:30 at UTC-5 on 1 March is 01:30 UTC on 2 March.
    occurred_at = datetime(2025, 3, 1, 20, 30, tzinfo=timezone(timedelta(hours=-5)))
    entry = (occurred_at, "nps", "survey", "checkout", [topics[0].id], 10)
    rollup_record([entry, entry])
    rows = set(MetricRollup.objects.values_list("day", "topic_key", "score", "count"))
    assert rows == {
        (date(2025, 3, 2), 0, 10, 2),
        (date(2025, 3, 2), topics[0].id, 10, 2),
    }


@pytest.mark.django_db
def test_rollup_record_adds_to_existing_rows():
    entry = (datetime(2025, 3, 1, tzinfo=UTC), "csat", "survey", "", [], 4)
    rollup_record([entry])
    rollup_record([entry, entry])
    assert MetricRollup.objects.get().count == 3


@pytest.mark.django_db
def test_rollup_record_skips_entries_without_score():
    entry = (datetime(2025, 3, 1, tzinfo=UTC), "text", "review", "", [], None)
    assert rollup_record([entry]) == 0
    assert not MetricRollup.objects.exists()


@pytest.mark.django_db
def test_rollup_record_counts_repeated_topic_once(topics):
    topic_id = topics[0].id
    entry = (
        datetime(2025, 3, 1, tzinfo=UTC),
        "nps",
        "survey",
        "",
        [topic_id, topic_id],
        7,
    )
    rollup_record([entry])
    assert MetricRollup.objects.get(topic_key=topic_id).count == 1


def test_rollup_record_rejects_naive_datetime():
    entry = (datetime(2025, 3, 1), "nps", "survey", "", [], 7)
    with pytest.raises(ValueError, match="naive"):
        rollup_record([entry])


def test_rollup_record_rejects_bad_sign():
    with pytest.raises(ValueError, match="sign"):
        rollup_record([], sign=2)


@pytest.mark.django_db
def test_metric_summary_unknown_topic_lists_known(topics):
    with pytest.raises(DomainError) as raised:
        metric_summary(kind="nps", topic="no-such-topic")
    assert "'no-such-topic'" in raised.value.message
    assert "metric-test-alpha" in raised.value.message


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"kind": "text"}, "'text'"),
        ({"kind": "nps", "by": "year"}, "'year'"),
        ({"kind": "nps", "source": "fax"}, "'fax'"),
        (
            {"kind": "nps", "since": date(2025, 2, 1), "until": date(2025, 1, 1)},
            "2025-02-01",
        ),
    ],
)
def test_metric_summary_rejects_invalid_query(arguments, named):
    with pytest.raises(DomainError) as raised:
        metric_summary(**arguments)
    assert named in raised.value.message


@pytest.mark.django_db
def test_metric_summary_by_week_starts_monday():
    # 2025-01-01 is a Wednesday, so its week starts on Monday 2024-12-30.
    occurred_at = datetime(2025, 1, 1, 12, tzinfo=UTC)
    Feedback.objects.create(
        kind="ces", score=5, source="survey", occurred_at=occurred_at, external_id="w"
    )
    rollup_record([(occurred_at, "ces", "survey", "", [], 5)])
    summary = metric_summary(kind="ces", by="week")
    assert [p["period"] for p in summary["periods"]] == ["2024-12-30"]
    assert summary == metric_summary_direct(kind="ces", by="week")
