"""Write services for working a case: state transitions, assignment, priority,
moves between teams, merges, comments and customer contacts.

Every service locks the case row (SELECT ... FOR UPDATE) inside one
transaction, checks the actor's rights, changes the case and appends
CaseEvent rows that record who changed what, as ``changes={"field": [old,
new]}``. Rights follow cases.permissions: a case outside the actor's teams
raises DomainError 404, and a visible case the actor's role may not change
raises 403.
"""

import logging
from collections.abc import Sequence
from datetime import datetime
from functools import partial

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from oscm.errors import DomainError

from .models import (
    Case,
    CaseEvent,
    CaseFeedback,
    FollowUp,
    Priority,
    RootCause,
    Team,
    TeamMember,
)
from .permissions import user_is_admin, user_leads_team, user_team_ids
from .webhooks import case_webhook_emit

logger = logging.getLogger(__name__)

State = Case.State

# Every state change a person may make with case_transition. Closing needs a
# resolution first, so the root-cause requirement cannot be skipped; merging
# closes a case through case_merge instead. Reopening goes to in_progress
# when the case has an assignee and to new when it has none.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    State.NEW: (State.ASSIGNED, State.IN_PROGRESS, State.WAITING, State.RESOLVED),
    State.ASSIGNED: (State.IN_PROGRESS, State.WAITING, State.RESOLVED),
    State.IN_PROGRESS: (State.WAITING, State.RESOLVED),
    State.WAITING: (State.IN_PROGRESS, State.RESOLVED),
    State.RESOLVED: (State.CLOSED, State.IN_PROGRESS, State.NEW),
    State.CLOSED: (State.IN_PROGRESS, State.NEW),
}

# States in which an agent works the case, so it needs an assignee.
_STATES_WITH_ASSIGNEE = (State.ASSIGNED, State.IN_PROGRESS, State.WAITING)
_CLOSED_STATES = (State.RESOLVED, State.CLOSED)
# SLA fields that case_sla_pause and case_sla_resume may change in memory.
_SLA_FIELDS = ["sla_paused_at", "first_response_due_at", "resolution_due_at"]


# Rights


def _require_visible(*, actor: AbstractBaseUser | None, case: Case) -> None:
    """Raise 404 unless the actor may see the case, as cases_visible_to does.

    ``actor=None`` is the system itself (a follow-up answer reopening a
    case, an action resolving its cases on a schedule) and may do anything.
    """
    if actor is None or user_is_admin(actor):
        return
    if case.team_id not in user_team_ids(actor):
        raise DomainError(f"Case #{case.pk} not found.", status=404)


def _require_lead(*, actor: AbstractBaseUser | None, case: Case, action: str) -> None:
    _require_visible(actor=actor, case=case)
    if actor is not None and not user_leads_team(actor, case.team_id):
        raise DomainError(
            f"Only a lead of team {case.team.name} or an admin may {action}.",
            status=403,
        )


# Helpers


def _lock(case: Case) -> Case:
    return Case.objects.select_for_update().select_related("team").get(pk=case.pk)


def _event(
    *, case: Case, actor: AbstractBaseUser | None, kind: str, now: datetime, **fields
) -> CaseEvent:
    return CaseEvent.objects.create(
        case=case, actor=actor, kind=kind, created_at=now, **fields
    )


def _set_state(*, case: Case, to_state: str, now: datetime) -> None:
    """Move the case to ``to_state`` with its side effects, in memory.

    Keeps ``is_open``, ``resolved_at`` and ``closed_at`` in line with the
    state and pauses the SLA resolution clock while the case waits on the
    customer.
    """
    from_state = case.state
    if from_state == State.WAITING and to_state != State.WAITING:
        from cases.escalation import case_sla_resume

        case_sla_resume(case=case, now=now)
    if to_state == State.WAITING and from_state != State.WAITING:
        from cases.escalation import case_sla_pause

        case_sla_pause(case=case, now=now)

    case.state = to_state
    case.is_open = to_state in Case.OPEN_STATES
    if to_state == State.RESOLVED:
        case.resolved_at = now
    elif to_state == State.CLOSED:
        case.closed_at = now
        case.resolved_at = case.resolved_at or now
    elif case.is_open and from_state in _CLOSED_STATES:
        case.resolved_at = None
        case.closed_at = None
    case.updated_at = now


