"""SLA services: choose a case's policy, set its due times, pause and resume
the resolution clock, and warn and escalate in a periodic sweep.

Targets are business minutes of the case team's calendar (``cases.sla``);
a team without a calendar runs on 24x7 UTC. Two targets are tracked:

- first response: runs from opening until ``first_response_at`` is set. It
  does not stop while the case waits on the customer, because a case cannot
  fairly wait on a customer whom nobody has answered yet.
- resolution: runs from opening, stops while ``sla_paused_at`` is set
  (waiting on the customer), and is pushed later on resume by the business
  time spent paused.
"""

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from django.contrib.auth import get_user_model
from django.core.mail import send_mass_mail
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from feedback import pgcopy

from .models import Case, CaseEvent, Priority, SlaPolicy, Team, TeamMember
from .sla import WorkingCalendar, add_business_minutes, business_minutes_between
from .webhooks import case_webhook_payload, webhook_events_emit

logger = logging.getLogger(__name__)

# The warning goes out once this share of a target's business time is used.
WARNING_SHARE = 0.75
SWEEP_BATCH_SIZE = 2000


@dataclass(frozen=True)
class SlaTarget:
    """One SLA clock of a case and the fields that track it."""

    name: str
    label: str
    minutes_field: str
    due_field: str
    warned_field: str
    breached_field: str
    # Conditions under which the clock runs, beyond the case being open.
    running: Q


FIRST_RESPONSE = SlaTarget(
    name="first_response",
    label="first response",
    minutes_field="first_response_minutes",
    due_field="first_response_due_at",
    warned_field="first_response_warned_at",
    breached_field="first_response_breached_at",
    running=Q(first_response_at__isnull=True),
)
RESOLUTION = SlaTarget(
    name="resolution",
    label="resolution",
    minutes_field="resolution_minutes",
    due_field="resolution_due_at",
    warned_field="resolution_warned_at",
    breached_field="resolution_breached_at",
    running=Q(sla_paused_at__isnull=True),
)
TARGETS = (FIRST_RESPONSE, RESOLUTION)


@dataclass(frozen=True)
class SweepResult:
    warned: int = 0
    breached: int = 0


# Policy choice and due times


def sla_policy_select(*, case: Case, policies: Sequence[SlaPolicy]) -> SlaPolicy | None:
    """Return the first active policy, in the given order, whose conditions
    all hold for the case, else the active fallback policy, else None.

    A blank team, priority or topic matches anything. Pass the policies
    ordered by ``position`` and id, as ``SlaPolicy.Meta.ordering`` does.
    """
    fallback = None
    for policy in policies:
        if not policy.is_active:
            continue
        if policy.is_fallback and fallback is None:
            fallback = policy
        if policy.team_id is not None and policy.team_id != case.team_id:
            continue
        if policy.priority is not None and policy.priority != case.priority:
            continue
        if policy.topic_id is not None and policy.topic_id != case.topic_id:
            continue
        return policy
    return fallback


