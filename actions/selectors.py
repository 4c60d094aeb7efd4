"""Read queries for actions and team figures.

Team figures count in the database with grouped aggregates. Every case is
an unhappy case, because cases open only from feedback in a rule's unhappy
band. Cases merged into another are left out so no customer counts twice.
Each figure has its own date: loop closure and the medians take the cases
opened in the range, recovery the cases resolved in it, and the follow-up
response rate the follow-ups sent in it. Ranges include ``since`` and
exclude ``until``.
"""

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import (
    Aggregate,
    Count,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    FloatField,
    Func,
    OuterRef,
    Q,
    QuerySet,
)

from cases.models import Case, FollowUp

from .models import Action

LOOP_CLOSURE_HOURS = 48
FIGURE_GROUPS = ("team", "agent", "root_cause", "source")

# Case field of the group key and of its label, per ``by``.
_GROUP_FIELDS: dict[str, tuple[str, str]] = {
    "team": ("team_id", "team__name"),
    "agent": ("assignee_id", "assignee__username"),
    "root_cause": ("root_cause_id", "root_cause__name"),
    "source": ("trigger_feedback__source", "trigger_feedback__source"),
}


class Median(Aggregate):
    """PostgreSQL's continuous median, ``percentile_cont(0.5)``; nulls are skipped."""

    function = "percentile_cont"
    name = "Median"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()


class EpochSeconds(Func):
    """The length of a PostgreSQL interval in seconds."""

    template = "EXTRACT(EPOCH FROM %(expressions)s)"
    output_field = FloatField()


def _since_trigger(field: str) -> ExpressionWrapper:
    return ExpressionWrapper(
        F(field) - F("trigger_feedback__occurred_at"), output_field=DurationField()
    )


def _percent(part: int, whole: int) -> float | None:
    return round(part / whole * 100, 1) if whole else None


def _hours(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 3600, 2)


def _median_of_sorted(values: list[float]) -> float | None:
    if not values:
        return None
    middle = len(values) // 2
    if len(values) % 2:
        return values[middle]
    return (values[middle - 1] + values[middle]) / 2


def _medians(cases: QuerySet[Case], *, key: str | None) -> dict[Any, dict[str, float | None]]:
    """Return the median seconds from trigger feedback to first contact and to
    resolution, per group key (None for all cases when ``key`` is None)."""
    fields = {"first_contact": "first_response_at", "resolution": "resolved_at"}
    if connection.vendor == "postgresql":
        aggregates = {
            name: Median(EpochSeconds(_since_trigger(field))) for name, field in fields.items()
        }
        if key is None:
            return {None: cases.aggregate(**aggregates)}
        rows = cases.values(key).annotate(**aggregates).order_by()
        return {row[key]: {name: row[name] for name in fields} for row in rows}

    # NOTE: other databases (SQLite in the demo and tests) have no
    # percentile_cont, so the durations come back sorted by the database and
    # the middle is picked here. That reads one value per case, which is
    # fine at demo sizes but not for large installs, which run PostgreSQL.
    medians: dict[Any, dict[str, float | None]] = defaultdict(dict)
    for name, field in fields.items():
        columns = ("duration",) if key is None else (key, "duration")
        rows = (
            cases.filter(**{f"{field}__isnull": False})
            .annotate(duration=_since_trigger(field))
            .values_list(*columns)
            .order_by(*columns)
        )
        values: dict[Any, list[float]] = defaultdict(list)
        for row in rows:
            group_key = None if key is None else row[0]
            values[group_key].append(row[-1].total_seconds())
        for group_key, durations in values.items():
            medians[group_key][name] = _median_of_sorted(durations)
    return medians


def _grouped(queryset: QuerySet, *, key: str | None, label: str | None, **aggregates) -> dict:
    if key is None:
        return {None: {"label": "all", **queryset.aggregate(**aggregates)}}
    columns = (key,) if label == key else (key, label)
    rows = queryset.values(*columns).annotate(**aggregates).order_by()
    return {row[key]: {**row, "label": row[label]} for row in rows}


def team_figures(
    *, cases: QuerySet[Case], since: datetime, until: datetime, by: str
) -> dict[str, Any]:
    """Compute recovery, loop closure, follow-up response and median times per group.

    ``cases`` is the set the caller may see (``cases_visible_to``) and ``by``
    one of FIGURE_GROUPS. Returns ``groups`` (one dict per key) and
    ``total``. Every rate carries its numerator and denominator. The
    recovery rate's denominator is the resolved cases with a follow-up
    response, and customers sent a follow-up without responding are counted
    apart as ``non_responders``.
    """
    if by not in FIGURE_GROUPS:
        raise ValueError(f"by {by!r} is invalid: use one of {', '.join(FIGURE_GROUPS)}")
    key, label = _GROUP_FIELDS[by]
    cases = cases.filter(merged_into__isnull=True)
    groups = {}
    for group_key, group_label in ((key, label), (None, None)):
        groups[group_key] = _figures(cases=cases, since=since, until=until, key=group_key, label=group_label)
    by_key = groups[key]
    ordered = sorted(by_key.values(), key=lambda row: (row["label"] is None, str(row["label"])))
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "by": by,
        "loop_closure_hours": LOOP_CLOSURE_HOURS,
        "groups": ordered,
        "total": groups[None].get(None) or _figure_row(key=None, label="all", parts={}),
    }


