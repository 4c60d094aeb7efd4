"""Write services for remediation actions: create, link cases, move through
the states, resolve the linked cases and measure the effect.

Every service writes ActionEvent rows that record who changed what, as
``changes={"field": [old, new]}``. Leads of the action's team and admins
create and change actions; the owner may also move its state. An action
outside the actor's teams raises DomainError 404, as cases do.
"""

import logging
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from cases.models import Case, RootCause, Team, TeamMember
from cases.permissions import cases_visible_to, user_is_admin, user_leads_team, user_team_ids
from feedback.metrics import SCORE_RANGES
from feedback.models import Feedback, Topic
from oscm.errors import DomainError

from . import measurement
from .models import Action, ActionCase, ActionEvent

logger = logging.getLogger(__name__)

State = Action.State

# Every state change, in one place. Verified and not_effective are set only
# by action_measure, from the verdict; people move the other steps.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    State.PLANNED: (State.IN_PROGRESS, State.DONE),
    State.IN_PROGRESS: (State.DONE,),
    State.DONE: (State.VERIFIED, State.NOT_EFFECTIVE),
    State.VERIFIED: (),
    State.NOT_EFFECTIVE: (),
}
MEASURED_STATES = (State.VERIFIED, State.NOT_EFFECTIVE)
OPEN_STATES = (State.PLANNED, State.IN_PROGRESS)

_VERDICT_STATES = {
    measurement.IMPROVED: State.VERIFIED,
    measurement.WORSE: State.NOT_EFFECTIVE,
    measurement.NO_CHANGE: State.NOT_EFFECTIVE,
    # Not enough data proves nothing either way, so the action stays done.
    measurement.NOT_ENOUGH_DATA: State.DONE,
}


def _event(
    *, action: Action, actor: AbstractBaseUser | None, kind: str, changes: dict | None = None,
    body: str = "", now: datetime | None = None,
) -> ActionEvent:
    return ActionEvent.objects.create(
        action=action,
        actor=actor if actor is not None and actor.is_authenticated else None,
        kind=kind,
        changes=changes or {},
        body=body,
        created_at=now or timezone.now(),
    )


def actions_visible_to(user: AbstractBaseUser):
    """Filter actions to those of the user's teams, or all for admins."""
    if user_is_admin(user):
        return Action.objects.all()
    if not user.is_authenticated:
        return Action.objects.none()
    return Action.objects.filter(team_id__in=user_team_ids(user))


def _require_visible(*, actor: AbstractBaseUser, action: Action) -> None:
    if not user_is_admin(actor) and action.team_id not in user_team_ids(actor):
        raise DomainError(f"Action #{action.pk} not found.", status=404)


def _require_lead(*, actor: AbstractBaseUser, team_id: int, operation: str) -> None:
    if not user_leads_team(actor, team_id):
        raise DomainError(
            f"Only leads of the team and admins may {operation}.",
            details={"team": team_id},
            status=403,
        )


def _lock(action: Action) -> Action:
    return Action.objects.select_for_update().get(pk=action.pk)


def _cases_for_team(*, actor: AbstractBaseUser, team: Team, case_ids: Iterable[int]) -> list[Case]:
    """Load the cases by id, rejecting ids not visible to the actor or of another team.

    Ids outside the actor's teams are reported as not found, so their
    existence is not revealed.
    """
    ids = sorted(set(case_ids))
    found = {case.pk: case for case in cases_visible_to(actor, Case.objects.filter(pk__in=ids))}
    missing = [pk for pk in ids if pk not in found]
    if missing:
        raise DomainError(
            f"Cases not found: {', '.join(map(str, missing))}.",
            details={"case_ids": missing},
        )
    other_team = [pk for pk in ids if found[pk].team_id != team.pk]
    if other_team:
        raise DomainError(
            f"Cases {', '.join(map(str, other_team))} belong to another team than "
            f"{team.name}: move them first or leave them out.",
            details={"case_ids": other_team},
        )
    return [found[pk] for pk in ids]


def _metric_kind_of_cases(case_ids: Sequence[int]) -> str:
    """Return the scored kind most of the cases were opened on, or ""."""
    rows = (
        Feedback.objects.filter(triggered_cases__id__in=list(case_ids), kind__in=list(SCORE_RANGES))
        .values("kind")
        .annotate(total=Count("id"))
        .order_by("-total", "kind")
    )
    first = rows.first()
    return first["kind"] if first else ""