def case_sla_apply(*, cases: Sequence[Case], now: datetime) -> None:
    """Choose each case's SLA policy and set its due times from ``opened_at``.

    Sets ``sla_policy``, ``first_response_due_at`` and ``resolution_due_at``
    in memory. Unsaved cases, as in ``case_open``, are left for the
    caller's insert. Saved ones are written by a bulk_update at the end, one
    UPDATE per 500 cases. Reading costs three queries whatever the batch
    size: policies, teams with calendars, and holidays. A case with no
    matching policy and no active fallback gets no due times.
    """
    if not cases:
        return
    policies = list(SlaPolicy.objects.filter(is_active=True).order_by("position", "pk"))
    calendars = team_calendars(team_ids={case.team_id for case in cases})

    # Cases of one batch share their opening time and a few teams,
    # priorities and topics. So the policy is chosen once per distinct
    # (team, priority, topic, opening time), and the calendar is walked once
    # per distinct (policy, calendar, opening time).
    settled: dict[tuple, tuple[SlaPolicy | None, list[tuple[str, datetime]]]] = {}
    due_times: dict[tuple, list[tuple[str, datetime]]] = {}
    for case in cases:
        opened_at = case.opened_at or now
        key = (case.team_id, case.priority, case.topic_id, opened_at)
        entry = settled.get(key)
        if entry is None:
            policy = sla_policy_select(case=case, policies=policies)
            dues: list[tuple[str, datetime]] = []
            if policy is not None:
                calendar = calendars[case.team_id]
                due_key = (policy.pk, calendar, opened_at)
                if due_key not in due_times:
                    due_times[due_key] = [
                        (
                            target.due_field,
                            add_business_minutes(
                                opened_at,
                                getattr(policy, target.minutes_field),
                                calendar,
                            ),
                        )
                        for target in TARGETS
                    ]
                dues = due_times[due_key]
            entry = settled[key] = (policy, dues)
        case.sla_policy, dues = entry
        for field, due in dues:
            setattr(case, field, due)

    saved = [case for case in cases if not case._state.adding]
    if saved:
        Case.objects.bulk_update(
            saved,
            ["sla_policy", "first_response_due_at", "resolution_due_at"],
            batch_size=500,
        )


def team_calendars(
    *, team_ids: Iterable[int] | None = None
) -> dict[int, WorkingCalendar]:
    """Return the working calendar of each team (all teams for None), in two
    queries: teams with their calendar, and the calendars' holidays."""
    teams = Team.objects.select_related("calendar").prefetch_related(
        "calendar__holidays"
    )
    if team_ids is not None:
        teams = teams.filter(pk__in=list(team_ids))
    built: dict[int | None, WorkingCalendar] = {}
    calendars = {}
    for team in teams:
        if team.calendar_id not in built:
            built[team.calendar_id] = WorkingCalendar.from_model(team.calendar)
        calendars[team.pk] = built[team.calendar_id]
    return calendars


# Pause and resume, called by the workflow on entering and leaving "waiting"


def case_sla_pause(*, case: Case, now: datetime) -> None:
    """Stop the resolution clock of the case at ``now``, in memory only.

    The caller saves ``sla_paused_at``. Pausing a paused case keeps the
    first pause time. The first-response clock keeps running.
    """
    if case.sla_paused_at is None:
        case.sla_paused_at = now


def case_sla_resume(*, case: Case, now: datetime) -> None:
    """Restart the resolution clock, in memory only, and clear the pause.

    Pushes ``resolution_due_at`` later by the business minutes of the team's
    calendar between the pause and ``now``, unless the target was already
    breached. ``first_response_due_at`` stays where it is, because that
    clock never stopped. The caller saves ``sla_paused_at`` and
    ``resolution_due_at``. Costs two queries for the calendar.
    """
    paused_at = case.sla_paused_at
    if paused_at is None:
        return
    case.sla_paused_at = None
    if case.resolution_due_at is None or case.resolution_breached_at is not None:
        return

    calendar = team_calendars(team_ids=[case.team_id]).get(
        case.team_id, WorkingCalendar.around_the_clock()
    )
    paused_minutes = business_minutes_between(paused_at, now, calendar)
    case.resolution_due_at = add_business_minutes(
        case.resolution_due_at, paused_minutes, calendar
    )


# The sweep

_BREACH_FOOTER = (
    "The priority of each case was raised one step. You receive this as a lead "
    "of the team, or as an admin when the team has no lead."
)
_WARNING_FOOTER = (
    "You receive this as the assignee, or as a lead when nobody is assigned."
)


class _ClaimLost(Exception):
    """Another sweep changed a row between this sweep's read and its update."""