def _save_reopened(*, case: Case, fields: list[str]) -> None:
    """Save a case that becomes open again, which the dedup index may reject.

    Another case of the same customer and topic may have opened while this
    one was closed. The partial unique index allows one open case per key,
    so the actor gets a 409 that names the other case.
    """
    other = (
        Case.objects.filter(is_open=True, dedup_key=case.dedup_key)
        .exclude(pk=case.pk)
        .values_list("pk", flat=True)
        .first()
    )
    if other is None:
        try:
            with transaction.atomic():
                case.save(update_fields=fields)
            return
        except IntegrityError:
            other = (
                Case.objects.filter(is_open=True, dedup_key=case.dedup_key)
                .values_list("pk", flat=True)
                .first()
            )
    raise DomainError(
        f"Case #{case.pk} cannot be reopened: case #{other} is already open for "
        f"the same customer and topic. Merge case #{case.pk} into case #{other} "
        "instead (leads and admins merge cases).",
        details={"open_case": other},
        status=409,
    )


def _record_first_response(*, case: Case, now: datetime) -> dict:
    """Set ``first_response_at`` on the first customer contact, only once.

    A contact after the case was resolved is no first response, so the
    field stays empty on a case resolved without one.
    """
    if case.first_response_at is not None or not case.is_open:
        return {}
    case.first_response_at = now
    return {"first_response_at": [None, now.isoformat()]}


def _clear_resolution(*, case: Case) -> dict:
    """Clear the root cause and resolution note of a case being reopened.

    Returns the changes for the event, so the timeline keeps the old values.
    """
    changes = {}
    if case.root_cause_id is not None:
        changes["root_cause"] = [case.root_cause_id, None]
    if case.resolution_note:
        changes["resolution_note"] = [case.resolution_note, ""]
    case.root_cause = None
    case.resolution_note = ""
    return changes


def _require_contact_allowed(*, case: Case, entry: str) -> None:
    """Raise 409 when the case is merged or closed, so the timeline ``entry``
    (a contact attempt or a reply) goes on a case that is still worked."""
    if case.merged_into_id is not None:
        raise DomainError(
            f"Case #{case.pk} was merged into case #{case.merged_into_id}: record "
            f"the {entry} on case #{case.merged_into_id}.",
            details={"state": case.state, "merged_into": case.merged_into_id},
            status=409,
        )
    if case.state == State.CLOSED:
        raise DomainError(
            f"Case #{case.pk} is closed: reopen it before recording the {entry}.",
            details={"state": case.state},
            status=409,
        )


def _queue_assign_waiting(*, assignee_id: int | None) -> None:
    """After commit, queue ``case_assign_waiting_task`` for the teams in which
    the assignee of a case that just closed takes cases, because the agent
    has a free slot again. Only the team ids go to the task."""
    if assignee_id is None:
        return
    team_ids = sorted(
        TeamMember.objects.filter(
            user_id=assignee_id, role=TeamMember.Role.AGENT
        ).values_list("team_id", flat=True)
    )
    if not team_ids:
        return
    # Imported here because cases.tasks imports cases.services, which
    # imports this module.
    from .tasks import case_assign_waiting_task

    transaction.on_commit(partial(case_assign_waiting_task.delay, team_ids))


# Transitions


def case_allowed_states(*, case: Case) -> tuple[str, ...]:
    """Return the states case_transition accepts from the case's state."""
    if case.merged_into_id is not None:
        return ()
    return TRANSITIONS.get(case.state, ())


def _check_transition(*, case: Case, to_state: str) -> None:
    if to_state not in State.values:
        raise DomainError(
            f"'{to_state}' is not a case state: use one of {', '.join(State.values)}.",
            details={"to_state": to_state},
        )
    if case.merged_into_id is not None:
        raise DomainError(
            f"Case #{case.pk} was merged into case #{case.merged_into_id} and "
            "cannot change state; work on that case instead.",
            status=409,
        )
    allowed = case_allowed_states(case=case)
    if to_state not in allowed:
        raise DomainError(
            f"Case #{case.pk} is {case.state} and cannot move to {to_state}; "
            f"allowed next states: {', '.join(allowed)}.",
            details={"state": case.state, "allowed": list(allowed)},
            status=409,
        )
    if to_state in _STATES_WITH_ASSIGNEE and case.assignee_id is None:
        raise DomainError(
            f"Case #{case.pk} has no assignee, so it cannot move to {to_state}: "
            "assign it first.",
            details={"to_state": to_state},
            status=409,
        )
    if to_state == State.NEW and case.assignee_id is not None:
        raise DomainError(
            f"Case #{case.pk} has an assignee, so it reopens to in_progress, "
            "not new.",
            details={"to_state": to_state},
            status=409,
        )