def action_create(
    *,
    actor: AbstractBaseUser,
    title: str,
    description: str = "",
    team: Team,
    owner: AbstractBaseUser,
    due_date: date | None = None,
    topic: Topic | None = None,
    touchpoint: str = "",
    product: str = "",
    case_ids: Iterable[int] = (),
    metric_kind: str = "",
    window_days: int | None = None,
) -> Action:
    """Create an action of ``team`` that addresses the given cases.

    Only leads of the team and admins may create one (403 otherwise). The
    owner must be a member of the team or an admin. Every case must be
    visible to the actor and belong to the team, or DomainError lists the
    ids that are not. Without ``metric_kind`` the action measures the scored
    kind most of its cases were opened on.
    """
    _require_lead(actor=actor, team_id=team.pk, operation="create actions")
    if not title.strip():
        raise DomainError("The title is empty: say what the fix is.", details={"missing": ["title"]})
    if not user_is_admin(owner) and not TeamMember.objects.filter(team=team, user_id=owner.pk).exists():
        raise DomainError(
            f"Owner {owner.get_username()} is not a member of {team.name}: pick a team member.",
            details={"owner": owner.pk},
        )
    if metric_kind and metric_kind not in SCORE_RANGES:
        raise DomainError(
            f"metric_kind {metric_kind!r} is invalid: use one of {', '.join(SCORE_RANGES)}.",
            details={"metric_kind": metric_kind},
        )
    if window_days is not None and window_days < 1:
        raise DomainError(
            f"window_days {window_days} is invalid: use at least 1 day.",
            details={"window_days": window_days},
        )

    with transaction.atomic():
        cases = _cases_for_team(actor=actor, team=team, case_ids=case_ids)
        now = timezone.now()
        action = Action.objects.create(
            title=title.strip(),
            description=description,
            team=team,
            owner=owner,
            created_by=actor,
            due_date=due_date,
            topic=topic,
            touchpoint=touchpoint,
            product=product,
            metric_kind=metric_kind or _metric_kind_of_cases([case.pk for case in cases]),
            window_days=window_days or Action._meta.get_field("window_days").default,
            created_at=now,
        )
        ActionCase.objects.bulk_create(
            [ActionCase(action=action, case=case, linked_at=now) for case in cases]
        )
        _event(
            action=action,
            actor=actor,
            kind="created",
            changes={"state": [None, action.state], "case_ids": [[], [case.pk for case in cases]]},
            now=now,
        )
    logger.info(
        "Action %s created for team %s with %d cases",
        action.pk,
        team.pk,
        len(cases),
        extra={"action_id": action.pk, "team_id": team.pk, "actor_id": actor.pk},
    )
    return action


def action_link_cases(*, action: Action, actor: AbstractBaseUser, case_ids: Iterable[int]) -> list[int]:
    """Link more cases to the action; returns the ids newly linked.

    Cases already linked are left alone. The same checks as action_create
    apply: leads and admins only, cases visible and of the action's team.
    """
    _require_visible(actor=actor, action=action)
    _require_lead(actor=actor, team_id=action.team_id, operation="link cases to actions")
    with transaction.atomic():
        action = _lock(action)
        cases = _cases_for_team(actor=actor, team=action.team, case_ids=case_ids)
        linked = set(ActionCase.objects.filter(action=action).values_list("case_id", flat=True))
        new_ids = [case.pk for case in cases if case.pk not in linked]
        now = timezone.now()
        ActionCase.objects.bulk_create(
            [ActionCase(action=action, case_id=pk, linked_at=now) for pk in new_ids]
        )
        if new_ids:
            _event(action=action, actor=actor, kind="cases_linked", changes={"case_ids": [[], new_ids]}, now=now)
    return new_ids


def action_allowed_states(*, action: Action) -> tuple[str, ...]:
    """Return the states a person may move the action to from its current one."""
    return tuple(state for state in TRANSITIONS[action.state] if state not in MEASURED_STATES)