class _SweepContext:
    """Data that one sweep reads once: policies, calendars, team names and
    the emails of leads and admins."""

    def __init__(self, *, now: datetime):
        self.now = now
        self.policies = {policy.pk: policy for policy in SlaPolicy.objects.all()}
        self.calendars = team_calendars()
        self.team_names = dict(Team.objects.values_list("pk", "name"))
        self._leads: dict[int, list[str]] | None = None
        self._admins: list[str] | None = None

    def team_name(self, team_id: int) -> str:
        return self.team_names.get(team_id, f"#{team_id}")

    def calendar(self, team_id: int) -> WorkingCalendar:
        return self.calendars.get(team_id) or WorkingCalendar.around_the_clock()

    def lead_emails(self, team_id: int) -> list[str]:
        """Return the emails of the team's active leads, else of the active
        staff superusers. Both lists are loaded once per sweep."""
        if self._leads is None:
            self._leads = defaultdict(list)
            rows = (
                TeamMember.objects.filter(
                    role=TeamMember.Role.LEAD, user__is_active=True
                )
                .exclude(user__email="")
                .values_list("team_id", "user__email")
            )
            for row_team_id, email in rows:
                self._leads[row_team_id].append(email)
        if self._leads.get(team_id):
            return self._leads[team_id]
        if self._admins is None:
            self._admins = list(
                get_user_model()
                .objects.filter(is_superuser=True, is_staff=True, is_active=True)
                .exclude(email="")
                .values_list("email", flat=True)
            )
        return self._admins


def case_sla_sweep(
    *, now: datetime | None = None, batch_size: int = SWEEP_BATCH_SIZE
) -> SweepResult:
    """Warn at 75% of each SLA target and escalate each breach, exactly once.

    For both targets of every open case whose clock runs: a breach (due time
    passed) stamps ``*_breached_at`` and ``is_breached``, raises the priority
    one step up to urgent, records sla_breach and priority_changed events and
    emails the team's leads. A case with 25% or less of the target's business
    time left gets ``*_warned_at``, an sla_warning event and an email to the
    assignee. Cases are claimed in batches of ``batch_size`` with SELECT ...
    FOR UPDATE SKIP LOCKED, each batch in its own transaction, and each
    UPDATE must change every claimed row. So overlapping sweeps and retries
    never warn or escalate twice. Emails are sent after each commit.
    """
    now = now or timezone.now()
    context = _SweepContext(now=now)

    breached = warned = 0
    for target in TARGETS:
        breached += _sweep_batches(
            queryset=_breach_candidates(target=target, now=now),
            due_field=target.due_field,
            webhook_fields=_WEBHOOK_FIELDS,
            batch_size=batch_size,
            process=partial(_cases_breach, target=target, context=context),
        )
        warned += _sweep_batches(
            queryset=_warning_candidates(target=target, context=context),
            due_field=target.due_field,
            webhook_fields=(),
            batch_size=batch_size,
            process=partial(_cases_warn, target=target, context=context),
        )

    if breached or warned:
        logger.info(
            "SLA sweep: %d breaches escalated, %d warnings sent",
            breached,
            warned,
            extra={"sla_breached": breached, "sla_warned": warned},
        )
    return SweepResult(warned=warned, breached=breached)


_CANDIDATE_FIELDS = ("id", "team_id", "assignee_id", "priority", "sla_policy_id")
# Position of the first webhook field in a candidate row, after the due time.
_WEBHOOK_START = len(_CANDIDATE_FIELDS) + 1
# The other fields that the case.escalated webhook payload reads.
_WEBHOOK_FIELDS = (
    "state",
    "topic_id",
    "customer_id",
    "trigger_feedback_id",
    "root_cause_id",
    "opened_at",
    "resolved_at",
    "is_breached",
)


@dataclass(slots=True)
class _Candidate:
    """A case that the sweep locked, read as plain values, because model
    instances of 20,000 rows took three times as long to build as tuples.
    Not frozen, because a frozen dataclass is slower to build."""

    pk: int
    team_id: int
    assignee_id: int | None
    priority: int
    sla_policy_id: int | None
    # The due time of the target being swept.
    due_at: datetime
    # Values of ``_WEBHOOK_FIELDS``, loaded for breaches only.
    webhook_fields: dict[str, Any]

    def webhook_payload(self) -> dict[str, Any]:
        case = Case(
            pk=self.pk,
            team_id=self.team_id,
            assignee_id=self.assignee_id,
            priority=self.priority,
            sla_policy_id=self.sla_policy_id,
            **self.webhook_fields,
        )
        return case_webhook_payload(case)