def _check_resolution(
    *, root_cause: RootCause | None, resolution_note: str
) -> None:
    missing = []
    if root_cause is None:
        missing.append("root_cause")
    if not resolution_note.strip():
        missing.append("resolution_note")
    if missing:
        raise DomainError(
            f"Resolving a case requires {' and '.join(missing)}: pick the root "
            "cause and say what was done.",
            details={"missing": missing},
        )
    if not root_cause.is_active:
        raise DomainError(
            f"Root cause '{root_cause.name}' is inactive: pick an active one.",
            details={"root_cause": root_cause.pk},
        )


def case_transition(
    *,
    case: Case,
    actor: AbstractBaseUser | None,
    to_state: str,
    root_cause: RootCause | None = None,
    resolution_note: str = "",
) -> Case:
    """Move a case to another state along TRANSITIONS.

    Resolving requires an active root cause and a resolution note. Entering
    ``waiting`` pauses the SLA clock and leaving it resumes the clock.
    Reopening clears the root cause and resolution note (the event keeps the
    old values) and raises 409 when another case with the same dedup key is
    open. Returns the updated case.
    """
    with transaction.atomic():
        case = _lock(case)
        _require_visible(actor=actor, case=case)
        _check_transition(case=case, to_state=to_state)
        if to_state == State.RESOLVED:
            _check_resolution(root_cause=root_cause, resolution_note=resolution_note)

        now = timezone.now()
        from_state = case.state
        changes = {"state": [from_state, to_state]}
        fields = ["state", "is_open", "resolved_at", "closed_at", "updated_at"]
        if to_state == State.RESOLVED:
            changes["root_cause"] = [case.root_cause_id, root_cause.pk]
            changes["resolution_note"] = [case.resolution_note, resolution_note]
            case.root_cause = root_cause
            case.resolution_note = resolution_note
            fields += ["root_cause", "resolution_note"]
        is_reopen = from_state in _CLOSED_STATES and to_state in Case.OPEN_STATES
        if is_reopen:
            changes.update(_clear_resolution(case=case))
            fields += ["root_cause", "resolution_note"]
        _set_state(case=case, to_state=to_state, now=now)
        fields += _SLA_FIELDS

        if is_reopen:
            _save_reopened(case=case, fields=fields)
        else:
            case.save(update_fields=fields)
        _event(
            case=case,
            actor=actor,
            kind=CaseEvent.Kind.STATE_CHANGED,
            now=now,
            changes=changes,
        )
        if from_state in Case.OPEN_STATES and not case.is_open:
            _queue_assign_waiting(assignee_id=case.assignee_id)
        if to_state == State.RESOLVED:
            from .followups import case_follow_up_schedule

            case_webhook_emit(event="case.resolved", case=case, version=now)
            case_follow_up_schedule(case=case, now=now)
    logger.info(
        "Case %s moved from %s to %s",
        case.pk,
        from_state,
        to_state,
        extra={"case_id": case.pk, "actor_id": actor.pk if actor else None},
    )
    return case


# Assignment, priority, team


def _check_assignee(*, case: Case, assignee: AbstractBaseUser) -> None:
    is_member = TeamMember.objects.filter(
        team_id=case.team_id, user_id=assignee.pk
    ).exists()
    if not is_member or not assignee.is_active:
        raise DomainError(
            f"User {assignee.get_username()} is not an active agent or lead of "
            f"team {case.team.name}: pick a member of that team.",
            details={"assignee": assignee.pk},
        )


