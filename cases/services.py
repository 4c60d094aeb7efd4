"""Write services for cases: evaluate feedback against the case rules, open a
case or attach to the open one, route it to a team and assign an agent.

Evaluation is set-based: a batch of a few thousand feedback ids costs the same
fixed number of queries, with no query per row.
"""

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from feedback.models import Feedback
from oscm.errors import DomainError

from . import selectors
from .models import Case, CaseFeedback, CaseRule, RoutingRule, Team, TeamMember
from .workflow import case_events_record_opening

logger = logging.getLogger(__name__)

# Fields the rules, the dedup key and routing read; everything else stays in
# the database.
_EVALUATION_FIELDS = (
    "id",
    "customer_id",
    "kind",
    "score",
    "sentiment",
    "touchpoint",
    "primary_topic_id",
)

_KIND_LABELS = {
    Feedback.Kind.NPS: "NPS",
    Feedback.Kind.CSAT: "CSAT",
    Feedback.Kind.CES: "CES",
    Feedback.Kind.RATING: "Rating",
    Feedback.Kind.TEXT: "Text",
}


@dataclass(frozen=True)
class EvaluationResult:
    evaluated: int = 0
    cases_opened: int = 0
    attached: int = 0

    def __add__(self, other: "EvaluationResult") -> "EvaluationResult":
        return EvaluationResult(
            evaluated=self.evaluated + other.evaluated,
            cases_opened=self.cases_opened + other.cases_opened,
            attached=self.attached + other.attached,
        )


@dataclass(frozen=True)
class RuleMatch:
    """A feedback that a case rule matched, and the reason in words."""

    feedback: Feedback
    rule: CaseRule
    reason: str

    @property
    def dedup_key(self) -> str:
        return case_dedup_key(feedback=self.feedback)


@dataclass(frozen=True)
class RoutingDecision:
    team: Team
    rule: RoutingRule | None
    reason: str


@dataclass(frozen=True)
class CaseOpenResult:
    cases: list[Case]
    attached: int


def case_dedup_key(*, feedback: Feedback) -> str:
    """Return the key that allows one open case per customer and topic.

    Feedback without a customer cannot be grouped, so it keys on itself.
    """
    if feedback.customer_id is None:
        return f"f{feedback.pk}"
    return f"c{feedback.customer_id}:t{feedback.primary_topic_id or 0}"


def case_rule_match(
    *, feedback: Feedback, rules: Sequence[CaseRule]
) -> RuleMatch | None:
    """Return the first rule, in the given order, that the feedback meets.

    A rule matches feedback of its kind when every bound it sets is met. A
    skipped question (score None) never meets a score bound, and feedback
    without a sentiment never meets a sentiment bound.
    """
    for rule in rules:
        if rule.kind != feedback.kind:
            continue
        reasons = _rule_bounds_met(rule=rule, feedback=feedback)
        if reasons is not None:
            return RuleMatch(
                feedback=feedback,
                rule=rule,
                reason=f"{' and '.join(reasons)} (rule '{rule.name}')",
            )
    return None


def _rule_bounds_met(*, rule: CaseRule, feedback: Feedback) -> list[str] | None:
    """Return one phrase per bound the rule sets, or None if a bound fails."""
    label = _KIND_LABELS.get(feedback.kind, feedback.kind)
    phrases = []
    if rule.score_min is not None or rule.score_max is not None:
        score = feedback.score
        if score is None:
            return None
        if rule.score_min is not None and score < rule.score_min:
            return None
        if rule.score_max is not None and score > rule.score_max:
            return None
        phrases.append(
            f"{label} score {score} {_describe_range(rule.score_min, rule.score_max)}"
        )
    if rule.sentiment_max is not None:
        sentiment = feedback.sentiment
        if sentiment is None or sentiment > rule.sentiment_max:
            return None
        phrases.append(f"sentiment {sentiment:.2f} is at most {rule.sentiment_max:g}")
    if not phrases:
        phrases.append(f"the rule sets no bounds, so every {label} feedback matches")
    return phrases


