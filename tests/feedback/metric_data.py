"""Random scored feedback with rollups, shared by the metric tests."""

import random
from datetime import UTC, datetime, timedelta, timezone

from feedback.metrics import SCORE_RANGES
from feedback.models import Feedback, FeedbackTopic, MetricRollup, Topic
from feedback.rollups import RollupEntry, rollup_record

TOUCHPOINTS = ["checkout", "delivery", "support-chat", ""]
SOURCES = ["survey", "review", "support"]
# Offsets around UTC, so local evenings fall on the next UTC day.
OFFSETS = [timezone(timedelta(hours=hours)) for hours in (-8, -3, 0, 5, 9)]
START = datetime(2024, 12, 20, tzinfo=UTC)


def topics_create() -> list[Topic]:
    return [
        Topic.objects.create(slug=f"metric-test-{name}", name=f"Metric test {name}")
        for name in ("alpha", "beta", "gamma")
    ]


def feedback_entry(feedback: Feedback, topic_ids: list[int]) -> RollupEntry:
    return (
        feedback.occurred_at,
        feedback.kind,
        feedback.source,
        feedback.touchpoint,
        topic_ids,
        feedback.score,
    )


def feedback_create_random(
    *, seed: int, count: int, topics: list[Topic]
) -> list[tuple[Feedback, list[int]]]:
    """Create ``count`` feedback over about 70 days and record their rollups.

    About one row in five is text feedback without a score, which the rollups
    must skip. Returns each feedback with the ids of its topics.
    """
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        kind = rng.choice([*SCORE_RANGES, "text"])
        score = None if kind == "text" else rng.randint(*SCORE_RANGES[kind])
        local_start = START.astimezone(rng.choice(OFFSETS))
        occurred_at = local_start + timedelta(minutes=rng.randrange(70 * 24 * 60))
        rows.append(
            Feedback(
                kind=kind,
                score=score,
                source=rng.choice(SOURCES),
                touchpoint=rng.choice(TOUCHPOINTS),
                occurred_at=occurred_at,
                external_id=f"metric-{seed}-{index}",
            )
        )
    created = Feedback.objects.bulk_create(rows)

    links = []
    result = []
    for feedback in created:
        chosen = rng.sample(topics, k=rng.choice([0, 0, 1, 2]))
        links.extend(FeedbackTopic(feedback=feedback, topic=t) for t in chosen)
        result.append((feedback, [t.id for t in chosen]))
    FeedbackTopic.objects.bulk_create(links)

    rollup_record(feedback_entry(f, topic_ids) for f, topic_ids in result)
    return result


def rollup_rows() -> set[tuple]:
    """Return every rollup row with a non-zero count, without ids."""
    return set(
        MetricRollup.objects.exclude(count=0).values_list(
            "day", "kind", "source", "touchpoint", "topic_key", "score", "count"
        )
    )