def _breach_candidates(*, target: SlaTarget, now: datetime) -> QuerySet[Case]:
    # is_open plus the due range match the partial indexes
    # case_open_first_response_due and case_open_resolution_due.
    return Case.objects.filter(
        target.running,
        is_open=True,
        **{f"{target.due_field}__lte": now, f"{target.breached_field}__isnull": True},
    )


def _warning_candidates(*, target: SlaTarget, context: _SweepContext) -> QuerySet[Case]:
    """Select cases that may be at the warning point of ``target``.

    For each calendar and policy, the warning point lies within
    ``(1 - WARNING_SHARE) * minutes`` business minutes before the due time.
    So a case qualifies when its due time is no later than that many
    business minutes from now. One extra minute covers a due time in the
    closed hours right after that point. ``_cases_warn`` checks each case
    exactly.
    """
    teams_by_calendar: dict[WorkingCalendar, list[int]] = defaultdict(list)
    for team_id, calendar in context.calendars.items():
        teams_by_calendar[calendar].append(team_id)

    conditions = Q()
    latest = None
    for calendar, team_ids in teams_by_calendar.items():
        for policy in context.policies.values():
            left = (1 - WARNING_SHARE) * getattr(policy, target.minutes_field)
            horizon = add_business_minutes(context.now, left + 1, calendar)
            latest = horizon if latest is None else max(latest, horizon)
            conditions |= Q(
                team_id__in=team_ids,
                sla_policy_id=policy.pk,
                **{f"{target.due_field}__lte": horizon},
            )
    if latest is None:
        return Case.objects.none()
    # The outer bound on the due time keeps the range scan on the index
    # short; the OR of per-policy bounds then narrows it.
    return Case.objects.filter(
        conditions,
        target.running,
        is_open=True,
        **{
            f"{target.due_field}__gt": context.now,
            f"{target.due_field}__lte": latest,
            f"{target.warned_field}__isnull": True,
            f"{target.breached_field}__isnull": True,
        },
    )


def _sweep_batches(
    *,
    queryset: QuerySet[Case],
    due_field: str,
    webhook_fields: Sequence[str],
    batch_size: int,
    process: Callable[[list[_Candidate]], int],
) -> int:
    """Lock candidates in due order, batch by batch, and process each batch
    in its own transaction. Returns the sum of what ``process`` returns.

    Rows locked by another sweep are skipped. Paging goes on from the last
    (due, id) seen, so a candidate that ``process`` leaves unchanged is not
    read again.
    """
    done = 0
    after = Q()
    while True:
        try:
            with transaction.atomic():
                values = (
                    queryset.filter(after)
                    .select_for_update(skip_locked=True)
                    .order_by(due_field, "pk")
                    .values_list(*_CANDIDATE_FIELDS, due_field, *webhook_fields)
                )
                rows = [
                    _Candidate(
                        *row[:_WEBHOOK_START],
                        webhook_fields=dict(zip(webhook_fields, row[_WEBHOOK_START:])),
                    )
                    for row in values[:batch_size]
                ]
                if rows:
                    done += process(rows)
        except _ClaimLost:
            # Only possible without row locks (SQLite): the next sweep
            # reads the rows again.
            logger.warning(
                "SLA sweep lost a claim to a concurrent sweep; stopping this pass",
                extra={"due_field": due_field},
            )
            return done
        if len(rows) < batch_size:
            return done
        last = rows[-1]
        last_due = last.due_at
        # The >= bound starts the next index range scan at the last due
        # time. Without it, the OR alone would rescan every earlier row.
        after = Q(**{f"{due_field}__gte": last_due}) & (
            Q(**{f"{due_field}__gt": last_due}) | Q(pk__gt=last.pk)
        )