def _check_transition(*, action: Action, to_state: str) -> None:
    if to_state not in State.values:
        raise DomainError(
            f"State {to_state!r} is invalid: use one of {', '.join(State.values)}.",
            details={"to_state": to_state},
        )
    allowed = action_allowed_states(action=action)
    if to_state in MEASURED_STATES and action.state == State.DONE:
        message = (
            f"Action #{action.pk} becomes {to_state} only through its measurement, "
            f"due at {action.measure_due_at.isoformat() if action.measure_due_at else 'an unknown time'}."
        )
    elif to_state not in allowed:
        message = (
            f"Action #{action.pk} cannot move from {action.state} to {to_state}: "
            f"allowed next {', '.join(allowed) or 'none, the action is finished'}."
        )
    else:
        return
    raise DomainError(
        message,
        details={"state": action.state, "to_state": to_state, "allowed": list(allowed)},
        status=409,
    )


def action_transition(*, action: Action, actor: AbstractBaseUser, to_state: str) -> Action:
    """Move the action along TRANSITIONS, stamping started_at and done_at.

    Moving to done schedules the measurement at ``done_at + window_days``.
    Raises 409 naming the current state and the allowed next ones.
    """
    _require_visible(actor=actor, action=action)
    if actor.pk != action.owner_id:
        _require_lead(actor=actor, team_id=action.team_id, operation="change actions they do not own")
    with transaction.atomic():
        action = _lock(action)
        _check_transition(action=action, to_state=to_state)
        now = timezone.now()
        changes: dict[str, list[Any]] = {"state": [action.state, to_state]}
        fields = ["state"]
        if to_state == State.IN_PROGRESS:
            action.started_at = now
            fields.append("started_at")
        if to_state == State.DONE:
            action.done_at = now
            action.measure_due_at = now + timedelta(days=action.window_days)
            fields += ["done_at", "measure_due_at"]
            changes["measure_due_at"] = [None, action.measure_due_at.isoformat()]
        action.state = to_state
        action.save(update_fields=fields)
        _event(action=action, actor=actor, kind="state_changed", changes=changes, now=now)
    logger.info(
        "Action %s moved from %s to %s",
        action.pk,
        changes["state"][0],
        to_state,
        extra={"action_id": action.pk, "actor_id": actor.pk},
    )
    return action


def action_resolve_cases(
    *, action: Action, actor: AbstractBaseUser, root_cause: RootCause, resolution_note: str
) -> dict[str, list]:
    """Resolve every open linked case through the case workflow.

    Each case moves in its own savepoint, so a case the workflow rejects
    (already waiting on a reopen conflict, not visible to the actor, ...) is
    skipped and reported with the workflow's message while the others
    resolve. Returns ``{"resolved": [ids], "skipped": [{"case_id", "reason"}]}``.
    """
    # Imported when first needed, so loading this module does not load the
    # case workflow and everything it imports.
    from cases.workflow import case_transition

    _require_visible(actor=actor, action=action)
    _require_lead(actor=actor, team_id=action.team_id, operation="resolve the cases of actions")
    resolved: list[int] = []
    skipped: list[dict[str, Any]] = []
    open_cases = Case.objects.filter(actions=action, is_open=True).order_by("pk")
    with transaction.atomic():
        for case in open_cases:
            try:
                with transaction.atomic():
                    case_transition(
                        case=case,
                        actor=actor,
                        to_state=Case.State.RESOLVED,
                        root_cause=root_cause,
                        resolution_note=resolution_note,
                    )
            except DomainError as error:
                skipped.append({"case_id": case.pk, "reason": error.message})
                continue
            resolved.append(case.pk)
        _event(
            action=action,
            actor=actor,
            kind="cases_resolved",
            changes={"resolved": resolved, "skipped": skipped},
            body=resolution_note,
        )
    if skipped:
        logger.warning(
            "Action %s resolved %d cases and skipped %d",
            action.pk,
            len(resolved),
            len(skipped),
            extra={"action_id": action.pk, "skipped_case_ids": [row["case_id"] for row in skipped]},
        )
    return {"resolved": resolved, "skipped": skipped}


def action_segment_counts(
    *, kind: str, topic_id: int | None, touchpoint: str, product: str, since: datetime, until: datetime
) -> dict[int, int]:
    """Count the segment's scored feedback per score in ``since <= occurred_at < until``.

    One GROUP BY query. PostgreSQL finds the rows through the
    ``feedback_kind_occurred`` index on (kind, occurred_at); the topic joins
    FeedbackTopic, whose unique constraint lists a feedback once per topic,
    so the join counts no feedback twice.
    """
    rows = Feedback.objects.filter(
        kind=kind, score__isnull=False, occurred_at__gte=since, occurred_at__lt=until
    )
    if topic_id is not None:
        rows = rows.filter(feedbacktopic__topic_id=topic_id)
    if touchpoint:
        rows = rows.filter(touchpoint=touchpoint)
    if product:
        rows = rows.filter(product=product)
    grouped = rows.values("score").annotate(total=Count("id")).order_by("score")
    return {row["score"]: row["total"] for row in grouped}


