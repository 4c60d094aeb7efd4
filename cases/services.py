"""Write services for cases: evaluate feedback against the case rules, open a
case or attach to the open one, route it to a team and assign an agent.

Evaluation is set-based: a batch of a few thousand feedback ids costs the same
fixed number of queries, with no query per row. On PostgreSQL the claim is one
UPDATE ... RETURNING, and cases, case links and case events are written
through COPY (``feedback.pgcopy``); SQLite keeps the ORM's bulk inserts.
"""

import heapq
import logging
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.db.models.expressions import RawSQL
from django.utils import timezone

from feedback import pgcopy
from feedback.models import Feedback
from oscm.errors import DomainError

from . import selectors
from .models import (
    Case,
    CaseEvent,
    CaseFeedback,
    CaseRule,
    RoutingRule,
    Team,
    TeamMember,
)
from .workflow import _cases_resume_waiting, case_events_record_opening

logger = logging.getLogger(__name__)


class ClaimedFeedback(NamedTuple):
    """The columns of a claimed feedback that the rules, the dedup key and
    routing read, in ``_EVALUATION_FIELDS`` order. A tuple costs a fraction
    of a model instance, and a batch claims thousands."""

    pk: int
    customer_id: int | None
    kind: str
    score: int | None
    sentiment: float | None
    touchpoint: str
    primary_topic_id: int | None


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


@dataclass(frozen=True, slots=True)
class RuleMatch:
    """A feedback that a case rule matched, the reason in words, and the
    feedback's dedup key (``case_dedup_key``)."""

    feedback: Feedback | ClaimedFeedback
    rule: CaseRule
    reason: str
    dedup_key: str


@dataclass(frozen=True)
class RoutingDecision:
    team: Team
    rule: RoutingRule | None
    reason: str


@dataclass(frozen=True)
class CaseOpenResult:
    cases: list[Case]
    attached: int


def case_dedup_key(*, feedback: Feedback | ClaimedFeedback) -> str:
    """Return the key that allows one open case per customer and topic.

    Feedback without a customer cannot be grouped, so it keys on itself.
    """
    if feedback.customer_id is None:
        return f"f{feedback.pk}"
    return f"c{feedback.customer_id}:t{feedback.primary_topic_id or 0}"


def case_rule_match(
    *, feedback: Feedback | ClaimedFeedback, rules: Sequence[CaseRule]
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
                dedup_key=case_dedup_key(feedback=feedback),
            )
    return None