def _figures(
    *, cases: QuerySet[Case], since: datetime, until: datetime, key: str | None, label: str | None
) -> dict[Any, dict[str, Any]]:
    opened = cases.filter(opened_at__gte=since, opened_at__lt=until)
    resolved = cases.filter(resolved_at__gte=since, resolved_at__lt=until)
    follow_ups = FollowUp.objects.filter(
        case__in=cases, sent_at__gte=since, sent_at__lt=until
    )
    contacted_in_time = Q(
        first_response_at__lte=F("trigger_feedback__occurred_at")
        + timedelta(hours=LOOP_CLOSURE_HOURS)
    )
    unanswered_follow_up = Exists(
        FollowUp.objects.filter(
            case=OuterRef("pk"), state__in=[FollowUp.State.SENT, FollowUp.State.EXPIRED]
        )
    )
    parts = {
        "opened": _grouped(
            opened, key=key, label=label,
            opened=Count("pk"), closed_in_time=Count("pk", filter=contacted_in_time),
        ),
        "resolved": _grouped(
            resolved, key=key, label=label,
            resolved=Count("pk"),
            answered=Count("pk", filter=Q(is_recovered__isnull=False)),
            recovered=Count("pk", filter=Q(is_recovered=True)),
            non_responders=Count("pk", filter=Q(is_recovered__isnull=True) & unanswered_follow_up),
        ),
        "follow_ups": _grouped(
            follow_ups,
            key=None if key is None else f"case__{key}",
            label=None if label is None else f"case__{label}",
            sent=Count("pk"), follow_ups_answered=Count("pk", filter=Q(answered_at__isnull=False)),
        ),
        "medians": _medians(opened, key=key),
    }  # fmt: skip
    keys: set[Any] = set()
    for part in parts.values():
        keys.update(part)
    return {
        group_key: _figure_row(key=group_key, label=_label_of(parts, group_key), parts=parts)
        for group_key in keys
    }


def _label_of(parts: dict[str, dict], group_key: Any) -> Any:
    for name in ("opened", "resolved", "follow_ups"):
        row = parts[name].get(group_key)
        if row is not None:
            return row["label"]
    return group_key


def _figure_row(*, key: Any, label: Any, parts: dict[str, dict]) -> dict[str, Any]:
    opened = parts.get("opened", {}).get(key) or {}
    resolved = parts.get("resolved", {}).get(key) or {}
    follow_ups = parts.get("follow_ups", {}).get(key) or {}
    medians = parts.get("medians", {}).get(key) or {}
    opened_count = opened.get("opened") or 0
    closed_in_time = opened.get("closed_in_time") or 0
    answered = resolved.get("answered") or 0
    recovered = resolved.get("recovered") or 0
    sent = follow_ups.get("sent") or 0
    follow_ups_answered = follow_ups.get("follow_ups_answered") or 0
    return {
        "key": key,
        "label": label,
        "loop_closure": {
            "contacted_within_48h": closed_in_time,
            "opened": opened_count,
            "rate": _percent(closed_in_time, opened_count),
        },
        "recovery": {
            "recovered": recovered,
            "answered": answered,
            "non_responders": resolved.get("non_responders") or 0,
            "resolved": resolved.get("resolved") or 0,
            "rate": _percent(recovered, answered),
        },
        "follow_up_response": {
            "answered": follow_ups_answered,
            "sent": sent,
            "rate": _percent(follow_ups_answered, sent),
        },
        "median_hours_to_first_contact": _hours(medians.get("first_contact")),
        "median_hours_to_resolution": _hours(medians.get("resolution")),
    }


def action_list_for(*, actions: QuerySet[Action]) -> QuerySet[Action]:
    """Return actions with the columns a list shows and their case counts."""
    return actions.select_related("team", "owner", "topic").annotate(
        case_count=Count("actioncase", distinct=True)
    )


def actions_due_for_measurement(*, now: datetime, limit: int) -> list[int]:
    """Return ids of done actions whose measurement is due and not yet taken."""
    rows = Action.objects.filter(
        state=Action.State.DONE, measure_due_at__lte=now, measured_at__isnull=True
    ).order_by("measure_due_at", "pk")
    return list(rows.values_list("pk", flat=True)[:limit])


def actions_overdue_ids(*, today, limit: int) -> list[int]:
    """Return ids of open actions past their due date not yet reminded today."""
    rows = (
        Action.objects.filter(
            state__in=(Action.State.PLANNED, Action.State.IN_PROGRESS), due_date__lt=today
        )
        .exclude(last_reminded_on__gte=today)
        .order_by("due_date", "pk")
    )
    return list(rows.values_list("pk", flat=True)[:limit])


def team_digest(*, team_ids: Iterable[int], now: datetime) -> dict[str, Any]:
    """Collect a lead's daily digest over ``team_ids``.

    New and breached cases count the last 24 hours. The recovery rate
    covers cases resolved in the last 30 days. Actions due are open actions
    due within 7 days or overdue, and verdicts are those of the last 7 days.
    """
    team_ids = list(team_ids)
    day_ago = now - timedelta(days=1)
    cases = Case.objects.filter(team_id__in=team_ids)
    breached = Q(first_response_breached_at__gte=day_ago) | Q(resolution_breached_at__gte=day_ago)
    figures = team_figures(cases=cases, since=now - timedelta(days=30), until=now, by="team")
    actions = Action.objects.filter(team_id__in=team_ids).select_related("team", "owner")
    return {
        "new_cases": list(
            cases.filter(opened_at__gte=day_ago).select_related("team").order_by("team__name", "pk")
        ),
        "breached_cases": list(cases.filter(breached).select_related("team").order_by("team__name", "pk")),
        "recovery": figures["groups"],
        "actions_due": list(
            actions.filter(
                state__in=(Action.State.PLANNED, Action.State.IN_PROGRESS),
                due_date__lte=(now + timedelta(days=7)).date(),
            ).order_by("due_date", "pk")
        ),
        "verdicts": list(
            actions.filter(measured_at__gte=now - timedelta(days=7)).order_by("-measured_at", "pk")
        ),
    }