def action_measurement_windows(*, action: Action) -> tuple[tuple[datetime, datetime], tuple[datetime, datetime]]:
    """Return the (since, until) of the windows before and after the action.

    Both last ``window_days``. The before window ends when work started, or
    when the action was done if it never started, so the work itself does
    not blur the baseline.
    """
    length = timedelta(days=action.window_days)
    anchor = action.started_at or action.done_at
    return (anchor - length, anchor), (action.done_at, action.done_at + length)


def action_measure(*, action: Action, now: datetime) -> Action:
    """Measure the action's segment before and after it and store the verdict.

    Writes ``verdict``, ``measurement`` (every number of the comparison) and
    ``measured_at``. Improved moves the action to verified, worse and
    no_change move it to not_effective, and not_enough_data keeps it done. Emits the
    ``action.verdict`` webhook in the same transaction. Raises 409 unless the
    action is done and its after window has ended.
    """
    from cases.webhooks import webhook_event_emit

    with transaction.atomic():
        action = _lock(action)
        if action.state != State.DONE or action.done_at is None:
            raise DomainError(
                f"Action #{action.pk} is {action.state}: only done actions are measured.",
                details={"state": action.state},
                status=409,
            )
        before, after = action_measurement_windows(action=action)
        if now < after[1]:
            raise DomainError(
                f"Action #{action.pk} cannot be measured before its window ends at {after[1].isoformat()}.",
                details={"measure_due_at": after[1].isoformat()},
                status=409,
            )
        kind = action.metric_kind or _metric_kind_of_cases(
            list(ActionCase.objects.filter(action=action).values_list("case_id", flat=True))
        )
        result = _measure_segment(action=action, kind=kind, before=before, after=after)

        old_state = action.state
        action.verdict = result["verdict"]
        action.measurement = result
        action.measured_at = now
        action.state = _VERDICT_STATES[result["verdict"]]
        action.save(update_fields=["verdict", "measurement", "measured_at", "state"])
        _event(
            action=action,
            actor=None,
            kind="measured",
            changes={"state": [old_state, action.state], "verdict": ["", action.verdict]},
            body=result["reason"],
            now=now,
        )
        webhook_event_emit(
            event="action.verdict",
            payload=action_webhook_payload(action=action),
            object_id=action.pk,
            version=now.isoformat(),
        )
    logger.info(
        "Action %s measured: %s, now %s",
        action.pk,
        action.verdict,
        action.state,
        extra={"action_id": action.pk, "verdict": action.verdict},
    )
    return action


def _measure_segment(
    *, action: Action, kind: str, before: tuple[datetime, datetime], after: tuple[datetime, datetime]
) -> dict[str, Any]:
    segment = {
        "topic": action.topic.slug if action.topic_id else None,
        "touchpoint": action.touchpoint or None,
        "product": action.product or None,
    }
    windows = {
        "before": [before[0].isoformat(), before[1].isoformat()],
        "after": [after[0].isoformat(), after[1].isoformat()],
    }
    if not kind:
        return {
            "kind": None,
            "segment": segment,
            "windows": windows,
            "min_n_per_side": measurement.MIN_N_PER_SIDE,
            "verdict": measurement.NOT_ENOUGH_DATA,
            "reason": "no metric kind: set metric_kind or link cases opened on scored feedback",
        }
    counts = [
        action_segment_counts(
            kind=kind,
            topic_id=action.topic_id,
            touchpoint=action.touchpoint,
            product=action.product,
            since=since,
            until=until,
        )
        for since, until in (before, after)
    ]
    result = measurement.compare_before_after(kind=kind, before=counts[0], after=counts[1])
    result["segment"] = segment
    result["windows"] = windows
    return result