def _describe_range(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"equals {low}" if low == high else f"is within {low}-{high}"
    if low is not None:
        return f"is at least {low}"
    return f"is at most {high}"


def case_route(
    *,
    topic_id: int | None,
    touchpoint: str,
    rules: Sequence[RoutingRule],
    fallback_team: Team | None,
) -> RoutingDecision:
    """Pick the team for a case: the first rule in the given order whose
    topic and touchpoint both match, blank matching anything.

    Touchpoints compare without case. Raises DomainError when nothing matches
    and no team is marked as fallback.
    """
    touchpoint_key = touchpoint.strip().lower()
    for rule in rules:
        if rule.topic_id is not None and rule.topic_id != topic_id:
            continue
        if rule.touchpoint and rule.touchpoint.strip().lower() != touchpoint_key:
            continue
        conditions = []
        if rule.topic_id is not None:
            conditions.append(f"topic {rule.topic.name}")
        if rule.touchpoint:
            conditions.append(f"touchpoint {touchpoint}")
        condition = " and ".join(conditions) or "any case"
        reason = f"{condition} matched rule #{rule.pk} -> {rule.team.name}"
        return RoutingDecision(team=rule.team, rule=rule, reason=reason)
    if fallback_team is None:
        raise DomainError(
            "No routing rule matched and no team is marked as the fallback team: "
            "tick 'is fallback' on one team in the admin.",
            details={"topic_id": topic_id, "touchpoint": touchpoint},
        )
    reason = f"no routing rule matched; fallback team {fallback_team.name}"
    return RoutingDecision(team=fallback_team, rule=None, reason=reason)


def case_assign(*, cases: Sequence[Case], now: datetime) -> int:
    """Assign each case, not yet saved, to an available agent of its team.

    Sets ``assignee``, ``state`` and ``assignment_reason`` on the cases and
    saves the chosen agents' ``last_assigned_at``. The team rows stay locked
    (SELECT ... FOR UPDATE) until the caller's transaction ends, so two
    workers never hand out the same free slot. Returns how many cases got an
    agent.
    """
    if not cases:
        return 0
    team_ids = sorted({case.team_id for case in cases})
    teams = {
        team.pk: team
        for team in Team.objects.select_for_update()
        .filter(pk__in=team_ids)
        .order_by("pk")
    }
    agents_by_team = selectors.team_agents_with_workload(team_ids=team_ids)

    pools = {
        team_id: _AgentPool(
            team=teams[team_id], members=agents_by_team.get(team_id, [])
        )
        for team_id in team_ids
    }
    for case in cases:
        pools[case.team_id].assign(case)

    assigned_members: list[TeamMember] = []
    for pool in pools.values():
        assigned_members.extend(pool.stamp_last_assigned(now=now))
    if assigned_members:
        TeamMember.objects.bulk_update(assigned_members, ["last_assigned_at"])
    return sum(pool.assigned for pool in pools.values())


class _AgentPool:
    """The available agents of one locked team and their spare slots.

    Agents are kept least recently assigned first (never assigned before
    anyone); each assignment moves the agent to the back.
    """

    def __init__(self, *, team: Team, members: list[TeamMember]):
        self.team = team
        self.members = members
        self.available = sorted(
            (
                member
                for member in members
                if not member.is_away and member.user.is_active
            ),
            key=lambda member: (
                member.last_assigned_at is not None,
                member.last_assigned_at or datetime.min,
                member.pk,
            ),
        )
        self.spare = {
            member.pk: max(member.max_open_cases - member.open_case_count, 0)
            for member in self.available
        }
        self.assigned = 0
        self._order: list[TeamMember] = []

    def assign(self, case: Case) -> None:
        candidates = [member for member in self.available if self.spare[member.pk] > 0]
        if not candidates:
            case.state = Case.State.NEW
            case.assignment_reason = self._nobody_reason()
            return
        if self.team.assignment_strategy == Team.AssignmentStrategy.CAPACITY:
            # max() keeps the first of equals, so ties go round-robin.
            member = max(candidates, key=lambda candidate: self.spare[candidate.pk])
            reason = (
                f"most spare capacity in {self.team.name}: {member.user.get_username()} "
                f"had {self.spare[member.pk]} of {member.max_open_cases} slots free"
            )
        else:
            member = candidates[0]
            open_count = member.max_open_cases - self.spare[member.pk]
            reason = (
                f"round-robin in {self.team.name}: {member.user.get_username()} was the "
                f"least recently assigned available agent ({open_count} of "
                f"{member.max_open_cases} open cases)"
            )
        case.assignee = member.user
        case.state = Case.State.ASSIGNED
        case.assignment_reason = reason
        self.spare[member.pk] -= 1
        self.available.remove(member)
        self.available.append(member)
        self._order.append(member)
        self.assigned += 1

    def stamp_last_assigned(self, *, now: datetime) -> list[TeamMember]:
        """Give each assigned agent a ``last_assigned_at`` in assignment
        order, one microsecond apart and ending at ``now``, so the next batch
        continues the rotation."""
        stamped: dict[int, TeamMember] = {}
        total = len(self._order)
        for index, member in enumerate(self._order):
            member.last_assigned_at = now - timedelta(microseconds=total - 1 - index)
            stamped[member.pk] = member
        return list(stamped.values())

    def _nobody_reason(self) -> str:
        if not self.members:
            return f"no available agent in {self.team.name}: the team has no agents"
        away = sum(1 for member in self.members if member.is_away)
        inactive = sum(
            1
            for member in self.members
            if not member.is_away and not member.user.is_active
        )
        full = len(self.members) - away - inactive
        return (
            f"no available agent in {self.team.name}: {away} away, "
            f"{inactive} inactive, {full} at capacity"
        )


def case_open(*, matches: Sequence[RuleMatch], now: datetime) -> CaseOpenResult:
    """Open one case per new customer and topic, attach the rest.

    Feedback whose customer and topic already have an open case, or share
    them with earlier feedback of the batch, becomes a CaseFeedback row of
    that case. New cases are routed and assigned before one bulk insert.
    Must run inside a transaction, because assignment locks team rows.
    """
    open_case_ids = selectors.case_open_ids_by_dedup_key(
        dedup_keys={match.dedup_key for match in matches}
    )
    new_cases: dict[str, Case] = {}
    later: list[RuleMatch] = []
    for match in matches:
        if match.dedup_key in open_case_ids or match.dedup_key in new_cases:
            later.append(match)
            continue
        feedback = match.feedback
        new_cases[match.dedup_key] = Case(
            customer_id=feedback.customer_id,
            trigger_feedback=feedback,
            topic_id=feedback.primary_topic_id,
            priority=match.rule.priority,
            dedup_key=match.dedup_key,
            rule=match.rule,
            rule_reason=match.reason,
            opened_at=now,
            updated_at=now,
        )

    cases = list(new_cases.values())
    _cases_route(cases=cases)
    case_assign(cases=cases, now=now)
    from .escalation import case_sla_apply

    # Due times are set in memory, so the bulk insert writes them.
    case_sla_apply(cases=cases, now=now)
    conflicts = _cases_insert(cases=cases)

    case_ids = dict(open_case_ids)
    case_ids.update({case.dedup_key: case.pk for case in cases if case.pk is not None})
    case_ids.update(conflicts)
    links = [
        CaseFeedback(case_id=case.pk, feedback=case.trigger_feedback, attached_at=now)
        for case in cases
        if case.pk is not None
    ]
    later.extend(_match_of(case) for case in cases if case.pk is None)
    links.extend(
        CaseFeedback(
            case_id=case_ids[match.dedup_key], feedback=match.feedback, attached_at=now
        )
        for match in later
    )
    CaseFeedback.objects.bulk_create(links)
    opened = [case for case in cases if case.pk is not None]
    case_events_record_opening(
        opened=opened,
        attached=[(case_ids[match.dedup_key], match.feedback.pk) for match in later],
        now=now,
    )
    from .webhooks import case_webhook_payload, webhook_events_emit

    # One endpoint query per batch; nothing more when no endpoint listens.
    webhook_events_emit(
        event="case.opened",
        items=[(case.pk, "opened", case_webhook_payload(case)) for case in opened],
    )

    touched = {case_ids[match.dedup_key] for match in later} - {
        case.pk for case in cases
    }
    if touched:
        Case.objects.filter(pk__in=touched).update(updated_at=now)
    return CaseOpenResult(
        cases=[case for case in cases if case.pk is not None], attached=len(later)
    )


def _match_of(case: Case) -> RuleMatch:
    return RuleMatch(
        feedback=case.trigger_feedback, rule=case.rule, reason=case.rule_reason
    )


def _cases_route(*, cases: Sequence[Case]) -> None:
    if not cases:
        return
    rules = list(
        RoutingRule.objects.filter(is_active=True)
        .select_related("team", "topic")
        .order_by("position", "pk")
    )
    fallback_team = Team.objects.filter(is_fallback=True).first()
    for case in cases:
        decision = case_route(
            topic_id=case.topic_id,
            touchpoint=case.trigger_feedback.touchpoint,
            rules=rules,
            fallback_team=fallback_team,
        )
        case.team = decision.team
        case.routing_rule = decision.rule
        case.routing_reason = decision.reason


def _cases_insert(*, cases: list[Case]) -> dict[str, int]:
    """Insert the cases in bulk, or one by one after a dedup conflict.

    Another worker may commit an open case with the same dedup key between
    the lookup and this insert, and the partial unique index then rejects
    this one. Each rejected case stays unsaved (pk None). The returned dict
    maps its key to the other worker's case id, so the caller attaches.
    """
    if not cases:
        return {}
    try:
        with transaction.atomic():
            # The same key order in every worker keeps two inserts waiting on
            # each other's keys from deadlocking.
            Case.objects.bulk_create(sorted(cases, key=lambda case: case.dedup_key))
        return {}
    except IntegrityError:
        logger.warning(
            "Bulk case insert hit an open case opened concurrently; inserting one by one",
            extra={"case_count": len(cases)},
        )
    # NOTE: the agents chosen for rejected cases keep their new
    # last_assigned_at, so the rotation skips them once.
    conflicts: dict[str, int] = {}
    for case in cases:
        case.pk = None
        try:
            with transaction.atomic():
                case.save(force_insert=True)
        except IntegrityError:
            case.pk = None
            winner = (
                Case.objects.filter(is_open=True, dedup_key=case.dedup_key)
                .values_list("pk", flat=True)
                .first()
            )
            if winner is None:
                raise
            conflicts[case.dedup_key] = winner
    return conflicts


def feedback_evaluate(*, feedback_ids: Iterable[int]) -> EvaluationResult:
    """Evaluate feedback against the case rules, opening or attaching cases.

    Idempotent: rows with ``evaluated_at`` null are claimed with SELECT ...
    FOR UPDATE SKIP LOCKED and stamped in the same transaction. SQLite
    ignores the lock, which is safe because it runs one write transaction at
    a time. Ids already evaluated, locked by another worker or missing are
    skipped, and so is text not yet analysed, which the sweep retries.
    """
    ids = sorted(set(feedback_ids))
    if not ids:
        return EvaluationResult()

    with transaction.atomic():
        now = timezone.now()
        claimed = list(
            Feedback.objects.filter(pk__in=ids, evaluated_at__isnull=True)
            .exclude(selectors.FEEDBACK_NOT_READY)
            .only(*_EVALUATION_FIELDS)
            .order_by("pk")
            .select_for_update(skip_locked=True)
        )
        if not claimed:
            return EvaluationResult()
        Feedback.objects.filter(pk__in=[row.pk for row in claimed]).update(
            evaluated_at=now
        )

        rules = list(CaseRule.objects.filter(is_active=True).order_by("position", "pk"))
        matches = [
            match
            for feedback in claimed
            if (match := case_rule_match(feedback=feedback, rules=rules)) is not None
        ]
        opened = (
            case_open(matches=matches, now=now) if matches else CaseOpenResult([], 0)
        )

    _log_batch(requested=len(ids), claimed=len(claimed), opened=opened)
    return EvaluationResult(
        evaluated=len(claimed), cases_opened=len(opened.cases), attached=opened.attached
    )


def _log_batch(*, requested: int, claimed: int, opened: CaseOpenResult) -> None:
    assigned = sum(1 for case in opened.cases if case.assignee_id is not None)
    logger.info(
        "Evaluated %d of %d feedback: %d cases opened (%d assigned), %d attached",
        claimed,
        requested,
        len(opened.cases),
        assigned,
        opened.attached,
        extra={
            "feedback_requested": requested,
            "feedback_evaluated": claimed,
            "cases_opened": len(opened.cases),
            "cases_assigned": assigned,
            "feedback_attached": opened.attached,
        },
    )
    per_team: dict[int, list[Case]] = {}
    for case in opened.cases:
        per_team.setdefault(case.team_id, []).append(case)
    for team_id, cases in per_team.items():
        logger.info(
            "Routed %d new cases to team %s, %d assigned",
            len(cases),
            team_id,
            sum(1 for case in cases if case.assignee_id is not None),
            extra={"team_id": team_id},
        )


def feedback_sweep(
    *, older_than_seconds: int | None = None, batch_size: int | None = None
) -> EvaluationResult:
    """Evaluate stored feedback that no task evaluated, in batches.

    Picks feedback with ``evaluated_at`` null received more than
    ``older_than_seconds`` ago (default ``OSCM_SWEEP_GRACE_SECONDS``), so
    feedback whose task was lost, for example in a broker outage, still gets
    its case. Each batch of ``batch_size`` (default ``OSCM_BATCH_SIZE``)
    commits on its own.
    """
    if older_than_seconds is None:
        older_than_seconds = settings.OSCM_SWEEP_GRACE_SECONDS
    if batch_size is None:
        batch_size = settings.OSCM_BATCH_SIZE
    received_before = timezone.now() - timedelta(seconds=older_than_seconds)

    total = EvaluationResult()
    after_pk = 0
    while True:
        ids = selectors.feedback_unevaluated_ids(
            received_before=received_before, after_pk=after_pk, limit=batch_size
        )
        if not ids:
            break
        total += feedback_evaluate(feedback_ids=ids)
        after_pk = ids[-1]
        if len(ids) < batch_size:
            break

    if total.evaluated:
        logger.info(
            "Sweep evaluated %d feedback: %d cases opened, %d attached",
            total.evaluated,
            total.cases_opened,
            total.attached,
            extra={
                "feedback_evaluated": total.evaluated,
                "cases_opened": total.cases_opened,
                "feedback_attached": total.attached,
            },
        )
    return total