def _claim(*, ids: list[int], target: SlaTarget, stamp_field: str, **changes) -> None:
    """Update the rows only where ``stamp_field`` is still null, and raise
    _ClaimLost unless every row changed, which rolls the batch back."""
    changed = Case.objects.filter(
        pk__in=ids, **{f"{stamp_field}__isnull": True}
    ).update(**changes)
    if changed != len(ids):
        raise _ClaimLost(f"{target.name}: {changed} of {len(ids)} rows changed")


def _cases_breach(
    rows: list[_Candidate], *, target: SlaTarget, context: _SweepContext
) -> int:
    """Record the breach of ``target`` on the locked rows and escalate them."""
    now = context.now
    by_priority: dict[int, list[_Candidate]] = defaultdict(list)
    for case in rows:
        by_priority[case.priority].append(case)
    events = []
    for old, cases in by_priority.items():
        new = min(old + 1, Priority.URGENT)
        _claim(
            ids=[case.pk for case in cases],
            target=target,
            stamp_field=target.breached_field,
            is_breached=True,
            priority=new,
            updated_at=now,
            **{target.breached_field: now},
        )
        for case in cases:
            events.append(_event(case, CaseEvent.Kind.SLA_BREACH, target, now))
            if new != old:
                events.append(
                    {
                        "case_id": case.pk,
                        "kind": CaseEvent.Kind.PRIORITY_CHANGED,
                        "changes": {"priority": [old, new]},
                        "body": f"Raised after the {target.label} SLA breach.",
                        "created_at": now,
                    }
                )
    _events_insert(events)
    # Each target breaches once per case, so the target names the version.
    # The payloads are a generator, so webhook_events_emit builds them only
    # when an endpoint subscribes to the event.
    escalations = (
        (
            case.pk,
            target.name,
            {
                **case.webhook_payload(),
                "priority": min(old + 1, Priority.URGENT),
                "is_breached": True,
                "sla_target": target.name,
            },
        )
        for old, cases in by_priority.items()
        for case in cases
    )
    webhook_events_emit(event="case.escalated", items=escalations)

    notices = [
        _breach_notice(case=case, target=target, context=context, old_priority=old)
        for old, cases in by_priority.items()
        for case in cases
    ]
    _send_after_commit(notices=notices, kind="breach", footer=_BREACH_FOOTER)
    logger.warning(
        "SLA %s target breached on %d cases; escalated to the team leads",
        target.label,
        len(rows),
        extra={"sla_target": target.name, "case_ids": [case.pk for case in rows]},
    )
    return len(rows)


def _cases_warn(
    rows: list[_Candidate], *, target: SlaTarget, context: _SweepContext
) -> int:
    """Warn on the locked rows that have used 75% of ``target``."""
    now = context.now
    due_rows = []
    for case in rows:
        policy = context.policies.get(case.sla_policy_id)
        if policy is None:
            continue
        left = business_minutes_between(
            now, case.due_at, context.calendar(case.team_id)
        )
        if left <= (1 - WARNING_SHARE) * getattr(policy, target.minutes_field):
            due_rows.append(case)
    if not due_rows:
        return 0

    _claim(
        ids=[case.pk for case in due_rows],
        target=target,
        stamp_field=target.warned_field,
        **{target.warned_field: now},
    )
    _events_insert(
        [_event(case, CaseEvent.Kind.SLA_WARNING, target, now) for case in due_rows]
    )
    assignee_emails = dict(
        get_user_model()
        .objects.filter(
            pk__in={case.assignee_id for case in due_rows if case.assignee_id},
            is_active=True,
        )
        .exclude(email="")
        .values_list("pk", "email")
    )
    notices = [
        _warning_notice(
            case=case, target=target, context=context, emails=assignee_emails
        )
        for case in due_rows
    ]
    _send_after_commit(notices=notices, kind="warning", footer=_WARNING_FOOTER)
    logger.info(
        "SLA %s warning sent for %d cases",
        target.label,
        len(due_rows),
        extra={"sla_target": target.name, "case_ids": [case.pk for case in due_rows]},
    )
    return len(due_rows)