def case_assign_to(
    *, case: Case, actor: AbstractBaseUser, assignee: AbstractBaseUser | None
) -> Case:
    """Assign the case to a member of its team, or unassign it with None.

    Leads and admins assign anyone of the team. An agent may only take an
    unassigned case for themselves; taking a case already assigned to them
    changes nothing and records no event, and taking one assigned to someone
    else raises 409 naming that person. A new case becomes assigned, and
    an unassigned case goes back to new (resuming the SLA clock if it
    waited).
    """
    with transaction.atomic():
        case = _lock(case)
        _require_visible(actor=actor, case=case)
        takes_self = assignee is not None and assignee.pk == actor.pk
        is_self_take = takes_self and case.assignee_id in (None, actor.pk)
        if takes_self and not is_self_take and not user_leads_team(actor, case.team_id):
            # An agent taking a case assigned to someone else has usually
            # lost a race to take it, which is a conflict and not a missing right.
            raise _already_taken(case=case)
        if not is_self_take:
            _require_lead(actor=actor, case=case, action="assign other people")
        return _assign_locked(case=case, actor=actor, assignee=assignee)


def _assign_locked(
    *, case: Case, actor: AbstractBaseUser, assignee: AbstractBaseUser | None
) -> Case:
    """Assign a case that the caller has locked and checked the actor's
    rights on, and record the event."""
    if not case.is_open:
        raise DomainError(
            f"Case #{case.pk} is {case.state}: reopen it before assigning it.",
            status=409,
        )
    if assignee is not None:
        _check_assignee(case=case, assignee=assignee)
    new_assignee_id = assignee.pk if assignee is not None else None
    if new_assignee_id == case.assignee_id:
        return case

    now = timezone.now()
    changes = {"assignee": [case.assignee_id, new_assignee_id]}
    from_state = case.state
    case.assignee = assignee
    if assignee is None:
        case.assignment_reason = f"unassigned by {actor.get_username()}"
        _set_state(case=case, to_state=State.NEW, now=now)
    else:
        case.assignment_reason = f"assigned by {actor.get_username()}"
        if case.state == State.NEW:
            _set_state(case=case, to_state=State.ASSIGNED, now=now)
    case.updated_at = now
    if case.state != from_state:
        changes["state"] = [from_state, case.state]
    case.save(
        update_fields=[
            "assignee",
            "assignment_reason",
            "state",
            "updated_at",
            *_SLA_FIELDS,
        ]
    )
    _event(
        case=case, actor=actor, kind=CaseEvent.Kind.ASSIGNED, now=now, changes=changes
    )
    return case


def case_take(*, case: Case, actor: AbstractBaseUser) -> Case:
    """Assign an unassigned case to the actor, as the Take button does.

    Raises 409 naming the assignee when someone else took the case first,
    whatever the actor's role, so a lead who meant to take a free case does
    not take it over from the agent who won the race. Taking a case that
    is already assigned to the actor changes nothing.
    """
    with transaction.atomic():
        locked = _lock(case)
        _require_visible(actor=actor, case=locked)
        if locked.assignee_id not in (None, actor.pk):
            raise _already_taken(case=locked)
        # The actor takes the case for themselves, so no lead check applies.
        return _assign_locked(case=locked, actor=actor, assignee=actor)


def _already_taken(*, case: Case) -> DomainError:
    taker = case.assignee.get_username()
    return DomainError(
        f"Case #{case.pk} was already taken by {taker}: pick another case, or ask "
        f"a lead of team {case.team.name} to reassign it.",
        details={"assignee": case.assignee_id},
        status=409,
    )


def case_change_priority(
    *, case: Case, actor: AbstractBaseUser, priority: int
) -> Case:
    """Change the priority of an open case; leads and admins only."""
    # NOTE: SLA due times keep the policy chosen at opening; a priority
    # change does not pick a new SLA policy.
    if priority not in Priority.values:
        raise DomainError(
            f"'{priority}' is not a priority: use one of "
            f"{', '.join(str(value) for value in Priority.values)} (1 = low, 4 = urgent).",
            details={"priority": priority},
        )
    with transaction.atomic():
        case = _lock(case)
        _require_lead(actor=actor, case=case, action="change the priority")
        if not case.is_open:
            raise DomainError(
                f"Case #{case.pk} is {case.state}: only open cases change priority.",
                status=409,
            )
        if case.priority == priority:
            return case

        now = timezone.now()
        changes = {"priority": [case.priority, priority]}
        case.priority = priority
        case.updated_at = now
        case.save(update_fields=["priority", "updated_at"])
        _event(
            case=case,
            actor=actor,
            kind=CaseEvent.Kind.PRIORITY_CHANGED,
            now=now,
            changes=changes,
        )
    return case