def _rule_bounds_met(
    *, rule: CaseRule, feedback: Feedback | ClaimedFeedback
) -> list[str] | None:
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
    # FOR NO KEY UPDATE: two assigners still wait on each other, but the
    # foreign-key checks of other transactions' new cases (FOR KEY SHARE on
    # the team) do not, so an import and an assigner do not deadlock on the
    # team rows.
    teams = {
        team.pk: team
        for team in Team.objects.select_for_update(no_key=True)
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
    anyone); each assignment moves the agent to the back. Only agents with a
    spare slot are queued, because a full agent stays full for the rest of
    the batch, so each assignment costs O(1) for round-robin and O(log n)
    for capacity.
    """

    def __init__(self, *, team: Team, members: list[TeamMember]):
        self.team = team
        self.members = members
        available = sorted(
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
            for member in available
        }
        self.assigned = 0
        self._order: list[TeamMember] = []
        self._nobody: str | None = None

        self._by_capacity = team.assignment_strategy == Team.AssignmentStrategy.CAPACITY
        candidates = [member for member in available if self.spare[member.pk] > 0]
        # Round-robin: the rotation itself. Capacity: a heap of (-spare,
        # rotation position, member), so the most spare slots come first and
        # ties go to the agent earliest in the rotation, as round-robin would.
        self._rotation = deque(candidates)
        self._heap = [
            (-self.spare[member.pk], position, member)
            for position, member in enumerate(candidates)
        ]
        heapq.heapify(self._heap)
        self._next_position = len(candidates)

    def assign(self, case: Case) -> None:
        member = self._next_member()
        if member is None:
            case.state = Case.State.NEW
            case.assignment_reason = self._nobody_reason()
            return
        spare = self.spare[member.pk]
        if self._by_capacity:
            reason = (
                f"most spare capacity in {self.team.name}: {member.user.get_username()} "
                f"had {spare} of {member.max_open_cases} slots free"
            )
        else:
            open_count = member.max_open_cases - spare
            reason = (
                f"round-robin in {self.team.name}: {member.user.get_username()} was the "
                f"least recently assigned available agent ({open_count} of "
                f"{member.max_open_cases} open cases)"
            )
        case.assignee = member.user
        case.state = Case.State.ASSIGNED
        case.assignment_reason = reason
        self.spare[member.pk] = spare - 1
        if spare > 1:
            self._requeue(member)
        self._order.append(member)
        self.assigned += 1

    def _next_member(self) -> TeamMember | None:
        if self._by_capacity:
            return heapq.heappop(self._heap)[2] if self._heap else None
        return self._rotation.popleft() if self._rotation else None

    def _requeue(self, member: TeamMember) -> None:
        """Put the agent at the back of the rotation."""
        if self._by_capacity:
            entry = (-self.spare[member.pk], self._next_position, member)
            heapq.heappush(self._heap, entry)
            self._next_position += 1
        else:
            self._rotation.append(member)

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
        # The counts cannot change within a batch, so the text is built once.
        if self._nobody is None:
            self._nobody = self._nobody_reason_build()
        return self._nobody

    def _nobody_reason_build(self) -> str:
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


@dataclass(frozen=True)
class CaseAssignWaitingResult:
    """Counts of one ``case_assign_waiting`` call: the teams that had a free
    slot and queued cases, the queued cases locked, and those given an agent."""

    teams: int = 0
    locked: int = 0
    assigned: int = 0


# Queued cases that one ``case_assign_waiting`` call locks at most. It bounds
# the locks and the UPDATE of one run, and the next run takes the rest.
ASSIGN_WAITING_LIMIT = 500

# A team's queue: open cases that are new and have no agent.
_QUEUED = Q(
    is_open=True, state=Case.State.NEW, assignee__isnull=True, merged_into__isnull=True
)
# Cases opened before their trigger feedback was analysed, such as those of
# the bulk import. The analysis runs ``cases.triage``, which routes such a
# case again by its topic and assigns it in its new team.
_AWAITING_TRIAGE = Q(topic__isnull=True, trigger_feedback__analyzed_at__isnull=True)


def case_assign_waiting(
    *,
    now: datetime,
    team_ids: Iterable[int] | None = None,
    limit: int = ASSIGN_WAITING_LIMIT,
) -> CaseAssignWaitingResult:
    """Assign queued cases to agents of their team who have a free slot again.

    Takes the open cases that are new with no agent, of the teams in
    ``team_ids`` (default every team), most urgent first and oldest first
    within a priority, at most ``limit`` in all. Teams go one at a time in
    id order, each in its own transaction. That transaction locks the team
    row (FOR NO KEY UPDATE) and counts the free slots of the available
    agents. Then it locks as many cases (FOR NO KEY UPDATE SKIP LOCKED, in
    id order) and hands them out with ``case_assign``, so the strategy and
    the reasons are those of a new case. Each case given an agent gets an
    ``assigned`` event with no actor, as triage records it.

    The sweep leaves out:

    - cases awaiting triage (``_AWAITING_TRIAGE``). Triage may move such a
      case to another team, so assigning it here would give an agent of
      the touchpoint's team a case that belongs to another team.
    - cases whose other feedback still awaits the analysis
      (``cases.triage.AWAITING_FEEDBACK``), because triage may move some of
      it to cases of other topics before it assigns the case.
    - cases that a lead took the agent off (``_unassigned_by_person``), so
      the lead decides who gets them.
    - cases that another transaction has locked, such as a person changing
      the case or triage. A later run takes them.

    Idempotent: a case given an agent leaves the queue. Two runs on one
    team wait on the team row, and the second counts the cases of the first.
    """
    queued = Case.objects.filter(_QUEUED)
    if team_ids is not None:
        queued = queued.filter(team_id__in=list(team_ids))
    queue_team_ids = sorted(
        set(queued.order_by().values_list("team_id", flat=True).distinct())
    )

    teams = locked = assigned = 0
    for team_id in queue_team_ids:
        if locked >= limit:
            break
        team_locked, team_assigned = _team_queue_assign(
            team_id=team_id, limit=limit - locked, now=now
        )
        teams += 1 if team_locked else 0
        locked += team_locked
        assigned += team_assigned

    if assigned:
        logger.info(
            "Assigned %d of %d queued cases in %d teams",
            assigned,
            locked,
            teams,
            extra={"cases_locked": locked, "cases_assigned": assigned},
        )
    return CaseAssignWaitingResult(teams=teams, locked=locked, assigned=assigned)


def _team_queue_assign(*, team_id: int, limit: int, now: datetime) -> tuple[int, int]:
    """Assign up to ``limit`` queued cases of one team in one transaction.

    Returns how many cases were locked and how many got an agent.
    """
    # Imported here because cases.triage imports this module.
    from .triage import _assignments_record

    with transaction.atomic():
        # The team before any case: triage locks the team row and then the
        # open case that it merges another into, so the reverse order here
        # could deadlock with it.
        team = Team.objects.select_for_update(no_key=True).filter(pk=team_id).first()
        if team is None:
            return 0, 0
        members = selectors.team_agents_with_workload(team_ids=[team_id])
        pool = _AgentPool(team=team, members=members.get(team_id, []))
        free_slots = sum(pool.spare.values())
        if not free_slots:
            return 0, 0
        # NOTE: the team lock does not cover the agents' other teams. Two
        # transactions assigning at once in two teams that share an agent
        # can each fill that agent's last free slot, as with case_assign.
        cases = _queued_cases_lock(team_id=team_id, count=min(free_slots, limit))
        if not cases:
            return 0, 0

        case_assign(cases=cases, now=now)
        assigned = [case for case in cases if case.assignee_id is not None]
        for case in assigned:
            case.updated_at = now
        Case.objects.bulk_update(
            assigned, ["assignee", "state", "assignment_reason", "updated_at"]
        )
        _assignments_record(assigned, now=now)
    return len(cases), len(assigned)


def _queued_cases_lock(*, team_id: int, count: int) -> list[Case]:
    """Lock up to ``count`` queued cases of the team that the sweep may
    assign, and return them most urgent first, then oldest first.

    The subquery picks the cases in that order, which the index
    ``case_team_priority_opened`` serves, and the outer query locks them in
    id order. The lock is FOR NO KEY UPDATE, as triage takes, so the
    foreign-key checks of events and feedback being added to a case do not
    make this skip it.
    """
    # Imported here because cases.triage imports this module.
    from .triage import AWAITING_FEEDBACK

    picked = (
        Case.objects.filter(_QUEUED, team_id=team_id)
        .exclude(_AWAITING_TRIAGE)
        .exclude(assignment_reason=AWAITING_FEEDBACK)
        .exclude(_unassigned_by_person())
        .order_by("-priority", "opened_at", "pk")
        .values("pk")[:count]
    )
    # PostgreSQL checks the outer conditions again on a row that another
    # transaction changed and committed after the subquery read it, so a
    # case assigned, closed or moved meanwhile drops out.
    cases = list(
        Case.objects.select_for_update(no_key=True, skip_locked=True)
        .filter(_QUEUED, team_id=team_id, pk__in=picked)
        .order_by("pk")
    )
    cases.sort(key=lambda case: (-case.priority, case.opened_at, case.pk))
    return cases


def _unassigned_by_person() -> Exists:
    """Match cases with an ``assigned`` event by a person and no move to
    another team after it. In the queue, those are the cases whose agent a
    lead removed with ``case_assign_to``. A move to another team hands the
    case to the assignment of that team."""
    moved_after = CaseEvent.objects.filter(
        case_id=OuterRef("case_id"),
        kind=CaseEvent.Kind.TEAM_CHANGED,
        pk__gt=OuterRef("pk"),
    )
    return Exists(
        CaseEvent.objects.filter(
            case_id=OuterRef("pk"), kind=CaseEvent.Kind.ASSIGNED, actor__isnull=False
        ).exclude(Exists(moved_after))
    )


def case_open(*, matches: Sequence[RuleMatch], now: datetime) -> CaseOpenResult:
    """Open one case per new customer and topic, attach the rest.

    Feedback whose customer and topic already have an open case, or share
    them with earlier feedback of the batch, becomes a CaseFeedback row of
    that case. New cases are routed and assigned before one bulk insert.
    Must run inside a transaction, because assignment locks team rows.
    """
    open_case_ids = _open_cases_hold(
        selectors.case_open_ids_by_dedup_key(dedup_keys={match.dedup_key for match in matches})
    )
    firsts: dict[str, RuleMatch] = {}
    later: list[RuleMatch] = []
    for match in matches:
        if match.dedup_key in open_case_ids or match.dedup_key in firsts:
            later.append(match)
        else:
            firsts[match.dedup_key] = match
    cases = [_case_build(match=match, now=now) for match in firsts.values()]

    _cases_route(cases=cases, matches=firsts)
    case_assign(cases=cases, now=now)
    from .escalation import case_sla_apply

    # Due times are set in memory, so the bulk insert writes them.
    case_sla_apply(cases=cases, now=now)
    conflicts = _cases_insert(cases=cases)

    case_ids = dict(open_case_ids)
    case_ids.update({case.dedup_key: case.pk for case in cases if case.pk is not None})
    case_ids.update(conflicts)
    opened = [case for case in cases if case.pk is not None]
    later.extend(firsts[case.dedup_key] for case in cases if case.pk is None)
    attached = [(case_ids[match.dedup_key], match.feedback.pk) for match in later]
    links = [(case.pk, case.trigger_feedback_id) for case in opened] + attached
    _case_links_insert(links=links, now=now)
    _case_events_record(opened=opened, attached=attached, now=now)
    from .webhooks import case_webhook_payload, webhook_events_emit

    # One endpoint query per batch. The generator builds no payload when no
    # endpoint listens.
    webhook_events_emit(
        event="case.opened",
        items=((case.pk, "opened", case_webhook_payload(case)) for case in opened),
    )

    touched = {case_id for case_id, _ in attached} - {case.pk for case in opened}
    if touched:
        Case.objects.filter(pk__in=touched).update(updated_at=now)
    return CaseOpenResult(cases=opened, attached=len(later))


def _open_cases_hold(open_case_ids: dict[str, int]) -> dict[str, int]:
    """Keep the open cases that feedback attaches to from closing until the
    caller's transaction commits, and return those still open.

    FOR KEY SHARE makes an agent's resolve or close (which locks the case
    FOR UPDATE) wait, and lets assignment, triage and other batches' updates
    through. A case that closed between the look-up and the lock is left
    out, so its feedback opens a new case. SQLite has no row locks and
    writes one transaction at a time, so there the look-up is returned unchanged.
    """
    if not open_case_ids or connection.vendor != "postgresql":
        return open_case_ids
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {connection.ops.quote_name(Case._meta.db_table)} "
            "WHERE id = ANY(%s) AND is_open ORDER BY id FOR KEY SHARE",
            [sorted(open_case_ids.values())],
        )
        still_open = {row[0] for row in cursor.fetchall()}
    return {key: pk for key, pk in open_case_ids.items() if pk in still_open}


def _case_build(*, match: RuleMatch, now: datetime) -> Case:
    feedback = match.feedback
    return Case(
        customer_id=feedback.customer_id,
        trigger_feedback_id=feedback.pk,
        topic_id=feedback.primary_topic_id,
        priority=match.rule.priority,
        dedup_key=match.dedup_key,
        rule_id=match.rule.pk,
        rule_reason=match.reason,
        opened_at=now,
        updated_at=now,
    )


def _cases_route(*, cases: Sequence[Case], matches: dict[str, RuleMatch]) -> None:
    """Route each case by its topic and its trigger feedback's touchpoint.

    ``matches`` maps each case's dedup key to the match that built it. The
    decision depends only on (topic, touchpoint), so each pair is decided
    once per batch.
    """
    if not cases:
        return
    rules, fallback_team = selectors.routing_rules_active()
    decisions: dict[tuple[int | None, str], RoutingDecision] = {}
    for case in cases:
        touchpoint = matches[case.dedup_key].feedback.touchpoint
        key = (case.topic_id, touchpoint)
        decision = decisions.get(key)
        if decision is None:
            decision = decisions[key] = case_route(
                topic_id=case.topic_id,
                touchpoint=touchpoint,
                rules=rules,
                fallback_team=fallback_team,
            )
        case.team = decision.team
        case.routing_rule = decision.rule
        case.routing_reason = decision.reason


def _cases_insert(*, cases: list[Case]) -> dict[str, int]:
    """Insert the cases in bulk, skipping those whose key another worker
    opened meanwhile.

    Another worker may commit an open case with the same dedup key between
    the lookup and this insert, and the partial unique index then rejects
    this one. Each rejected case stays unsaved (pk None). The returned dict
    maps its key to the other worker's case id, so the caller attaches.
    """
    if not cases:
        return {}
    # The same key order in every worker keeps two inserts waiting on each
    # other's keys from deadlocking.
    ordered = sorted(cases, key=lambda case: case.dedup_key)
    if connection.vendor == "postgresql":
        return _cases_copy(cases=ordered)
    try:
        with transaction.atomic():
            Case.objects.bulk_create(ordered)
        return {}
    except IntegrityError:
        logger.warning(
            "Bulk case insert hit an open case opened concurrently; inserting one by one",
            extra={"case_count": len(cases)},
        )
    # NOTE: the agents chosen for rejected cases keep their new
    # last_assigned_at, so the rotation skips them once. The same holds on
    # the COPY path.
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


# Case has only plain columns (numbers, text, booleans, times), so the
# attribute values go to COPY as they are, without Django's conversions.
_CASE_FIELDS = [field for field in Case._meta.concrete_fields if not field.primary_key]
_CASE_COLUMNS = [field.column for field in _CASE_FIELDS]
_CASE_ATTNAMES = [field.attname for field in _CASE_FIELDS]


def _cases_copy(*, cases: list[Case]) -> dict[str, int]:
    """Insert the cases through COPY and ``ON CONFLICT DO NOTHING`` on the
    partial unique index of open dedup keys, on PostgreSQL.

    A key that another transaction inserted first and has not committed yet
    makes the INSERT wait for it, as a plain INSERT would. If that
    transaction commits, the row is skipped and the winner is read after
    the INSERT. Returns the winners' ids by key.
    """
    rows = [[getattr(case, name) for name in _CASE_ATTNAMES] for case in cases]
    inserted = dict(
        pgcopy.copy_insert(
            Case._meta.db_table,
            _CASE_COLUMNS,
            rows,
            on_conflict='("dedup_key") WHERE "is_open" DO NOTHING',
            returning='"dedup_key", "id"',
        )
    )
    rejected = []
    for case in cases:
        case.pk = inserted.get(case.dedup_key)
        if case.pk is None:
            rejected.append(case.dedup_key)
        else:
            case._state.adding = False
            case._state.db = connection.alias
    if not rejected:
        return {}

    logger.warning(
        "Case insert skipped %d dedup keys opened concurrently; attaching instead",
        len(rejected),
        extra={"case_count": len(cases), "conflict_count": len(rejected)},
    )
    winners = dict(
        Case.objects.filter(is_open=True, dedup_key__in=rejected).values_list(
            "dedup_key", "pk"
        )
    )
    missing = sorted(set(rejected) - winners.keys())
    if missing:
        # The winner was closed between the INSERT and this read.
        raise IntegrityError(
            f"Case insert conflicted on dedup keys {missing}, but no open case "
            "has them any more. The batch rolls back and the feedback sweep "
            "evaluates it again."
        )
    return winners


def _case_links_insert(*, links: list[tuple[int, int]], now: datetime) -> None:
    """Store (case id, feedback id) pairs as CaseFeedback rows."""
    if not links:
        return
    if connection.vendor == "postgresql":
        pgcopy.copy_rows(
            CaseFeedback._meta.db_table,
            ("case_id", "feedback_id", "attached_at"),
            [(case_id, feedback_id, now) for case_id, feedback_id in links],
        )
        return
    CaseFeedback.objects.bulk_create(
        CaseFeedback(case_id=case_id, feedback_id=feedback_id, attached_at=now)
        for case_id, feedback_id in links
    )


def _case_events_record(
    *, opened: Sequence[Case], attached: Sequence[tuple[int, int]], now: datetime
) -> None:
    """Record the opened and feedback_attached events of a batch, and resume
    waiting cases that got new feedback.

    SQLite goes through ``workflow.case_events_record_opening``. On
    PostgreSQL the same rows are COPY'd: same kinds, changes and body, in the
    same order (opened, attached, then the resumed cases' state changes).
    """
    if connection.vendor != "postgresql":
        case_events_record_opening(opened=opened, attached=attached, now=now)
        return

    resumed = _cases_resume_waiting(
        case_ids={case_id for case_id, _ in attached}, now=now
    )
    rows = [
        {
            "case_id": case.pk,
            "kind": CaseEvent.Kind.OPENED,
            "changes": {
                "state": [None, case.state],
                "team": [None, case.team_id],
                "assignee": [None, case.assignee_id],
                "priority": [None, case.priority],
            },
            "body": case.rule_reason,
            "created_at": now,
        }
        for case in opened
    ]
    rows.extend(
        {
            "case_id": case_id,
            "kind": CaseEvent.Kind.FEEDBACK_ATTACHED,
            "changes": {"feedback": [None, feedback_id]},
            "created_at": now,
        }
        for case_id, feedback_id in attached
    )
    if rows:
        pgcopy.copy_model_rows(CaseEvent, rows)
    if resumed:
        CaseEvent.objects.bulk_create(resumed)


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
        claimed = _feedback_claim(ids=ids, now=now)
        if not claimed:
            return EvaluationResult()

        opened = feedback_evaluate_rows(rows=claimed, now=now)

    _log_batch(requested=len(ids), claimed=len(claimed), opened=opened)
    return EvaluationResult(
        evaluated=len(claimed), cases_opened=len(opened.cases), attached=opened.attached
    )


def kinds_decided_by_score(rules_by_kind: dict[str, list[CaseRule]]) -> set[str]:
    """Return the kinds whose case rules set no sentiment bound, so that the
    kind and score of a feedback decide its match."""
    return {
        kind
        for kind, rules in rules_by_kind.items()
        if not any(rule.sentiment_max is not None for rule in rules)
    }


def feedback_evaluate_rows(
    *, rows: Sequence[ClaimedFeedback], now: datetime
) -> CaseOpenResult:
    """Match rows that the caller has claimed against the case rules and open
    or attach their cases.

    ``feedback_evaluate`` claims the rows first. Must run inside a
    transaction.
    """
    rules_by_kind = selectors.case_rules_by_kind()
    by_score_kinds = kinds_decided_by_score(rules_by_kind)
    # Rules that decide on kind and score alone give one match and reason
    # per (kind, score), worked out once and shared.
    by_score: dict[tuple[str, int | None], tuple[CaseRule, str] | None] = {}
    matches = []
    for feedback in rows:
        rules = rules_by_kind.get(feedback.kind)
        if not rules:
            continue
        if feedback.kind not in by_score_kinds:
            match = case_rule_match(feedback=feedback, rules=rules)
            if match:
                matches.append(match)
            continue
        key = (feedback.kind, feedback.score)
        if key not in by_score:
            match = case_rule_match(feedback=feedback, rules=rules)
            by_score[key] = (match.rule, match.reason) if match else None
        found = by_score[key]
        if found:
            matches.append(
                RuleMatch(
                    feedback=feedback,
                    rule=found[0],
                    reason=found[1],
                    dedup_key=case_dedup_key(feedback=feedback),
                )
            )
    if not matches:
        return CaseOpenResult([], 0)
    return case_open(matches=matches, now=now)


def _feedback_claim(*, ids: list[int], now: datetime) -> list[ClaimedFeedback]:
    """Lock the ready, unevaluated feedback among ``ids``, stamp
    ``evaluated_at`` and return its rows in id order."""
    ready = (
        Feedback.objects.filter(evaluated_at__isnull=True)
        .exclude(selectors.FEEDBACK_NOT_READY)
        .order_by("pk")
        .select_for_update(skip_locked=True)
    )
    if connection.vendor != "postgresql":
        rows = list(ready.filter(pk__in=ids).values_list(*_EVALUATION_FIELDS))
        if rows:
            Feedback.objects.filter(pk__in=[row[0] for row in rows]).update(
                evaluated_at=now
            )
        return [ClaimedFeedback._make(row) for row in rows]

    # One statement locks, stamps and returns the rows. The ids travel as one
    # array literal, not as thousands of bind parameters that psycopg would
    # interpolate and PostgreSQL parse.
    id_array = "{" + ",".join(str(int(pk)) for pk in ids) + "}"
    locked_sql, params = (
        ready.filter(pk__in=RawSQL("SELECT unnest(%s::bigint[])", [id_array]))
        .values_list("pk")
        .query.sql_with_params()
    )
    table = connection.ops.quote_name(Feedback._meta.db_table)
    columns = ", ".join(
        f"{table}.{connection.ops.quote_name(Feedback._meta.get_field(name).column)}"
        for name in _EVALUATION_FIELDS
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH claimed (id) AS ({locked_sql}) "
            f'UPDATE {table} SET "evaluated_at" = %s FROM claimed '
            f'WHERE {table}."id" = claimed.id RETURNING {columns}',
            [*params, now],
        )
        rows = cursor.fetchall()
    rows.sort()
    return [ClaimedFeedback._make(row) for row in rows]


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
