"""Complete the cases opened before their feedback was analysed.

The bulk import opens cases for scored feedback before its text analysis
runs, so such a case has no topic, the dedup key ``c<customer>:t0``, a
team chosen by touchpoint alone and no agent yet. Every unhappy row of the
customer in the import attaches to that one case, whatever its topic. Once
the analysis stores the trigger feedback's primary topic,
``case_triage_after_analysis`` gives the case that topic and the key it
would have had. A case that no agent has taken yet is routed again by the
same routing rules, topic or not. Once all its feedback is analysed, the
feedback of other keys moves to the cases of those keys, as
``feedback_evaluate`` would have put it, and the case is assigned in its
team. A case that an agent already has keeps such feedback, and one
event on its timeline lists it.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.db import IntegrityError, connection, transaction
from django.db.models import Q
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
from .triage_moves import (
    events_insert,
    feedback_split,
    links_detach,
    splits_find,
    topics_mixed_record,
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
# The assignment reason of a case whose trigger feedback is analysed while
# some of its other feedback is not. Triage assigns it once the rest is
# analysed and the feedback of other topics has moved out, so that no agent
# gets feedback that is about to leave the case.
AWAITING_FEEDBACK = (
    "waiting for the text analysis of the case's other feedback, which may move "
    "to cases of other topics; assigned after that"
)


@dataclass(frozen=True)
class TriageResult:
    """Counts of one triage call. ``topics_set`` counts the cases that got a
    topic, ``keys_kept`` the cases that keep their old key because another
    open case has the new one, ``feedback_moved`` the feedback that moved
    to the case of its own key, and ``topics_mixed`` the taken cases that
    got a ``topics_mixed`` event."""

    topics_set: int = 0
    keys_changed: int = 0
    keys_kept: int = 0
    rerouted: int = 0
    moved: int = 0
    assigned: int = 0
    folded: int = 0
    feedback_moved: int = 0
    topics_mixed: int = 0


@dataclass
class LockedCases:
    """The cases that one triage call locked and the feedback it read.

    ``cases`` are the cases to triage in id order: open cases without a
    topic whose trigger feedback is in the batch, and open cases with
    feedback in the batch. ``links`` maps each case to its linked feedback
    ids, ``rows`` maps each of those and each trigger feedback to its
    columns, and ``analysed`` contains the ids among them that have their
    analysis.
    """

    cases: list[Case] = field(default_factory=list)
    new_case_ids: set[int] = field(default_factory=set)
    rows: dict[int, ClaimedFeedback] = field(default_factory=dict)
    analysed: set[int] = field(default_factory=set)
    links: dict[int, list[int]] = field(default_factory=dict)

    def trigger(self, case: Case) -> ClaimedFeedback:
        return self.rows[case.trigger_feedback_id]

    def is_complete(self, case: Case) -> bool:
        """Return whether the case's trigger and linked feedback all have
        their analysis."""
        return case.trigger_feedback_id in self.analysed and all(
            feedback_id in self.analysed for feedback_id in self.links.get(case.pk, ())
        )


def _is_untouched(case: Case) -> bool:
    """Return whether no agent has the case: still new and unassigned.

    Folding and moving feedback out apply only to such a case, because no
    person has seen it in a queue of their own.
    """
    return case.state == Case.State.NEW and case.assignee_id is None


def case_triage_after_analysis(*, feedback_ids: Sequence[int]) -> TriageResult:
    """Give open cases the topic their trigger feedback now has, and move
    their feedback of other keys to the cases of those keys.

    Applies to each open case whose ``topic`` is null and whose trigger
    feedback is among ``feedback_ids``:

    - when the trigger feedback has a primary topic, the case gets it, and
      the dedup key ``case_dedup_key`` of its trigger feedback, unless
      another open case already has that key. Any other case keeps its old
      key, and a warning lists it.
    - a case still new with no assignee is routed again by ``case_route``.
      When the team changes, it moves as ``case_move_team`` moves a case
      (team, routing rule and reason, cleared assignment reason) and gets a
      ``team_changed`` event with no actor. Every case routed again gets
      its SLA policy and due times from ``case_sla_apply`` again, because a
      policy may depend on the team and the topic.

    An untouched case (``_is_untouched``) goes on once its trigger and all
    its linked feedback are analysed, in whichever call analyses the last
    of them; until then its assignment reason is ``AWAITING_FEEDBACK``:

    - if another open case has the key of its trigger feedback, the case
      folds into that case (``_cases_fold``), so the customer keeps one open
      case per topic.
    - each other feedback whose own key differs from the trigger's key
      moves out (``feedback_split``): ``case_open`` attaches it to the
      open case of its key or opens one for it, as ``feedback_evaluate``
      does. Both cases get a ``feedback_moved`` event with no actor.
    - ``case_assign`` gives the case an available agent of its team, with
      an ``assigned`` event.

    A case that an agent already has keeps its team, agent, SLA and
    feedback. Once its trigger and linked feedback are all analysed, and
    some of that feedback has a key other than the trigger's, the case gets
    one ``topics_mixed`` event with no actor that lists the feedback and its
    topics (``topics_mixed_record``). A case that already has one gets no
    second.

    Unless a person takes a case meanwhile, the result does not depend on
    the order in which its feedback is analysed. A second call for the same
    ids changes nothing, except that a case without a topic is routed and
    offered to agents again.

    Locks the cases to triage, including the taken cases linked to feedback
    among the ids, and the other open cases of their customers
    (SELECT ... FOR NO KEY UPDATE, in id order); call it inside the
    transaction that stores the analysis. Costs a fixed number of queries
    whatever the number of ids, plus a few per folded case.
    """
    ids = sorted(set(feedback_ids))
    if not ids:
        return TriageResult()
    locked = _cases_lock(ids)
    if not locked.cases:
        return TriageResult()

    now = timezone.now()
    cases = locked.cases
    # Before case_assign below gives agents to ready cases.
    touched = [case for case in cases if not _is_untouched(case)]
    new_cases = [case for case in cases if case.pk in locked.new_case_ids]
    ready = [
        case for case in cases if _is_untouched(case) and locked.is_complete(case)
    ]
    ready_ids = {case.pk for case in ready}
    old_keys = {case.pk: case.dedup_key for case in cases}
    for case in new_cases:
        case.topic_id = locked.trigger(case).primary_topic_id
    trigger_keys = {
        case.pk: case_dedup_key(feedback=locked.trigger(case)) for case in cases
    }
    with_topic = [case for case in new_cases if case.topic_id is not None]
    # A ready case whose key another case had at its triage tries again.
    rekeyed = with_topic + [
        case
        for case in ready
        if case.pk not in locked.new_case_ids
        and case.dedup_key != trigger_keys[case.pk]
    ]
    holders = _dedup_keys_assign(rekeyed, trigger_keys)
    folded = [case for case in rekeyed if case.pk in holders and case.pk in ready_ids]
    folded_ids = {case.pk for case in folded}
    unmerged = [case for case in cases if case.pk not in folded_ids]
    old_key_cases = [
        case
        for case in unmerged
        if case.pk in holders and not (_is_untouched(case) and case.pk not in ready_ids)
    ]
    rerouted = [case for case in new_cases if case.pk not in folded_ids and _is_untouched(case)]
    moves = _cases_reroute(rerouted, locked)
    _sla_reapply(rerouted, now=now)
    for case in rerouted:
        if case.pk not in ready_ids:
            case.assignment_reason = AWAITING_FEEDBACK
    to_assign = [
        case
        for case in ready
        if case.pk not in folded_ids
        and (case.pk in locked.new_case_ids or case.assignment_reason == AWAITING_FEEDBACK)
    ]
    splits = splits_find(ready, locked, trigger_keys)
    if splits:
        # case_open assigns the cases it opens in teams not known yet. All
        # teams are locked first, in id order, so that its case_assign and
        # the one below never lock two teams in opposite orders.
        _teams_lock()
    case_assign(cases=to_assign, now=now)
    assigned = [case for case in to_assign if case.assignee_id is not None]
    links_detach(splits)
    changed_ids = {case.pk for case in [*new_cases, *rekeyed, *to_assign]}
    changed_ids.update(case.pk for case, _ in splits)
    saved = [case for case in unmerged if case.pk in changed_ids]
    for case in saved:
        case.updated_at = now
    if saved:
        old_key_cases += _cases_save(saved, old_keys)
    _cases_fold(folded, holders, now=now)
    moved = feedback_split(splits, trigger_keys, now=now)
    mixed = topics_mixed_record(touched, locked, trigger_keys, now=now)
    _moves_record(moves, now=now)
    _assignments_record(assigned, now=now)

    result = TriageResult(
        topics_set=len(with_topic),
        keys_changed=sum(
            1
            for case in unmerged
            if case.pk in locked.new_case_ids and case.dedup_key != old_keys[case.pk]
        ),
        keys_kept=len(old_key_cases),
        rerouted=len(rerouted),
        moved=len(moves),
        assigned=len(assigned),
        folded=len(folded),
        feedback_moved=moved,
        topics_mixed=mixed,
    )
    _log_result(result, old_key_cases=old_key_cases, moves=moves)
    return result


def _cases_lock(ids: list[int]) -> LockedCases:
    """Lock the cases to triage for the analysed feedback ``ids`` and read
    the feedback that triage decides on.

    The candidates are read first without a lock: open cases without a
    topic whose trigger is among ``ids``, and open cases linked to feedback
    among ``ids``, whether an agent has them or not. Then one statement
    locks them and every other open case of their customers in id order,
    because feedback only moves between cases of one customer. The
    workflow, the bulk import and other triage calls lock cases in id order
    too, so none of them deadlocks with this one on cases. The feedback is
    read after the lock, so a call that waited on another reads what that
    one committed. Of two calls analysing the last feedback of one case,
    the second therefore reads the case as complete.

    Each query is driven by the ids through a primary key or foreign key
    index. A join that also filters on the primary topic lets the planner
    start from the index on ``primary_topic``, whose statistics lag behind
    while the analysis fills the column, and read every analysed row.
    """
    id_values = pgcopy.in_values(ids, sql_type="bigint")
    candidates = dict(
        Case.objects.filter(
            is_open=True, topic__isnull=True, trigger_feedback_id__in=id_values
        ).values_list("pk", "customer_id")
    )
    linked = set(
        CaseFeedback.objects.filter(feedback_id__in=id_values).values_list(
            "case_id", flat=True
        )
    )
    # The open and customer conditions are checked here, so that the ids
    # alone drive the query through the primary key.
    for pk, customer_id, is_open in Case.objects.filter(
        pk__in=pgcopy.in_values(sorted(linked), sql_type="bigint")
    ).values_list("pk", "customer_id", "is_open"):
        if is_open and customer_id is not None:
            candidates[pk] = customer_id
    if not candidates:
        return LockedCases()

    customer_ids = sorted({pk for pk in candidates.values() if pk is not None})
    # FOR NO KEY UPDATE, so that the foreign-key checks of an import that
    # links feedback to these cases (FOR KEY SHARE) do not wait on triage.
    # The lock reads only the columns that choose the cases to triage,
    # because most locked cases are other open cases of the customers.
    locked = (
        Case.objects.select_for_update(no_key=True)
        .filter(is_open=True)
        .filter(
            Q(pk__in=pgcopy.in_values(sorted(candidates), sql_type="bigint"))
            | Q(customer_id__in=pgcopy.in_values(customer_ids, sql_type="bigint"))
        )
        .order_by("pk")
        .values_list("pk", "topic_id", "trigger_feedback_id", "customer_id")
    )
    id_set = set(ids)
    new_case_ids = set()
    triaged_ids = []
    for pk, topic_id, trigger_id, customer_id in locked:
        if topic_id is None and trigger_id in id_set:
            new_case_ids.add(pk)
            triaged_ids.append(pk)
        elif pk in linked and customer_id is not None:
            triaged_ids.append(pk)
    if not triaged_ids:
        return LockedCases()
    # The rows stay locked, so this read returns the versions that the lock
    # returned.
    cases = list(
        Case.objects.filter(
            pk__in=pgcopy.in_values(triaged_ids, sql_type="bigint")
        ).order_by("pk")
    )
    return _feedback_read(cases, new_case_ids, analysed_ids=id_set)


def _feedback_read(
    cases: list[Case], new_case_ids: set[int], *, analysed_ids: set[int]
) -> LockedCases:
    """Read the trigger and linked feedback of the locked cases, with
    whether each is analysed. The caller has just analysed ``analysed_ids``."""
    links: dict[int, list[int]] = {}
    for case_id, feedback_id in CaseFeedback.objects.filter(
        case_id__in=pgcopy.in_values([case.pk for case in cases], sql_type="bigint")
    ).values_list("case_id", "feedback_id"):
        links.setdefault(case_id, []).append(feedback_id)
    feedback_ids = {case.trigger_feedback_id for case in cases}
    for linked in links.values():
        feedback_ids.update(linked)
    rows = {}
    analysed = set(analysed_ids)
    for *columns, analysed_at in Feedback.objects.filter(
        pk__in=pgcopy.in_values(sorted(feedback_ids), sql_type="bigint")
    ).values_list(*_TRIGGER_FIELDS, "analyzed_at"):
        row = ClaimedFeedback._make(columns)
        rows[row.pk] = row
        if analysed_at is not None:
            analysed.add(row.pk)
    return LockedCases(
        cases=cases, new_case_ids=new_case_ids, rows=rows, analysed=analysed, links=links
    )


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
    cases: Sequence[Case], locked: LockedCases
) -> list[tuple[Case, int, RoutingDecision]]:
    """Route the cases again with their topic and move those whose team
    changes, in memory; return (case, old team id, decision) per move."""
    if not cases:
        return []
    rules, fallback_team = selectors.routing_rules_active()
    decisions: dict[tuple[int | None, str], RoutingDecision | None] = {}
    moves = []
    for case in cases:
        touchpoint = locked.trigger(case).touchpoint
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
    its own, and leaves unsaved ones to the caller. The cases count as
    unsaved during the call, so ``_cases_update`` writes its results with
    the other triage fields in one statement.
    """
    for case in cases:
        case._state.adding = True
    try:
        case_sla_apply(cases=cases, now=now)
    finally:
        for case in cases:
            case._state.adding = False


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


