"""Complete the cases opened before their trigger feedback was analysed.

The bulk import opens cases for scored feedback before its text analysis
runs, so such a case has no topic, the dedup key ``c<customer>:t0``, a
team chosen by touchpoint alone and no agent yet. Once the analysis stores
the trigger feedback's primary topic, ``case_triage_after_analysis`` gives
the case that topic and the key it would have had. A case that no agent
has taken yet is routed again by the same routing rules and then assigned
in its team, topic or not.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from feedback import pgcopy
from feedback.models import Feedback
from oscm.errors import DomainError

from . import selectors
from .escalation import case_sla_apply
from .workflow import _cases_resume_waiting, _set_state
from .models import Case, CaseEvent, CaseFeedback, RoutingRule, Team
from .services import (
    ClaimedFeedback,
    RoutingDecision,
    case_assign,
    case_dedup_key,
    case_route,
)

logger = logging.getLogger(__name__)

# Case columns that triage writes, besides ``updated_at``.
_TRIAGE_FIELDS = (
    "topic",
    "dedup_key",
    "team",
    "routing_rule",
    "routing_reason",
    "assignee",
    "state",
    "assignment_reason",
    "sla_policy",
    "first_response_due_at",
    "resolution_due_at",
)
# Trigger feedback columns in ``ClaimedFeedback`` order.
_TRIGGER_FIELDS = ("id", *ClaimedFeedback._fields[1:])
# Cases listed by id in a log line at most; the count is always logged.
_LOGGED_IDS = 20


@dataclass(frozen=True)
class TriageResult:
    """Counts of one triage call. ``topics_set`` counts the cases that got a
    topic, and ``keys_kept`` the cases that keep their old key because
    another open case has the new one."""

    topics_set: int = 0
    keys_changed: int = 0
    keys_kept: int = 0
    rerouted: int = 0
    moved: int = 0
    assigned: int = 0
    folded: int = 0


def case_triage_after_analysis(*, feedback_ids: Sequence[int]) -> TriageResult:
    """Give open cases without a topic the topic their trigger feedback now has.

    Applies to each open case whose ``topic`` is null and whose trigger
    feedback is among ``feedback_ids``:

    - when the trigger feedback has a primary topic, the case gets it, and
      the dedup key ``case_dedup_key`` of its trigger feedback, unless
      another open case already has that key. A case that is still new with
      no agent then folds into that case (``_cases_fold``), so the customer
      keeps one open case per topic. Any other case keeps its old key, and a
      warning lists it.
    - a case still new with no assignee is routed again by ``case_route``.
      When the team changes, it moves as ``case_move_team`` moves a case
      (team, routing rule and reason, cleared assignment reason) and gets a
      ``team_changed`` event with no actor. Every case routed again gets
      its SLA policy and due times from ``case_sla_apply`` again, because a
      policy may depend on the team and the topic. Then ``case_assign``
      gives it an available agent of its team, with an ``assigned`` event.
      A case already assigned keeps its team, agent and SLA.

    Locks the cases (SELECT ... FOR NO KEY UPDATE); call it inside the transaction
    that stores the analysis. Costs a fixed number of queries whatever the
    number of ids.
    """
    ids = sorted(set(feedback_ids))
    if not ids:
        return TriageResult()
    cases, triggers = _cases_lock(ids)
    if not cases:
        return TriageResult()

    now = timezone.now()
    old_keys = {case.pk: case.dedup_key for case in cases}
    with_topic = [case for case in cases if triggers[case.pk].primary_topic_id is not None]
    for case in cases:
        case.topic_id = triggers[case.pk].primary_topic_id
        case.updated_at = now
    topic_keys = {case.pk: case_dedup_key(feedback=triggers[case.pk]) for case in with_topic}
    holders = _dedup_keys_assign(with_topic, topic_keys)
    folded = [
        case
        for case in with_topic
        if case.pk in holders and case.state == Case.State.NEW and case.assignee_id is None
    ]
    folded_ids = {case.pk for case in folded}
    unmerged = [case for case in cases if case.pk not in folded_ids]
    old_key_cases = [case for case in unmerged if case.pk in holders]
    rerouted = [
        case
        for case in unmerged
        if case.state == Case.State.NEW and case.assignee_id is None
    ]
    moves = _cases_reroute(rerouted, triggers)
    _sla_reapply(rerouted, now=now)
    case_assign(cases=rerouted, now=now)
    assigned = [case for case in rerouted if case.assignee_id is not None]
    if unmerged:
        old_key_cases += _cases_save(unmerged, old_keys)
    _cases_fold(folded, holders, now=now)
    _moves_record(moves, now=now)
    _assignments_record(assigned, now=now)

    result = TriageResult(
        topics_set=len(with_topic),
        keys_changed=sum(1 for case in unmerged if case.dedup_key != old_keys[case.pk]),
        keys_kept=len(old_key_cases),
        rerouted=len(rerouted),
        moved=len(moves),
        assigned=len(assigned),
        folded=len(folded),
    )
    _log_result(result, old_key_cases=old_key_cases, moves=moves)
    return result


def _cases_lock(ids: list[int]) -> tuple[list[Case], dict[int, ClaimedFeedback]]:
    """Lock the open cases without a topic whose trigger feedback is among
    ``ids``; return them in id order, and their trigger feedback by case id.

    Two queries, each driven by the ids through a primary key or foreign
    key index. A join that also filters on the primary topic lets the
    planner start from the index on ``primary_topic``, whose statistics lag
    behind while the analysis fills the column, and read every analysed
    row.
    """
    triggers = {
        row[0]: ClaimedFeedback._make(row)
        for row in Feedback.objects.filter(pk__in=pgcopy.in_values(ids, sql_type="bigint")).values_list(
            *_TRIGGER_FIELDS
        )
    }
    if not triggers:
        return [], {}
    # FOR NO KEY UPDATE, so that the foreign-key checks of an import that
    # links feedback to these cases (FOR KEY SHARE) do not wait on triage.
    cases = list(
        Case.objects.select_for_update(no_key=True)
        .filter(
            is_open=True,
            topic__isnull=True,
            trigger_feedback_id__in=pgcopy.in_values(sorted(triggers), sql_type="bigint"),
        )
        .order_by("pk")
    )
    return cases, {case.pk: triggers[case.trigger_feedback_id] for case in cases}


def _dedup_keys_assign(
    cases: Sequence[Case], topic_keys: dict[int, str]
) -> dict[int, int]:
    """Give each case its topic key unless another open case has it.

    Returns, for each case that keeps its old key, the id of the open case
    that has the key.
    """
    changing = {
        topic_keys[case.pk] for case in cases if case.dedup_key != topic_keys[case.pk]
    }
    if not changing:
        return {}
    holders = selectors.case_open_ids_by_dedup_key(dedup_keys=changing)
    held_by: dict[int, int] = {}
    for case in cases:
        key = topic_keys[case.pk]
        if key == case.dedup_key:
            continue
        if key in holders:
            held_by[case.pk] = holders[key]
            continue
        # Another case of this batch may want the same key; the first wins.
        holders[key] = case.pk
        case.dedup_key = key
    return held_by


def _cases_reroute(
    cases: Sequence[Case], triggers: dict[int, ClaimedFeedback]
) -> list[tuple[Case, int, RoutingDecision]]:
    """Route the cases again with their topic and move those whose team
    changes, in memory; return (case, old team id, decision) per move."""
    if not cases:
        return []
    rules, fallback_team = selectors.routing_rules_active()
    decisions: dict[tuple[int | None, str], RoutingDecision | None] = {}
    moves = []
    for case in cases:
        touchpoint = triggers[case.pk].touchpoint
        key = (case.topic_id, touchpoint)
        if key not in decisions:
            decisions[key] = _route(
                case=case,
                touchpoint=touchpoint,
                rules=rules,
                fallback_team=fallback_team,
            )
        decision = decisions[key]
        if decision is None or decision.team.pk == case.team_id:
            continue
        moves.append((case, case.team_id, decision))
        case.team = decision.team
        case.routing_rule = decision.rule
        case.routing_reason = decision.reason
        case.assignment_reason = ""
    return moves


def _route(
    *,
    case: Case,
    touchpoint: str,
    rules: Sequence[RoutingRule],
    fallback_team: Team | None,
) -> RoutingDecision | None:
    """Return ``case_route``'s decision, or None when no rule and no fallback
    team match, so the case stays where it was opened."""
    try:
        return case_route(
            topic_id=case.topic_id,
            touchpoint=touchpoint,
            rules=rules,
            fallback_team=fallback_team,
        )
    except DomainError as error:
        logger.warning(
            "Case %s keeps its team: %s",
            case.pk,
            error.message,
            extra={"case_id": case.pk, "topic_id": case.topic_id},
        )
        return None


def _sla_reapply(cases: Sequence[Case], *, now: datetime) -> None:
    """Choose the SLA policy and due times of the cases again, in memory.

    ``case_sla_apply`` writes the saved cases it gets with a bulk_update of
    its own. It gets unsaved copies with the fields a policy depends on
    instead, so ``_cases_update`` writes its results with the other triage
    fields in one statement.
    """
    copies = [
        Case(
            team_id=case.team_id,
            priority=case.priority,
            topic_id=case.topic_id,
            opened_at=case.opened_at,
        )
        for case in cases
    ]
    case_sla_apply(cases=copies, now=now)
    for case, copy in zip(cases, copies):
        case.sla_policy_id = copy.sla_policy_id
        case.first_response_due_at = copy.first_response_due_at
        case.resolution_due_at = copy.resolution_due_at


def _cases_save(cases: Sequence[Case], old_keys: dict[int, str]) -> list[Case]:
    """Write the triage fields of the cases; return the cases that kept their
    old key because another transaction opened a case with it meanwhile.

    The key look-up cannot see a case that another transaction inserted and
    has not committed yet. The partial unique index then rejects the UPDATE
    once that transaction commits. The UPDATE is tried again, once, with
    the keys read again. A second conflict raises IntegrityError, which
    rolls back the analysis, and the analysis sweep repeats it later.
    """
    try:
        with transaction.atomic():
            _cases_update(cases)
        return []
    except IntegrityError:
        logger.warning(
            "Case key update hit a case opened concurrently; reading the keys again",
            extra={"case_count": len(cases)},
        )
    holders = selectors.case_open_ids_by_dedup_key(
        dedup_keys={case.dedup_key for case in cases}
    )
    old_key_cases = []
    for case in cases:
        holder = holders.get(case.dedup_key)
        if holder is not None and holder != case.pk:
            old_key_cases.append(case)
            case.dedup_key = old_keys[case.pk]
    _cases_update(cases)
    return old_key_cases


def _cases_update(cases: Sequence[Case]) -> None:
    """Write the triage fields and ``updated_at`` in one statement.

    PostgreSQL joins the new values as arrays (``unnest``), which costs
    the same per case whatever the batch size. Django's ``bulk_update``
    builds one CASE branch per case for each field, so each row scans them
    all; SQLite uses it all the same.
    """
    fields = [*_TRIAGE_FIELDS, "updated_at"]
    if connection.vendor != "postgresql":
        Case.objects.bulk_update(cases, fields)
        return
    quote = connection.ops.quote_name
    table = quote(Case._meta.db_table)
    columns = [Case._meta.get_field(name) for name in fields]
    arrays = [[case.pk for case in cases]]
    casts = ["bigint[]"]
    for field in columns:
        arrays.append([getattr(case, field.attname) for case in cases])
        casts.append(f"{field.db_type(connection)}[]")
    names = ["id", *(field.column for field in columns)]
    unnest = ", ".join(f"%s::{cast}" for cast in casts)
    assignments = ", ".join(
        f"{quote(name)} = triage.{quote(name)}" for name in names[1:]
    )
    # The second id condition lets the planner find the cases by primary
    # key. The join alone makes it read the whole table, because it cannot
    # see how many ids the arrays carry.
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {assignments} "
            f"FROM unnest({unnest}) AS triage ({', '.join(quote(n) for n in names)}) "
            f'WHERE {table}."id" = triage."id" AND {table}."id" = ANY(%s::bigint[])',
            [*arrays, arrays[0]],
        )


def _moves_record(
    moves: Sequence[tuple[Case, int, RoutingDecision]], *, now: datetime
) -> None:
    """Append a team_changed event, with no actor, to each moved case."""
    if not moves:
        return
    CaseEvent.objects.bulk_create(
        CaseEvent(
            case_id=case.pk,
            kind=CaseEvent.Kind.TEAM_CHANGED,
            created_at=now,
            changes={"team": [old_team_id, case.team_id]},
            body=f"Routed again after text analysis found the topic: {decision.reason}",
        )
        for case, old_team_id, decision in moves
    )


def _cases_fold(cases: Sequence[Case], holders: dict[int, int], *, now: datetime) -> None:
    """Merge each case into the open case that has its topic key.

    Only for cases that are still new with no agent, so no person has
    worked on them. Their feedback moves to the other case with
    ``feedback_attached`` events, and the case closes with ``merged_into``
    set. Both get a ``merged`` event with no actor, and the other case
    resumes if it was waiting on the customer. Costs a few queries per
    folded case, which is rare: its customer must already have an open case
    for the topic.
    """
    if not cases:
        return
    targets = {
        case.pk: case
        for case in Case.objects.select_for_update(no_key=True)
        .filter(pk__in=sorted({holders[case.pk] for case in cases}))
        .order_by("pk")
    }
    events = []
    for case in cases:
        target = targets[holders[case.pk]]
        on_target = CaseFeedback.objects.filter(case_id=target.pk).values("feedback_id")
        moving = list(
            CaseFeedback.objects.filter(case_id=case.pk)
            .exclude(feedback_id__in=on_target)
            .values_list("feedback_id", flat=True)
        )
        CaseFeedback.objects.filter(case_id=case.pk, feedback_id__in=moving).update(
            case_id=target.pk
        )
        CaseFeedback.objects.filter(case_id=case.pk).delete()
        from_state = case.state
        _set_state(case=case, to_state=Case.State.CLOSED, now=now)
        case.merged_into_id = target.pk
        case.updated_at = now
        case.save(
            update_fields=[
                "topic",
                "merged_into",
                "state",
                "is_open",
                "resolved_at",
                "closed_at",
                "updated_at",
            ]
        )
        events.extend(
            CaseEvent(
                case_id=target.pk,
                kind=CaseEvent.Kind.FEEDBACK_ATTACHED,
                created_at=now,
                changes={"feedback": [None, feedback_id]},
            )
            for feedback_id in moving
        )
        events.append(
            CaseEvent(
                case_id=case.pk,
                kind=CaseEvent.Kind.MERGED,
                created_at=now,
                changes={"merged_into": [None, target.pk], "state": [from_state, case.state]},
                body=(
                    f"Merged into case #{target.pk}, which is open for the same "
                    "customer and topic that the text analysis found."
                ),
            )
        )
        events.append(
            CaseEvent(
                case_id=target.pk,
                kind=CaseEvent.Kind.MERGED,
                created_at=now,
                changes={"merged_cases": [[], [case.pk]]},
                body=f"Case #{case.pk} was merged into this case after its text analysis.",
            )
        )
    Case.objects.filter(pk__in=list(targets)).update(updated_at=now)
    events.extend(_cases_resume_waiting(case_ids=set(targets), now=now))
    CaseEvent.objects.bulk_create(events)


def _assignments_record(cases: Sequence[Case], *, now: datetime) -> None:
    """Append an assigned event, with no actor, to each case given an agent."""
    if not cases:
        return
    CaseEvent.objects.bulk_create(
        CaseEvent(
            case_id=case.pk,
            kind=CaseEvent.Kind.ASSIGNED,
            created_at=now,
            changes={
                "assignee": [None, case.assignee_id],
                "state": [Case.State.NEW, case.state],
            },
            body=case.assignment_reason,
        )
        for case in cases
    )


def _log_result(
    result: TriageResult,
    *,
    old_key_cases: Sequence[Case],
    moves: Sequence[tuple[Case, int, RoutingDecision]],
) -> None:
    logger.info(
        "Triage after analysis: %d cases got their topic, %d routed again, "
        "%d moved, %d assigned, %d merged into an open case of their topic",
        result.topics_set,
        result.rerouted,
        result.moved,
        result.assigned,
        result.folded,
        extra={
            "cases_triaged": result.topics_set,
            "cases_rerouted": result.rerouted,
            "cases_moved": result.moved,
            "cases_assigned": result.assigned,
            "cases_folded": result.folded,
            "moved_case_ids": [case.pk for case, _, _ in moves[:_LOGGED_IDS]],
        },
    )
    if old_key_cases:
        case_ids = [case.pk for case in old_key_cases[:_LOGGED_IDS]]
        logger.warning(
            "%d cases kept their dedup key because another open case has the "
            "key of their topic; merge them if they are the same problem: %s",
            len(old_key_cases),
            case_ids,
            extra={"case_ids": case_ids, "case_count": len(old_key_cases)},
        )