def case_move_team(
    *, case: Case, actor: AbstractBaseUser, team: Team, reason: str
) -> Case:
    """Move an open case to another team and clear its assignee.

    The actor must lead the case's current team (or be an admin); the target
    may be any team, because misrouted cases leave the lead's teams. The case
    goes back to new so the receiving team assigns it.
    """
    if not reason.strip():
        raise DomainError(
            "Moving a case requires a reason: say why the other team should take it.",
            details={"missing": ["reason"]},
        )
    with transaction.atomic():
        case = _lock(case)
        _require_lead(actor=actor, case=case, action="move cases to another team")
        if not case.is_open:
            raise DomainError(
                f"Case #{case.pk} is {case.state}: only open cases move between teams.",
                status=409,
            )
        if team.pk == case.team_id:
            raise DomainError(
                f"Case #{case.pk} is already in team {team.name}.",
                details={"team": team.pk},
            )

        now = timezone.now()
        changes = {"team": [case.team_id, team.pk]}
        if case.assignee_id is not None:
            changes["assignee"] = [case.assignee_id, None]
        if case.state != State.NEW:
            changes["state"] = [case.state, State.NEW]
        _set_state(case=case, to_state=State.NEW, now=now)
        case.team = team
        case.assignee = None
        case.routing_rule = None
        case.routing_reason = f"moved by {actor.get_username()}: {reason.strip()}"[:300]
        case.assignment_reason = ""
        case.save(
            update_fields=[
                "team",
                "assignee",
                "state",
                "routing_rule",
                "routing_reason",
                "assignment_reason",
                "updated_at",
                *_SLA_FIELDS,
            ]
        )
        _event(
            case=case,
            actor=actor,
            kind=CaseEvent.Kind.TEAM_CHANGED,
            now=now,
            changes=changes,
            body=reason.strip(),
        )
    return case


def case_merge(*, case: Case, actor: AbstractBaseUser, into: Case) -> Case:
    """Merge a case into another open case of the same customer.

    The source may be open, resolved or closed, so a lead can merge a
    closed case that cannot be reopened because the target is open for the
    same customer and topic. Moves the source's feedback to the target
    (feedback already on the target stays once), closes the source with
    ``merged_into`` set (a closed source keeps its ``closed_at``), cancels
    its scheduled follow-up survey so the customer is not surveyed about a
    merged case, and records a merged event on both. The actor must lead
    both teams or be an admin. Returns the closed source case.
    """
    if case.pk == into.pk:
        raise DomainError(f"Case #{case.pk} cannot be merged into itself.")
    with transaction.atomic():
        # Lock both rows in id order so two opposite merges cannot deadlock.
        locked = {
            row.pk: row
            for row in Case.objects.select_for_update()
            .select_related("team")
            .filter(pk__in=[case.pk, into.pk])
            .order_by("pk")
        }
        source, target = locked[case.pk], locked[into.pk]
        _require_visible(actor=actor, case=source)
        _require_visible(actor=actor, case=target)
        _require_lead(actor=actor, case=source, action="merge cases")
        _require_lead(actor=actor, case=target, action="merge cases")
        _check_merge(source=source, target=target)

        now = timezone.now()
        target_feedback = CaseFeedback.objects.filter(case=target).values("feedback_id")
        CaseFeedback.objects.filter(case=source).exclude(
            feedback_id__in=target_feedback
        ).update(case=target)
        CaseFeedback.objects.filter(case=source).delete()

        source_changes = {"merged_into": [None, target.pk]}
        if source.is_open:
            _queue_assign_waiting(assignee_id=source.assignee_id)
        if source.state != State.CLOSED:
            source_changes["state"] = [source.state, State.CLOSED]
            _set_state(case=source, to_state=State.CLOSED, now=now)
        source.merged_into = target
        source.updated_at = now
        source.save(
            update_fields=[
                "merged_into",
                "state",
                "is_open",
                "resolved_at",
                "closed_at",
                "updated_at",
                *_SLA_FIELDS,
            ]
        )
        cancelled = FollowUp.objects.filter(
            case=source, state=FollowUp.State.SCHEDULED
        ).update(
            state=FollowUp.State.CANCELLED,
            skip_reason=f"the case was merged into case #{target.pk}",
        )
        if cancelled:
            source_changes["follow_ups_cancelled"] = [0, cancelled]
        target.updated_at = now
        target.save(update_fields=["updated_at"])
        CaseEvent.objects.bulk_create(
            [
                CaseEvent(
                    case=source,
                    actor=actor,
                    kind=CaseEvent.Kind.MERGED,
                    created_at=now,
                    changes=source_changes,
                ),
                CaseEvent(
                    case=target,
                    actor=actor,
                    kind=CaseEvent.Kind.MERGED,
                    created_at=now,
                    changes={"merged_cases": [[], [source.pk]]},
                    body=f"Case #{source.pk} was merged into this case.",
                ),
            ]
        )
    return source