def _teams_lock() -> None:
    list(
        Team.objects.select_for_update(no_key=True)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def _moves_record(
    moves: Sequence[tuple[Case, int, RoutingDecision]], *, now: datetime
) -> None:
    """Append a team_changed event, with no actor, to each moved case."""
    if not moves:
        return
    events_insert(
        {
            "case_id": case.pk,
            "kind": CaseEvent.Kind.TEAM_CHANGED,
            "created_at": now,
            "changes": {"team": [old_team_id, case.team_id]},
            "body": f"Routed again after text analysis found the topic: {decision.reason}",
        }
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
    events_insert(
        {
            "case_id": case.pk,
            "kind": CaseEvent.Kind.ASSIGNED,
            "created_at": now,
            "changes": {
                "assignee": [None, case.assignee_id],
                "state": [Case.State.NEW, case.state],
            },
            "body": case.assignment_reason,
        }
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
        "%d moved, %d assigned, %d merged into an open case of their topic; "
        "%d feedback moved to the case of its own key; %d taken cases keep "
        "feedback of other topics",
        result.topics_set,
        result.rerouted,
        result.moved,
        result.assigned,
        result.folded,
        result.feedback_moved,
        result.topics_mixed,
        extra={
            "feedback_moved": result.feedback_moved,
            "cases_triaged": result.topics_set,
            "cases_rerouted": result.rerouted,
            "cases_moved": result.moved,
            "cases_assigned": result.assigned,
            "cases_folded": result.folded,
            "cases_topics_mixed": result.topics_mixed,
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