def action_webhook_payload(*, action: Action) -> dict[str, Any]:
    """Return the ``action.verdict`` webhook body of the action."""
    result = action.measurement or {}
    return {
        "id": action.pk,
        "title": action.title,
        "team": {"id": action.team_id, "name": action.team.name},
        "state": action.state,
        "verdict": action.verdict,
        "measured_at": action.measured_at.isoformat() if action.measured_at else None,
        "kind": result.get("kind"),
        "before": {key: result.get("before", {}).get(key) for key in ("n", "score", "margin")},
        "after": {key: result.get("after", {}).get(key) for key in ("n", "score", "margin")},
        "difference": result.get("difference"),
        "p_value": result.get("p_value"),
    }


def action_remind_overdue(*, action: Action, today: date) -> list[str]:
    """Claim today's overdue reminder of the action and queue its email.

    The conditional update on ``last_reminded_on`` changes one row only for
    the first caller of the day, so two workers send one email. Returns the
    recipients, or an empty list when the reminder was already sent or the
    action is no longer overdue.
    """
    from .notifications import overdue_reminder_send

    with transaction.atomic():
        claimed = (
            Action.objects.filter(pk=action.pk, state__in=OPEN_STATES, due_date__lt=today)
            .exclude(last_reminded_on__gte=today)
            .update(last_reminded_on=today)
        )
        if claimed != 1:
            return []
        action.refresh_from_db()
        recipients = overdue_reminder_send(action=action, today=today)
        _event(
            action=action,
            actor=None,
            kind="overdue_reminder",
            changes={"recipients": len(recipients)},
            body=f"Due {action.due_date.isoformat()}, reminder sent on {today.isoformat()}.",
        )
    return recipients


def action_measure_due(*, now: datetime, limit: int = 100) -> list[int]:
    """Measure the done actions whose window has ended; returns the ids measured.

    The after window ends at ``done_at + window_days``, computed here, so a
    ``measure_due_at`` edited to an earlier time does not measure early:
    such an action gets its ``measure_due_at`` set back to the window's end,
    with one warning, and is measured then. Each action is claimed by a
    conditional update of ``measured_at`` in the transaction that measures
    it, so two workers never measure one action twice, and a failed
    measurement rolls back its claim and is retried on the next run.
    """
    from .selectors import actions_due_for_measurement

    measured = []
    for action_id in actions_due_for_measurement(now=now, limit=limit):
        if _measure_due_at_postponed(action_id=action_id, now=now):
            continue
        try:
            with transaction.atomic():
                claimed = Action.objects.filter(
                    pk=action_id, state=State.DONE, measured_at__isnull=True, measure_due_at__lte=now
                ).update(measured_at=now)
                if claimed != 1:
                    continue
                action_measure(action=Action.objects.get(pk=action_id), now=now)
        except DomainError as error:
            logger.error(
                "Measuring action %s failed: %s", action_id, error.message, extra={"action_id": action_id}
            )
            continue
        measured.append(action_id)
    return measured


def _measure_due_at_postponed(*, action_id: int, now: datetime) -> bool:
    """Reset ``measure_due_at`` to ``done_at + window_days`` when that is
    still ahead; returns True when the action is not due yet.

    The conditional update changes the row once, so only one sweep (and one
    worker) logs the warning.
    """
    row = (
        Action.objects.filter(pk=action_id)
        .values("done_at", "window_days", "measure_due_at")
        .first()
    )
    if row is None or row["done_at"] is None:
        return False
    window_end = row["done_at"] + timedelta(days=row["window_days"])
    if now >= window_end:
        return False
    postponed = Action.objects.filter(
        pk=action_id, measure_due_at=row["measure_due_at"], measured_at__isnull=True
    ).update(measure_due_at=window_end)
    if postponed:
        logger.warning(
            "Action %s had measure_due_at %s before its after window ends; "
            "measuring at %s instead",
            action_id,
            row["measure_due_at"].isoformat(),
            window_end.isoformat(),
            extra={"action_id": action_id},
        )
    return True


def action_remind_overdue_all(*, today: date, limit: int = 500) -> list[int]:
    """Send today's reminder of every overdue open action; returns the ids reminded."""
    from .selectors import actions_overdue_ids

    reminded = []
    for action_id in actions_overdue_ids(today=today, limit=limit):
        action = Action.objects.select_related("team", "owner").get(pk=action_id)
        if action_remind_overdue(action=action, today=today):
            reminded.append(action_id)
    return reminded