def _event(
    case: _Candidate, kind: str, target: SlaTarget, now: datetime
) -> dict[str, Any]:
    return {
        "case_id": case.pk,
        "kind": kind,
        "changes": {"target": target.name, "due_at": case.due_at.isoformat()},
        "created_at": now,
    }


def _events_insert(events: list[dict[str, Any]]) -> None:
    """Insert CaseEvent rows given as field values: COPY on PostgreSQL,
    bulk_create elsewhere. COPY skips the bind parameters and model
    instances that made bulk_create half of a backlog sweep in
    bench/sla_sweep_bench.py."""
    if connection.vendor == "postgresql":
        pgcopy.copy_model_rows(CaseEvent, events)
    else:
        CaseEvent.objects.bulk_create(CaseEvent(**event) for event in events)


# Emails: ids, team names, targets and times only, never customer text.
#
# One message goes to each recipient list per batch. A backlog of breaches
# after an outage then reaches a lead as a few lists, not one email a case.


@dataclass(frozen=True)
class _Notice:
    recipients: tuple[str, ...]
    case_id: int
    line: str


def _breach_notice(
    *, case: _Candidate, target: SlaTarget, context: _SweepContext, old_priority: int
) -> _Notice | None:
    recipients = context.lead_emails(case.team_id)
    if not recipients:
        logger.warning(
            "No team lead or admin with an email to tell about SLA breach of case %s",
            case.pk,
            extra={"case_id": case.pk, "team_id": case.team_id},
        )
        return None
    new_priority = min(old_priority + 1, Priority.URGENT)
    line = (
        f"Case #{case.pk} of team {context.team_name(case.team_id)} missed its "
        f"{target.label} target, due {_due_text(case, context)}. Priority: "
        f"{Priority(old_priority).label} -> {Priority(new_priority).label}."
    )
    return _Notice(tuple(recipients), case.pk, line)


def _warning_notice(
    *,
    case: _Candidate,
    target: SlaTarget,
    context: _SweepContext,
    emails: dict[int, str],
) -> _Notice | None:
    # An unassigned case has nobody to warn but its leads.
    email = emails.get(case.assignee_id)
    recipients = [email] if email else context.lead_emails(case.team_id)
    if not recipients:
        return None
    line = (
        f"Case #{case.pk} of team {context.team_name(case.team_id)} has used "
        f"{WARNING_SHARE:.0%} of its {target.label} target, due "
        f"{_due_text(case, context)}."
    )
    return _Notice(tuple(recipients), case.pk, line)


def _due_text(case: _Candidate, context: _SweepContext) -> str:
    calendar = context.calendar(case.team_id)
    local = case.due_at.astimezone(calendar.timezone)
    return f"{local:%Y-%m-%d %H:%M} {calendar.timezone.key}"


def _send_after_commit(
    *, notices: list[_Notice | None], kind: str, footer: str
) -> None:
    """Queue one message per recipient list, sent after the batch commits."""
    by_recipients: dict[tuple[str, ...], list[_Notice]] = defaultdict(list)
    for notice in notices:
        if notice is not None:
            by_recipients[notice.recipients].append(notice)
    messages = []
    for recipients, group in by_recipients.items():
        if len(group) == 1:
            subject = f"SLA {kind}: case #{group[0].case_id}"
        else:
            subject = f"SLA {kind}: {len(group)} cases"
        body = "\n".join(notice.line for notice in group) + f"\n\n{footer}\n"
        messages.append((subject, body, None, list(recipients)))
    # NOTE: an email lost after the commit (SMTP down) is not retried; the
    # breach or warning row and its event are the durable record.
    if messages:
        transaction.on_commit(partial(_send, messages))


def _send(messages: list[tuple[str, str, None, list[str]]]) -> None:
    """Send the messages over one connection, logging a failure instead of
    raising it, because the batch is already committed."""
    try:
        send_mass_mail(messages, fail_silently=False)
    except OSError:
        # smtplib.SMTPException and socket errors are both OSError.
        logger.exception(
            "Sending %d SLA emails failed",
            len(messages),
            extra={"email_count": len(messages)},
        )