def _check_merge(*, source: Case, target: Case) -> None:
    if source.customer_id is None or source.customer_id != target.customer_id:
        raise DomainError(
            f"Cases #{source.pk} and #{target.pk} belong to different customers; "
            "only cases of the same customer can be merged.",
            details={"into": target.pk},
        )
    if source.merged_into_id is not None:
        raise DomainError(
            f"Case #{source.pk} is already merged into case "
            f"#{source.merged_into_id}.",
            details={"merged_into": source.merged_into_id},
            status=409,
        )
    if not target.is_open:
        raise DomainError(
            f"Case #{target.pk} is {target.state}: merge into an open case.",
            details={"into": target.pk},
            status=409,
        )


# Comments and customer contact


def case_comment(
    *, case: Case, actor: AbstractBaseUser, body: str, visibility: str
) -> CaseEvent:
    """Add an internal note or a reply to the customer to the timeline.

    The first reply to the customer on an open case sets
    ``first_response_at``. Internal notes go on any case, but a reply to the
    customer on a closed or merged case raises 409.
    """
    if not body.strip():
        raise DomainError("The comment is empty: write a body.", details={"missing": ["body"]})
    _check_choice(name="visibility", value=visibility, choices=CaseEvent.Visibility.values)
    with transaction.atomic():
        case = _lock(case)
        _require_visible(actor=actor, case=case)
        now = timezone.now()
        changes = {}
        if visibility == CaseEvent.Visibility.CUSTOMER:
            _require_contact_allowed(case=case, entry="reply to the customer")
            changes = _record_first_response(case=case, now=now)
        return _touch_and_record(
            case=case,
            actor=actor,
            kind=CaseEvent.Kind.COMMENT,
            now=now,
            changes=changes,
            body=body,
            visibility=visibility,
        )


def case_contact(
    *, case: Case, actor: AbstractBaseUser, channel: str, outcome: str, body: str = ""
) -> CaseEvent:
    """Record an attempt to reach the customer.

    The first attempt on an open case sets ``first_response_at``, whatever
    its outcome. A resolved case accepts attempts (a call to check the fix
    held) but they set no first response. A closed or merged case raises
    409.
    """
    _check_choice(name="channel", value=channel, choices=CaseEvent.Channel.values)
    _check_choice(name="outcome", value=outcome, choices=CaseEvent.Outcome.values)
    with transaction.atomic():
        case = _lock(case)
        _require_visible(actor=actor, case=case)
        _require_contact_allowed(case=case, entry="contact attempt")
        now = timezone.now()
        changes = _record_first_response(case=case, now=now)
        return _touch_and_record(
            case=case,
            actor=actor,
            kind=CaseEvent.Kind.CONTACT,
            now=now,
            changes=changes,
            channel=channel,
            outcome=outcome,
            body=body,
        )


def _touch_and_record(
    *, case: Case, actor: AbstractBaseUser, kind: str, now: datetime, changes: dict, **fields
) -> CaseEvent:
    """Save the case's first response and update time, then append the event."""
    case.updated_at = now
    case.save(update_fields=["first_response_at", "updated_at"])
    return _event(case=case, actor=actor, kind=kind, now=now, changes=changes, **fields)


