"""Read-side queries of the feedback app."""

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date
from typing import Any

from django.db.models import Count, F, QuerySet, Sum
from django.db.models.functions import TruncDate, TruncMonth, TruncWeek

from oscm.errors import DomainError

from .metrics import METRIC_KINDS, MetricSummary, metric_summary_from_counts
from .models import Feedback, MetricRollup, Topic

# Weeks start on Monday, as ISO 8601 and Django's TruncWeek define them.
PERIODS = ("day", "week", "month")
_TRUNCATE = {"week": TruncWeek, "month": TruncMonth}


def _topic_id(slug: str) -> int:
    topic_id = Topic.objects.filter(slug=slug).values_list("id", flat=True).first()
    if topic_id is None:
        known = ", ".join(Topic.objects.order_by("slug").values_list("slug", flat=True))
        raise DomainError(
            f"topic {slug!r} not found: use one of {known or '(no topics yet)'}",
            details={"topic": slug},
        )
    return topic_id


def _validate_query(
    *,
    kind: str,
    by: str | None,
    source: str | None,
    since: date | None,
    until: date | None,
) -> None:
    if kind not in METRIC_KINDS:
        raise DomainError(
            f"kind {kind!r} is invalid: use one of {', '.join(METRIC_KINDS)}",
            details={"kind": kind},
        )
    if by is not None and by not in PERIODS:
        raise DomainError(
            f"by {by!r} is invalid: use one of {', '.join(PERIODS)}",
            details={"by": by},
        )
    if source is not None and source not in Feedback.Source.values:
        raise DomainError(
            f"source {source!r} is invalid: use one of "
            f"{', '.join(Feedback.Source.values)}",
            details={"source": source},
        )
    if since is not None and until is not None and since > until:
        raise DomainError(
            f"since {since.isoformat()} is after until {until.isoformat()}: "
            "swap them or widen the range",
            details={"since": since.isoformat(), "until": until.isoformat()},
        )


def _period_expression(*, by: str, day_field: str):
    if by == "day":
        return F(day_field)
    return _TRUNCATE[by](day_field)


def _summaries_from_rows(
    *, kind: str, by: str | None, rows: Iterable[dict[str, Any]]
) -> MetricSummary:
    """Turn (period, score, total) rows of one GROUP BY into the summary dict.

    The loop runs over grouped rows, at most one per period and score, never
    over feedback. A period whose counts add up to 0, as after a correction
    moved its only response, is left out like a period without feedback.
    """
    overall: dict[int, int] = defaultdict(int)
    by_period: dict[date, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        overall[row["score"]] += row["total"]
        if by is not None:
            by_period[row["period"]][row["score"]] += row["total"]

    summary = metric_summary_from_counts(kind=kind, counts=overall)
    if by is not None:
        periods = []
        for period in sorted(by_period):
            counts = by_period[period]
            if sum(counts.values()) == 0:
                continue
            period_summary = metric_summary_from_counts(kind=kind, counts=counts)
            periods.append({"period": period.isoformat(), **period_summary})
        summary["periods"] = periods
    return summary


def _filter_dimensions(
    queryset: QuerySet,
    *,
    day_field: str,
    touchpoint: str | None,
    source: str | None,
    since: date | None,
    until: date | None,
) -> QuerySet:
    if touchpoint is not None:
        queryset = queryset.filter(touchpoint=touchpoint)
    if source is not None:
        queryset = queryset.filter(source=source)
    if since is not None:
        queryset = queryset.filter(**{f"{day_field}__gte": since})
    if until is not None:
        queryset = queryset.filter(**{f"{day_field}__lte": until})
    return queryset


def _grouped_rows(
    queryset: QuerySet, *, by: str | None, day_field: str, total
) -> QuerySet:
    if by is None:
        return queryset.values("score").annotate(total=total).order_by("score")
    return (
        queryset.annotate(period=_period_expression(by=by, day_field=day_field))
        .values("period", "score")
        .annotate(total=total)
        .order_by("period", "score")
    )


def metric_summary(
    *,
    kind: str,
    by: str | None = None,
    touchpoint: str | None = None,
    topic: str | None = None,
    source: str | None = None,
    since: date | None = None,
    until: date | None = None,
) -> MetricSummary:
    """Summarise one metric kind from the rollup table in one GROUP BY query.

    ``topic`` is a topic slug, and ``since`` and ``until`` are inclusive UTC
    days. With ``by`` (day, week or month) the result also has ``periods``,
    one summary per period that has feedback, each with ``period``, the ISO
    date the period starts on. Raises DomainError on an invalid kind, period
    or source, an unknown topic slug, or since after until.
    """
    _validate_query(kind=kind, by=by, source=source, since=since, until=until)
    topic_key = _topic_id(topic) if topic is not None else 0

    rollups = _filter_dimensions(
        MetricRollup.objects.filter(kind=kind, topic_key=topic_key),
        day_field="day",
        touchpoint=touchpoint,
        source=source,
        since=since,
        until=until,
    )

    rows = _grouped_rows(rollups, by=by, day_field="day", total=Sum("count"))
    return _summaries_from_rows(kind=kind, by=by, rows=rows)


def metric_summary_direct(
    *,
    kind: str,
    by: str | None = None,
    touchpoint: str | None = None,
    topic: str | None = None,
    source: str | None = None,
    since: date | None = None,
    until: date | None = None,
) -> MetricSummary:
    """Summarise one metric kind by grouping the feedback table itself.

    Takes the same arguments and returns the same dict as ``metric_summary``.
    It reads every matching feedback row, so it serves tests and benchmarks
    that check the rollups, not dashboards.
    """
    _validate_query(kind=kind, by=by, source=source, since=since, until=until)

    feedback = Feedback.objects.filter(kind=kind, score__isnull=False).annotate(
        utc_day=TruncDate("occurred_at", tzinfo=UTC)
    )
    if topic is not None:
        # The through table contains a topic once per feedback, so this join
        # cannot count a feedback twice.
        feedback = feedback.filter(topics__id=_topic_id(topic))
    feedback = _filter_dimensions(
        feedback,
        day_field="utc_day",
        touchpoint=touchpoint,
        source=source,
        since=since,
        until=until,
    )

    rows = _grouped_rows(feedback, by=by, day_field="utc_day", total=Count("id"))
    return _summaries_from_rows(kind=kind, by=by, rows=rows)
