"""Read queries for cases: open cases by dedup key, agent workload, team
queues and feedback still waiting for evaluation."""

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from feedback import pgcopy
from feedback.models import Feedback

from .models import Case, CaseRule, RoutingRule, Team, TeamMember

# Text feedback with a comment needs its sentiment before the text rule can
# judge it, so evaluation leaves it alone until the analysis stamps
# ``analyzed_at``. Score rules need no analysis.
FEEDBACK_NOT_READY = Q(kind=Feedback.Kind.TEXT, analyzed_at__isnull=True) & ~Q(
    comment=""
)


def case_open_ids_by_dedup_key(*, dedup_keys: Iterable[str]) -> dict[str, int]:
    """Return the open case id for each key that has one, in one query.

    Filtering on ``is_open`` lets PostgreSQL use the partial unique index on
    ``dedup_key``. The keys travel as one array, because a batch has
    thousands of them.
    """
    rows = Case.objects.filter(
        is_open=True, dedup_key__in=pgcopy.in_values(dedup_keys, sql_type="text")
    ).values_list("dedup_key", "pk")
    return dict(rows)


def team_agents_with_workload(
    *, team_ids: Iterable[int]
) -> dict[int, list[TeamMember]]:
    """Return each team's agents with ``open_case_count`` annotated.

    The count covers every open case assigned to the user, in any team,
    because ``max_open_cases`` limits the person's workload. Away and
    inactive agents are included so callers can say why nobody was free.
    """
    open_cases = (
        Case.objects.filter(assignee_id=OuterRef("user_id"), is_open=True)
        .order_by()
        .values("assignee_id")
        .annotate(count=Count("pk"))
        .values("count")
    )
    members = (
        TeamMember.objects.filter(
            team_id__in=list(team_ids), role=TeamMember.Role.AGENT
        )
        .select_related("user")
        .annotate(open_case_count=Coalesce(Subquery(open_cases), 0))
        .order_by("pk")
    )
    by_team: dict[int, list[TeamMember]] = defaultdict(list)
    for member in members:
        by_team[member.team_id].append(member)
    return by_team


def feedback_unevaluated_ids(
    *, received_before: datetime, after_pk: int, limit: int
) -> list[int]:
    """Return up to ``limit`` ids of feedback ready but never evaluated.

    Ids come in ascending order after ``after_pk``, so a caller paging with
    the last id always moves forward, even past rows another worker has locked.
    """
    rows = (
        Feedback.objects.filter(
            evaluated_at__isnull=True, received_at__lt=received_before, pk__gt=after_pk
        )
        .exclude(FEEDBACK_NOT_READY)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    return list(rows[:limit])


def case_list_for_team(*, team: Team, is_open: bool = True) -> QuerySet[Case]:
    """Return a team's cases, most urgent first and oldest first within a
    priority, with the columns a queue view shows."""
    return (
        Case.objects.filter(team=team, is_open=is_open)
        .select_related("customer", "assignee", "topic", "rule")
        .order_by("-priority", "opened_at", "pk")
    )


def routing_rules_active() -> tuple[list[RoutingRule], Team | None]:
    """Return the active routing rules in the order they are tried, with
    their teams and topics, and the fallback team (None if no team is one)."""
    rules = list(
        RoutingRule.objects.filter(is_active=True)
        .select_related("team", "topic")
        .order_by("position", "pk")
    )
    return rules, Team.objects.filter(is_fallback=True).first()


def case_rules_by_kind() -> dict[str, list[CaseRule]]:
    """Return the active case rules of each feedback kind, in the order they
    are tried."""
    rules: dict[str, list[CaseRule]] = {}
    for rule in CaseRule.objects.filter(is_active=True).order_by("position", "pk"):
        rules.setdefault(rule.kind, []).append(rule)
    return rules