def _check_choice(*, name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise DomainError(
            f"'{value}' is not a valid {name}: use one of {', '.join(choices)}.",
            details={name: value},
        )


def case_customer_replied(
    *, case: Case, actor: AbstractBaseUser, body: str, channel: str = ""
) -> CaseEvent:
    """Record the customer's reply, entered by an agent.

    A case waiting on the customer resumes to in_progress, and its SLA clock
    runs again. A resolved case reopens, because the customer writing back
    after a resolution means the problem is not settled: it goes to
    in_progress with an assignee and to new without one, its root cause and
    resolution note are cleared, and 409 is raised when another case of the
    same customer and topic is open. A closed or merged case raises 409.
    The reply is stored as a contact event with outcome ``reached``.
    """
    # NOTE: CaseEvent has no kind for an inbound customer message, so the
    # reply is a contact event; a dedicated kind needs a model change.
    if not body.strip():
        raise DomainError(
            "The customer's reply is missing: enter the customer's message.",
            details={"missing": ["body"]},
        )
    if channel:
        _check_choice(name="channel", value=channel, choices=CaseEvent.Channel.values)
    with transaction.atomic():
        case = _lock(case)
        _require_visible(actor=actor, case=case)
        _require_contact_allowed(case=case, entry="customer's reply")
        now = timezone.now()
        changes = {}
        fields = ["state", "updated_at", *_SLA_FIELDS]
        if case.state == State.WAITING:
            changes["state"] = [State.WAITING, State.IN_PROGRESS]
            _set_state(case=case, to_state=State.IN_PROGRESS, now=now)
        if case.state == State.RESOLVED:
            to_state = State.IN_PROGRESS if case.assignee_id else State.NEW
            changes["state"] = [State.RESOLVED, to_state]
            changes.update(_clear_resolution(case=case))
            _set_state(case=case, to_state=to_state, now=now)
            fields += ["is_open", "resolved_at", "closed_at"]
            fields += ["root_cause", "resolution_note"]
            _save_reopened(case=case, fields=fields)
            logger.info(
                "Case %s reopened to %s by a customer reply",
                case.pk,
                to_state,
                extra={"case_id": case.pk, "actor_id": actor.pk},
            )
        else:
            case.updated_at = now
            case.save(update_fields=fields)
        return _event(
            case=case,
            actor=actor,
            kind=CaseEvent.Kind.CONTACT,
            now=now,
            channel=channel,
            outcome=CaseEvent.Outcome.REACHED,
            body=body,
            changes=changes,
        )


# Automatic evaluation


def case_events_record_opening(
    *,
    opened: Sequence[Case],
    attached: Sequence[tuple[int, int]],
    now: datetime,
) -> None:
    """Record opened and feedback_attached events for one evaluation batch.

    ``attached`` contains (case id, feedback id) pairs. Cases waiting on the
    customer that got new feedback resume to in_progress. Costs a fixed
    number of queries whatever the batch size, and must run inside the
    caller's transaction because it locks the cases it resumes.
    """
    events = [
        CaseEvent(
            case_id=case.pk,
            kind=CaseEvent.Kind.OPENED,
            created_at=now,
            changes={
                "state": [None, case.state],
                "team": [None, case.team_id],
                "assignee": [None, case.assignee_id],
                "priority": [None, case.priority],
            },
            body=case.rule_reason,
        )
        for case in opened
    ]
    events.extend(
        CaseEvent(
            case_id=case_id,
            kind=CaseEvent.Kind.FEEDBACK_ATTACHED,
            created_at=now,
            changes={"feedback": [None, feedback_id]},
        )
        for case_id, feedback_id in attached
    )
    events.extend(
        _cases_resume_waiting(case_ids={case_id for case_id, _ in attached}, now=now)
    )
    CaseEvent.objects.bulk_create(events)


def _cases_resume_waiting(*, case_ids: set[int], now: datetime) -> list[CaseEvent]:
    """Move the waiting cases among ``case_ids`` to in_progress, in bulk,
    and return their unsaved state_changed events."""
    if not case_ids:
        return []
    waiting = list(
        Case.objects.select_for_update()
        .filter(pk__in=case_ids, state=State.WAITING)
        .order_by("pk")
    )
    if not waiting:
        return []
    for case in waiting:
        _set_state(case=case, to_state=State.IN_PROGRESS, now=now)
    Case.objects.bulk_update(waiting, ["state", "updated_at", *_SLA_FIELDS])
    logger.info(
        "New feedback resumed %d cases waiting on the customer",
        len(waiting),
        extra={"case_ids": [case.pk for case in waiting]},
    )
    return [
        CaseEvent(
            case_id=case.pk,
            kind=CaseEvent.Kind.STATE_CHANGED,
            created_at=now,
            changes={"state": [State.WAITING, State.IN_PROGRESS]},
            body="The customer sent new feedback.",
        )
        for case in waiting
    ]
