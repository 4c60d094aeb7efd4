"""Follow-up surveys of resolved cases: scheduling, contact rules, sending,
answers and the recovery they measure.

A follow-up is a row due some days after resolution. The beat task
``follow_up_dispatch_task`` applies the contact policy to due rows. When the
customer may be contacted, it stores a token hash and queues the email in
the outbox in the same transaction. The answer becomes ordinary survey
feedback attached to the case, and sets the case's recovery fields.
"""

import hashlib
import logging
import secrets
import zoneinfo
from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields
from datetime import date, datetime, time, timedelta
from functools import lru_cache

from django.conf import settings
from django.core import signing
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.html import escape

from feedback.intake import validate_item
from feedback.models import Customer, Feedback
from feedback.services import feedback_ingest
from oscm.errors import DomainError

from .models import Case, CaseEvent, CaseFeedback, ContactPolicy, FollowUp, Team
from .outbox import LOG_CONTEXT_KEY, REDACT_KEY, outbox_enqueue_many
from .seeds import DEFAULT_CASE_RULES, DEFAULT_CONTACT_POLICY

logger = logging.getLogger(__name__)

SCORED_KINDS = (
    Feedback.Kind.NPS,
    Feedback.Kind.CSAT,
    Feedback.Kind.CES,
    Feedback.Kind.RATING,
)


def _unhappy_bands() -> dict[str, tuple[int, int]]:
    """Return, per kind, the score range that DEFAULT_CASE_RULES open cases for.

    NPS 0-6 (detractors), CSAT and rating 1-2, CES 1-3. A follow-up answer
    outside its band counts as recovered, so recovery and case opening share
    one definition of unhappy.
    """
    bands: dict[str, tuple[int, int]] = {}
    for _, _, kind, low, high, _, _ in DEFAULT_CASE_RULES:
        if low is None or high is None:
            continue
        current = bands.get(kind, (low, high))
        bands[kind] = (min(current[0], low), max(current[1], high))
    return bands


UNHAPPY_BANDS: dict[str, tuple[int, int]] = _unhappy_bands()


def score_is_unhappy(*, kind: str, score: int) -> bool:
    band = UNHAPPY_BANDS.get(kind)
    return band is not None and band[0] <= score <= band[1]


# A follow-up postponed because another case of the customer is open waits a
# day at a time, and is skipped after this many postponements.
OPEN_CASE_POSTPONEMENT = timedelta(days=1)
MAX_OPEN_CASE_POSTPONEMENTS = 14
# Follow-ups per batch: one transaction, a fixed number of queries and one
# delivery task for up to this many emails.
DISPATCH_BATCH_SIZE = 500
# Batches one dispatch run handles at most: 10,000 follow-ups, seconds of
# work, so a run ends before the beat queues the next one.
DISPATCH_MAX_BATCHES = 20
UNSUBSCRIBE_SALT = "oscm.cases.unsubscribe"
# Touchpoint of answer feedback, so metrics can tell recovery answers apart
# from feedback on the original experience.
FOLLOW_UP_TOUCHPOINT = "case-follow-up"
SURVEY_LANGUAGES = ("en", "id")


# Contact policy


@dataclass(frozen=True)
class EffectiveContactPolicy:
    """The contact rules that apply to one survey, after layering."""

    cooldown_days: int
    quiet_hours_start: time | None
    quiet_hours_end: time | None
    followup_delay_days: int
    followup_exempt_from_cooldown: bool
    reopen_when_still_unhappy: bool
    invitation_valid_days: int


def _as_time(value: object) -> time | None:
    if value is None or isinstance(value, time):
        return value
    return time.fromisoformat(str(value))


_CODE_DEFAULTS = EffectiveContactPolicy(
    cooldown_days=DEFAULT_CONTACT_POLICY["cooldown_days"],
    quiet_hours_start=_as_time(DEFAULT_CONTACT_POLICY["quiet_hours_start"]),
    quiet_hours_end=_as_time(DEFAULT_CONTACT_POLICY["quiet_hours_end"]),
    followup_delay_days=DEFAULT_CONTACT_POLICY["followup_delay_days"],
    followup_exempt_from_cooldown=DEFAULT_CONTACT_POLICY[
        "followup_exempt_from_cooldown"
    ],
    reopen_when_still_unhappy=DEFAULT_CONTACT_POLICY["reopen_when_still_unhappy"],
    invitation_valid_days=DEFAULT_CONTACT_POLICY["invitation_valid_days"],
)
POLICY_FIELDS = tuple(field.name for field in fields(EffectiveContactPolicy))


def contact_policy_for(
    *, team: Team | None, survey: Mapping[str, object] | None = None
) -> EffectiveContactPolicy:
    """Return the contact rules for a survey of a case of ``team``.

    Precedence, field by field: the survey's own settings (``survey``, for
    example ``{"followup_exempt_from_cooldown": False}``), then the team's
    ContactPolicy, then the global one (the row without a team). A None
    value falls through to the next layer. Quiet hours left blank on every
    layer mean no quiet hours. Any other field left blank everywhere, or a
    missing global row, takes its value from DEFAULT_CONTACT_POLICY.
    """
    rows = {
        row.team_id: row
        for row in ContactPolicy.objects.filter(team__isnull=True)
        | ContactPolicy.objects.filter(team_id=team.pk if team else None)
    }
    return _layer_policy(
        survey=survey,
        team_row=rows.get(team.pk) if team is not None else None,
        global_row=rows.get(None),
    )


def contact_policies_for(
    *, teams: Collection[Team]
) -> dict[int, EffectiveContactPolicy]:
    """Return the contact rules of each team's surveys, by team id, in one query.

    Each value equals ``contact_policy_for(team=team)``.
    """
    team_ids = [team.pk for team in teams]
    rows = {
        row.team_id: row
        for row in ContactPolicy.objects.filter(
            Q(team__isnull=True) | Q(team_id__in=team_ids)
        )
    }
    return {
        team_id: _layer_policy(
            survey=None, team_row=rows.get(team_id), global_row=rows.get(None)
        )
        for team_id in team_ids
    }


def _layer_policy(
    *,
    survey: Mapping[str, object] | None,
    team_row: ContactPolicy | None,
    global_row: ContactPolicy | None,
) -> EffectiveContactPolicy:
    layers: list[Mapping[str, object]] = [dict(survey or {})]
    if team_row is not None:
        layers.append(_policy_values(team_row))
    if global_row is not None:
        layers.append(_policy_values(global_row))
    else:
        layers.append(_policy_values(_CODE_DEFAULTS))

    values = {}
    for name in POLICY_FIELDS:
        value = next(
            (layer[name] for layer in layers if layer.get(name) is not None), None
        )
        if value is None and name not in _OPTIONAL_FIELDS:
            value = getattr(_CODE_DEFAULTS, name)
        values[name] = value
    values["quiet_hours_start"] = _as_time(values["quiet_hours_start"])
    values["quiet_hours_end"] = _as_time(values["quiet_hours_end"])
    return EffectiveContactPolicy(**values)


# Fields whose blank value is a setting of its own: no quiet hours.
_OPTIONAL_FIELDS = ("quiet_hours_start", "quiet_hours_end")


def _policy_values(policy: ContactPolicy | EffectiveContactPolicy) -> dict:
    return {name: getattr(policy, name) for name in POLICY_FIELDS}


# Scheduling


def case_follow_up_schedule(*, case: Case, now: datetime) -> FollowUp | None:
    """Schedule the follow-up survey of a case that was just resolved.

    The survey has the kind of the trigger feedback and is due
    ``followup_delay_days`` after ``now``. Returns None, scheduling nothing,
    for text-only triggers and for cases without a customer or without an
    email address. Idempotent: when the case already has a pending
    (scheduled or sent) follow-up, that one is returned, which the partial
    unique index on the case guarantees even between concurrent callers.
    Runs in the caller's transaction.
    """
    trigger = case.trigger_feedback
    customer = case.customer
    if trigger.kind not in SCORED_KINDS or customer is None or not customer.email:
        logger.info(
            "No follow-up for case %s: the trigger is text only or the case has "
            "no customer email",
            case.pk,
            extra={"case_id": case.pk},
        )
        return None
    pending = _pending_follow_up(case)
    if pending is not None:
        return pending

    policy = contact_policy_for(team=case.team)
    try:
        with transaction.atomic():
            follow_up = FollowUp.objects.create(
                case=case,
                customer=customer,
                kind=trigger.kind,
                due_at=now + timedelta(days=policy.followup_delay_days),
                created_at=now,
            )
    except IntegrityError:
        return _pending_follow_up(case)
    logger.info(
        "Follow-up %s of case %s scheduled for %s",
        follow_up.pk,
        case.pk,
        follow_up.due_at.isoformat(),
        extra={"follow_up_id": follow_up.pk, "case_id": case.pk},
    )
    return follow_up


def _pending_follow_up(case: Case) -> FollowUp | None:
    return FollowUp.objects.filter(
        case=case, state__in=[FollowUp.State.SCHEDULED, FollowUp.State.SENT]
    ).first()


# Dispatch


@dataclass
class DispatchResult:
    sent: int = 0
    skipped: int = 0
    postponed: int = 0
    cancelled: int = 0
    expired: int = 0
    failed: int = 0


def follow_up_dispatch(
    *,
    now: datetime | None = None,
    batch_size: int = DISPATCH_BATCH_SIZE,
    max_batches: int = DISPATCH_MAX_BATCHES,
) -> DispatchResult:
    """Apply the contact rules to due follow-ups and send the allowed ones.

    Works through the due follow-ups in batches of ``batch_size``, at most
    ``max_batches`` of them, in due order; the next run takes the rest.
    Each batch is claimed in one transaction with SELECT ... FOR UPDATE SKIP
    LOCKED and a state guard, so two dispatchers never handle the same row.
    The rules, in order:

    - an opted-out or erased customer, or one without an email address, is
      skipped;
    - a case that is open again is cancelled;
    - another open case of the customer postpones by a day, and after
      ``MAX_OPEN_CASE_POSTPONEMENTS`` postponements the follow-up is skipped;
    - a survey sent to the customer within the cooldown skips, unless the
      policy exempts follow-ups from the cooldown;
    - quiet hours in the customer's time zone move ``due_at`` to their end.

    Sending stores the token hash and queues the email with dedup key
    ``follow-up:<id>`` in the same transaction, so a dispatch that runs twice
    queues one email. Each batch queues one ``outbox_deliver_batch_task``
    for its emails after commit. Sent follow-ups past their expiry are
    marked expired first.
    """
    now = now or timezone.now()
    result = DispatchResult()
    result.expired = FollowUp.objects.filter(
        state=FollowUp.State.SENT, expires_at__lte=now
    ).update(state=FollowUp.State.EXPIRED)

    policies: dict[int, EffectiveContactPolicy] = {}
    due_count = 0
    # Keyset pagination, so rows left scheduled (a failure, or locked by
    # another dispatcher) are not selected again by the next batch.
    after: tuple[datetime, int] | None = None
    for _ in range(max_batches):
        due = FollowUp.objects.filter(state=FollowUp.State.SCHEDULED, due_at__lte=now)
        if after is not None:
            due = due.filter(
                Q(due_at__gt=after[0]) | Q(due_at=after[0], pk__gt=after[1])
            )
        batch = list(
            due.order_by("due_at", "pk").values_list("due_at", "pk")[:batch_size]
        )
        if not batch:
            break
        due_count += len(batch)
        _claim_and_dispatch(
            [pk for _, pk in batch], policies=policies, result=result, now=now
        )
        if len(batch) < batch_size:
            break
        after = batch[-1]

    if due_count or result.expired:
        logger.info(
            "Follow-up dispatch: %d sent, %d skipped, %d postponed, %d cancelled, "
            "%d expired, %d failed",
            result.sent,
            result.skipped,
            result.postponed,
            result.cancelled,
            result.expired,
            result.failed,
            extra={"follow_ups_due": due_count, "follow_ups_sent": result.sent},
        )
    return result


def _claim_and_dispatch(
    follow_up_ids: list[int],
    *,
    policies: dict[int, EffectiveContactPolicy],
    result: DispatchResult,
    now: datetime,
) -> None:
    """Lock a batch of due follow-ups, apply the rules and write the outcomes.

    Rows another worker has locked are skipped. The batch costs a constant number
    of queries: the lock, the policies of teams not seen yet in this run, the
    customers' other open cases, their recent surveys, one bulk UPDATE of
    the follow-ups, the outbox insert and its id lookup. A follow-up whose
    email cannot be rendered stays scheduled for the next run. A
    DatabaseError rolls back the whole batch: none of its emails are queued,
    because one delivery task for the batch is queued only after the commit.
    """
    with transaction.atomic():
        follow_ups = list(
            FollowUp.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("customer", "case__team__calendar")
            .filter(
                pk__in=follow_up_ids, state=FollowUp.State.SCHEDULED, due_at__lte=now
            )
            .order_by("due_at", "pk")
        )
        if not follow_ups:
            return
        teams = {follow_up.case.team for follow_up in follow_ups}
        new_teams = [team for team in teams if team.pk not in policies]
        if new_teams:
            policies.update(contact_policies_for(teams=new_teams))
        facts = _BatchFacts.load(follow_ups, policies=policies, now=now)

        changed: list[FollowUp] = []
        payloads: dict[FollowUp, dict] = {}
        for follow_up in follow_ups:
            policy = policies[follow_up.case.team_id]
            outcome = _decide(follow_up, policy=policy, facts=facts, now=now)
            if outcome != "sent":
                changed.append(follow_up)
                _count(result, outcome)
                continue
            payload = _prepare_send(follow_up, policy=policy, now=now)
            if payload is None:
                result.failed += 1
                continue
            payloads[follow_up] = payload
            facts.record_send(follow_up, now)
        sent = _write_batch(changed, payloads)
        result.sent += len(sent)
        result.skipped += len(payloads) - len(sent)
        if sent:
            outbox_enqueue_many(
                channel="email",
                messages=[
                    (f"follow-up:{follow_up.pk}", payloads[follow_up])
                    for follow_up in sent
                ],
            )
    _log_outcomes(changed, sent)


def _count(result: DispatchResult, outcome: str) -> None:
    setattr(result, outcome, getattr(result, outcome) + 1)


@dataclass
class _BatchFacts:
    """Open cases and recent surveys of the customers of one batch."""

    # Open cases per customer id, lowest id first.
    open_cases: dict[int, list[int]]
    # (follow-up id, sent_at) per customer id, of follow-ups sent since the
    # earliest cooldown start of the batch. Sends of this batch are added as
    # they are rendered, so a customer with two due follow-ups gets one
    # survey.
    last_sent: dict[int, list[tuple[int, datetime]]]

    @classmethod
    def load(
        cls,
        follow_ups: list[FollowUp],
        *,
        policies: dict[int, EffectiveContactPolicy],
        now: datetime,
    ) -> "_BatchFacts":
        customer_ids = {follow_up.customer_id for follow_up in follow_ups}
        open_cases: dict[int, list[int]] = {}
        rows = (
            Case.objects.filter(customer_id__in=customer_ids, is_open=True)
            .order_by("pk")
            .values_list("customer_id", "pk")
        )
        for customer_id, case_id in rows:
            open_cases.setdefault(customer_id, []).append(case_id)

        cooldowns = [
            policies[follow_up.case.team_id].cooldown_days
            for follow_up in follow_ups
            if not policies[follow_up.case.team_id].followup_exempt_from_cooldown
        ]
        last_sent: dict[int, list[tuple[int, datetime]]] = {}
        if cooldowns:
            rows = FollowUp.objects.filter(
                customer_id__in=customer_ids,
                sent_at__gte=now - timedelta(days=max(cooldowns)),
            ).values_list("customer_id", "pk", "sent_at")
            for customer_id, follow_up_id, sent_at in rows:
                last_sent.setdefault(customer_id, []).append((follow_up_id, sent_at))
        return cls(open_cases=open_cases, last_sent=last_sent)

    def other_open_case(self, follow_up: FollowUp) -> int | None:
        cases = self.open_cases.get(follow_up.customer_id, [])
        return next((pk for pk in cases if pk != follow_up.case_id), None)

    def record_send(self, follow_up: FollowUp, sent_at: datetime) -> None:
        self.last_sent.setdefault(follow_up.customer_id, []).append(
            (follow_up.pk, sent_at)
        )

    def surveyed_since(self, follow_up: FollowUp, since: datetime) -> bool:
        return any(
            pk != follow_up.pk and sent_at >= since
            for pk, sent_at in self.last_sent.get(follow_up.customer_id, [])
        )


def _decide(
    follow_up: FollowUp,
    *,
    policy: EffectiveContactPolicy,
    facts: _BatchFacts,
    now: datetime,
) -> str:
    """Apply the rules to one claimed follow-up, changing it in memory only.

    Returns the outcome's name: "sent" means the customer may be surveyed
    now, and the caller renders and stores the email.
    """
    customer = follow_up.customer
    case = follow_up.case
    if customer.is_opted_out:
        return _close(
            follow_up, FollowUp.State.SKIPPED, "the customer opted out of email"
        )
    if customer.erased_at is not None or not customer.email:
        return _close(
            follow_up, FollowUp.State.SKIPPED, "the customer has no email address"
        )
    if case.is_open:
        return _close(
            follow_up,
            FollowUp.State.CANCELLED,
            "the case was reopened before the survey",
        )

    other_open = facts.other_open_case(follow_up)
    if other_open is not None:
        if follow_up.attempts >= MAX_OPEN_CASE_POSTPONEMENTS:
            return _close(
                follow_up,
                FollowUp.State.SKIPPED,
                f"case #{other_open} of the customer stayed open for "
                f"{MAX_OPEN_CASE_POSTPONEMENTS} postponements",
            )
        reason = f"case #{other_open} of the customer is open"
        return _postpone(follow_up, now + OPEN_CASE_POSTPONEMENT, reason, count=True)

    if not policy.followup_exempt_from_cooldown:
        since = now - timedelta(days=policy.cooldown_days)
        if facts.surveyed_since(follow_up, since):
            return _close(
                follow_up,
                FollowUp.State.SKIPPED,
                f"the customer was surveyed in the last {policy.cooldown_days} days",
            )

    zone = _customer_zone(follow_up)
    allowed_at = quiet_hours_end_after(
        moment=now,
        zone=zone,
        start=policy.quiet_hours_start,
        end=policy.quiet_hours_end,
    )
    if allowed_at is not None:
        return _postpone(
            follow_up, allowed_at, f"quiet hours in {zone.key}", count=False
        )
    return "sent"


def _close(follow_up: FollowUp, state: str, reason: str) -> str:
    follow_up.state = state
    follow_up.skip_reason = reason
    follow_up.log_message = f"{state}: {reason}"
    return state


def _postpone(
    follow_up: FollowUp, due_at: datetime, reason: str, *, count: bool
) -> str:
    follow_up.due_at = due_at
    follow_up.skip_reason = f"postponed: {reason}"
    if count:
        follow_up.attempts += 1
    follow_up.log_message = f"postponed to {due_at.isoformat()}: {reason}"
    return "postponed"


def _prepare_send(
    follow_up: FollowUp, *, policy: EffectiveContactPolicy, now: datetime
) -> dict | None:
    """Give the follow-up a token and render its email; return the payload.

    Returns None, and leaves the follow-up unchanged so it stays scheduled,
    when the email fails to render. The failure is logged.
    """
    token = secrets.token_urlsafe(32)
    follow_up.expires_at = now + timedelta(days=policy.invitation_valid_days)
    try:
        payload = follow_up_email_payload(follow_up, token=token)
    except Exception:
        logger.exception(
            "Follow-up %s could not be dispatched",
            follow_up.pk,
            extra={"follow_up_id": follow_up.pk},
        )
        follow_up.expires_at = None
        return None
    follow_up.state = FollowUp.State.SENT
    follow_up.token_hash = survey_token_hash(token)
    follow_up.sent_at = now
    follow_up.skip_reason = ""
    return payload


_BATCH_FIELDS = (
    "state",
    "skip_reason",
    "due_at",
    "attempts",
    "token_hash",
    "expires_at",
    "sent_at",
)


def _write_batch(
    changed: list[FollowUp], payloads: dict[FollowUp, dict]
) -> list[FollowUp]:
    """Store the batch's outcomes in one UPDATE; return the follow-ups sent.

    The UPDATE keeps the guard state = scheduled. Under PostgreSQL the rows
    are locked, so every row matches. SQLite ignores FOR UPDATE, so a
    concurrent dispatcher may have sent some rows first, and the sends
    stored are then found by their token hashes.
    """
    rows = changed + list(payloads)
    if not rows:
        return []
    updated = FollowUp.objects.filter(state=FollowUp.State.SCHEDULED).bulk_update(
        rows, _BATCH_FIELDS
    )
    if updated == len(rows):
        return list(payloads)
    stored = set(
        FollowUp.objects.filter(
            token_hash__in=[follow_up.token_hash for follow_up in payloads]
        ).values_list("pk", flat=True)
    )
    return [follow_up for follow_up in payloads if follow_up.pk in stored]


def _log_outcomes(changed: list[FollowUp], sent: list[FollowUp]) -> None:
    if not logger.isEnabledFor(logging.INFO):
        return
    for follow_up in changed:
        logger.info(
            "Follow-up %s %s",
            follow_up.pk,
            follow_up.log_message,
            extra={"follow_up_id": follow_up.pk, "case_id": follow_up.case_id},
        )
    for follow_up in sent:
        logger.info(
            "Follow-up %s of case %s sent",
            follow_up.pk,
            follow_up.case_id,
            extra={"follow_up_id": follow_up.pk, "case_id": follow_up.case_id},
        )


def _customer_zone(follow_up: FollowUp) -> zoneinfo.ZoneInfo:
    """Return the customer's time zone, else the team calendar's, else UTC."""
    calendar = follow_up.case.team.calendar
    for name in (follow_up.customer.time_zone, calendar.timezone if calendar else ""):
        if not name:
            continue
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            logger.warning(
                "Time zone %r of follow-up %s is not an IANA name; trying the next one",
                name,
                follow_up.pk,
                extra={"follow_up_id": follow_up.pk},
            )
    return zoneinfo.ZoneInfo("UTC")


def quiet_hours_end_after(
    *, moment: datetime, zone: zoneinfo.ZoneInfo, start: time | None, end: time | None
) -> datetime | None:
    """Return when the quiet hours around ``moment`` end, or None outside them.

    ``start`` and ``end`` are local times in ``zone``; a window with start
    after end, such as 21:00-08:00, spans midnight. No window is set when
    either is None or they are equal. An end time that falls in a daylight
    saving gap resolves to the instant after the gap.
    """
    if start is None or end is None or start == end:
        return None
    local = moment.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    if start < end:
        quiet = start <= clock < end
        end_day = local.date()
    else:
        quiet = clock >= start or clock < end
        end_day = local.date() if clock < end else local.date() + timedelta(days=1)
    if not quiet:
        return None
    return _local_instant(end_day, end, zone)


def _local_instant(day: date, clock: time, zone: zoneinfo.ZoneInfo) -> datetime:
    wall = datetime.combine(day, clock, tzinfo=zone)
    # A wall time in a gap does not survive the round trip through UTC; the
    # round trip moves it past the gap.
    return wall.astimezone(zoneinfo.ZoneInfo("UTC"))


# Email


def survey_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def survey_language(customer: Customer) -> str:
    """Return "id" for Indonesian-speaking customers and "en" for everyone else."""
    language = (customer.language or "").lower().split("-")[0]
    return language if language in SURVEY_LANGUAGES else "en"


def absolute_url(path: str) -> str:
    return settings.OSCM_BASE_URL.rstrip("/") + path


def unsubscribe_token(customer: Customer) -> str:
    return signing.dumps(customer.pk, salt=UNSUBSCRIBE_SALT)


def unsubscribe_url(customer: Customer) -> str:
    return absolute_url(
        reverse("survey:unsubscribe", args=[unsubscribe_token(customer)])
    )


# Per language: the subject, the question per kind and the label of each
# score. Scores without a label show only the number.
SURVEY_TEXT = {
    "en": {
        "subject": "How did we do?",
        "questions": {
            "nps": "How likely are you to recommend us to a friend or colleague?",
            "csat": "How satisfied are you with how we handled your request?",
            "ces": "How easy was it to get your request resolved?",
            "rating": "How would you rate how we resolved your request?",
        },
        "labels": {
            "nps": {0: "Not at all likely", 10: "Extremely likely"},
            "csat": {
                1: "Very dissatisfied",
                2: "Dissatisfied",
                3: "Neither satisfied nor dissatisfied",
                4: "Satisfied",
                5: "Very satisfied",
            },
            "ces": {
                1: "Very difficult",
                2: "Difficult",
                3: "Somewhat difficult",
                4: "Neither easy nor difficult",
                5: "Somewhat easy",
                6: "Easy",
                7: "Very easy",
            },
            "rating": {
                1: "1 star",
                2: "2 stars",
                3: "3 stars",
                4: "4 stars",
                5: "5 stars",
            },
        },
    },
    "id": {
        "subject": "Bagaimana layanan kami?",
        "questions": {
            "nps": "Seberapa besar kemungkinan Anda merekomendasikan kami kepada teman atau kolega?",
            "csat": "Seberapa puas Anda dengan cara kami menangani permintaan Anda?",
            "ces": "Seberapa mudah permintaan Anda diselesaikan?",
            "rating": "Berapa nilai Anda untuk penyelesaian permintaan Anda?",
        },
        "labels": {
            "nps": {0: "Sangat tidak mungkin", 10: "Sangat mungkin"},
            "csat": {
                1: "Sangat tidak puas",
                2: "Tidak puas",
                3: "Netral",
                4: "Puas",
                5: "Sangat puas",
            },
            "ces": {
                1: "Sangat sulit",
                2: "Sulit",
                3: "Agak sulit",
                4: "Tidak mudah dan tidak sulit",
                5: "Agak mudah",
                6: "Mudah",
                7: "Sangat mudah",
            },
            "rating": {
                1: "1 bintang",
                2: "2 bintang",
                3: "3 bintang",
                4: "4 bintang",
                5: "5 bintang",
            },
        },
    },
}


def survey_scale(*, kind: str, language: str) -> list[dict]:
    """Return the scores of ``kind`` in order, each with its label (or "")."""
    low, high = Feedback.SCORE_RANGES[kind]
    labels = SURVEY_TEXT[language]["labels"][kind]
    return [
        {"score": score, "label": labels.get(score, "")}
        for score in range(low, high + 1)
    ]


def follow_up_email_payload(follow_up: FollowUp, *, token: str) -> dict:
    """Render the follow-up email in the customer's language as an outbox payload.

    The body carries the survey token, so the outbox drops it once the
    message is sent, cancelled or failed.
    """
    customer = follow_up.customer
    language = survey_language(customer)
    expires_on = follow_up.expires_at.date() if follow_up.expires_at else None
    text, html = _email_skeleton(
        language=language,
        kind=follow_up.kind,
        has_customer_name=bool(customer.name),
        expires_on=expires_on,
        locale=translation.get_language(),
    )
    values = {
        "customer_name": customer.name,
        "case_id": str(follow_up.case_id),
        "survey_url": absolute_url(reverse("survey:answer", args=[token])),
        "unsubscribe_url": unsubscribe_url(customer),
    }
    for name, value in values.items():
        text = text.replace(_EMAIL_SLOTS[name], value)
        html = html.replace(_EMAIL_SLOTS[name], escape(value))
    return {
        "customer_id": customer.pk,
        "subject": SURVEY_TEXT[language]["subject"],
        "text": text,
        "html": html,
        "unsubscribe_url": values["unsubscribe_url"],
        REDACT_KEY: ["text", "html"],
        LOG_CONTEXT_KEY: {"follow_up_id": follow_up.pk, "case_id": follow_up.case_id},
    }


# Placeholders for the per-follow-up values in a cached email. They are
# letters, digits and underscores, so HTML escaping leaves them as they are,
# and the random part keeps them out of any template text.
_EMAIL_SLOTS = {
    name: f"oscm{secrets.token_hex(8)}{name}"
    for name in ("customer_name", "case_id", "survey_url", "unsubscribe_url")
}


@lru_cache(maxsize=256)
def _email_skeleton(
    *,
    language: str,
    kind: str,
    has_customer_name: bool,
    expires_on: date | None,
    locale: str | None,
) -> tuple[str, str]:
    """Render the text and HTML emails once per key, with placeholders.

    A batch then renders the templates once per key, not per follow-up. The
    key contains every input the templates branch on or format: the
    customer name only in ``{% if %}``, the expiry date through the
    ``date`` filter of the active locale.
    """
    survey_url = _EMAIL_SLOTS["survey_url"]
    context = {
        "customer_name": _EMAIL_SLOTS["customer_name"] if has_customer_name else "",
        "case_id": _EMAIL_SLOTS["case_id"],
        "question": SURVEY_TEXT[language]["questions"][kind],
        "scale": [
            {**item, "url": f"{survey_url}?score={item['score']}"}
            for item in survey_scale(kind=kind, language=language)
        ],
        "survey_url": survey_url,
        "unsubscribe_url": _EMAIL_SLOTS["unsubscribe_url"],
        "expires_on": expires_on,
    }
    return (
        render_to_string(f"cases/email/follow_up_{language}.txt", context),
        render_to_string(f"cases/email/follow_up_{language}.html", context),
    )


# Answers


class SurveyUnavailable(DomainError):
    """The survey behind a token cannot take an answer: answered or expired."""


def follow_up_by_token(*, token: str) -> FollowUp | None:
    """Return the follow-up whose token hash matches, or None for a forged token."""
    if not token or len(token) > 100:
        return None
    return (
        FollowUp.objects.select_related("customer", "case")
        .filter(token_hash=survey_token_hash(token))
        .first()
    )


def follow_up_status(*, follow_up: FollowUp, now: datetime) -> str:
    """Return "open", "answered" or "expired" for a follow-up reached by its token."""
    if follow_up.state == FollowUp.State.ANSWERED:
        return "answered"
    if follow_up.state != FollowUp.State.SENT:
        return "expired"
    if follow_up.expires_at is not None and follow_up.expires_at <= now:
        return "expired"
    return "open"


def follow_up_answer(
    *,
    follow_up: FollowUp,
    score: object,
    comment: str = "",
    now: datetime | None = None,
) -> Feedback:
    """Record the answer to a follow-up survey and measure the recovery.

    The answer is stored through ``feedback_ingest`` as survey feedback of
    the follow-up's kind, with external id ``follow-up:<id>``, attached to
    the case, and stamped as evaluated, so the case rules do not open a
    second case for it. The case gets ``recovery_score_before`` (the trigger
    score), ``recovery_score_after`` and ``is_recovered``. An answer still in
    the unhappy band reopens the case when the effective contact policy sets
    ``reopen_when_still_unhappy``.
    Raises InvalidItem for a score outside the kind's range and
    SurveyUnavailable when the survey was answered or expired meanwhile.
    """
    now = now or timezone.now()
    customer = follow_up.customer
    item = validate_item(
        {
            "external_id": f"follow-up:{follow_up.pk}",
            "kind": follow_up.kind,
            "source": Feedback.Source.SURVEY,
            "score": score,
            "comment": comment,
            "customer": customer.external_id,
            "language": survey_language(customer),
            "occurred_at": now,
            "touchpoint": FOLLOW_UP_TOUCHPOINT,
        },
        now=now,
        raw={"follow_up_id": follow_up.pk, "case_id": follow_up.case_id},
    )

    with transaction.atomic():
        locked = FollowUp.objects.select_for_update().get(pk=follow_up.pk)
        status = follow_up_status(follow_up=locked, now=now)
        if status != "open":
            raise SurveyUnavailable(f"Follow-up {locked.pk} is {status}.", status=409)
        feedback_id = feedback_ingest(inputs=[item], now=now).ids[0]
        Feedback.objects.filter(pk=feedback_id).update(evaluated_at=now)
        claimed = FollowUp.objects.filter(
            pk=locked.pk, state=FollowUp.State.SENT
        ).update(state=FollowUp.State.ANSWERED, answered_at=now, answer_id=feedback_id)
        if claimed != 1:
            raise SurveyUnavailable(
                f"Follow-up {locked.pk} was answered meanwhile.", status=409
            )
        answer = Feedback.objects.get(pk=feedback_id)
        _case_record_recovery(follow_up=locked, answer=answer, now=now)
    return answer


def _case_record_recovery(
    *, follow_up: FollowUp, answer: Feedback, now: datetime
) -> None:
    case = (
        Case.objects.select_for_update()
        .select_related("trigger_feedback", "team")
        .get(pk=follow_up.case_id)
    )
    CaseFeedback.objects.bulk_create(
        [CaseFeedback(case=case, feedback=answer, attached_at=now)],
        ignore_conflicts=True,
    )

    before = case.trigger_feedback.score
    after = answer.score
    recovered = (
        None if after is None else not score_is_unhappy(kind=answer.kind, score=after)
    )
    changes = {
        "recovery_score_before": [case.recovery_score_before, before],
        "recovery_score_after": [case.recovery_score_after, after],
        "is_recovered": [case.is_recovered, recovered],
    }
    case.recovery_score_before = before
    case.recovery_score_after = after
    case.is_recovered = recovered
    case.updated_at = now
    case.save(
        update_fields=[
            "recovery_score_before",
            "recovery_score_after",
            "is_recovered",
            "updated_at",
        ]
    )
    CaseEvent.objects.create(
        case=case,
        kind=CaseEvent.Kind.FEEDBACK_ATTACHED,
        changes=changes,
        body=f"Follow-up survey answered: {answer.kind} {after}",
        created_at=now,
    )
    logger.info(
        "Follow-up %s answered: case %s %s",
        follow_up.pk,
        case.pk,
        "recovered" if recovered else "not recovered",
        extra={
            "follow_up_id": follow_up.pk,
            "case_id": case.pk,
            "feedback_id": answer.pk,
        },
    )

    still_unhappy = recovered is False and not case.is_open
    if still_unhappy and contact_policy_for(team=case.team).reopen_when_still_unhappy:
        _case_reopen(case=case, follow_up=follow_up)


def _case_reopen(*, case: Case, follow_up: FollowUp) -> None:
    """Reopen a case whose customer is still unhappy, as the system (actor None).

    The case goes back to in_progress when it has an assignee and to new when
    it has none, the two states the workflow reopens to. A transition the
    workflow rejects, for example because another case of the same customer
    and topic is open, is logged and the answer stays recorded.
    """
    from cases.workflow import case_transition

    to_state = Case.State.IN_PROGRESS if case.assignee_id else Case.State.NEW
    try:
        with transaction.atomic():
            case_transition(case=case, actor=None, to_state=to_state)
    except DomainError as error:
        logger.warning(
            "Case %s not reopened after an unhappy follow-up answer: %s",
            case.pk,
            error.message,
            extra={"case_id": case.pk, "follow_up_id": follow_up.pk},
        )
        return
    except Exception:
        # The customer's answer is committed even when the reopen fails.
        logger.exception(
            "Reopening case %s after an unhappy follow-up answer failed",
            case.pk,
            extra={"case_id": case.pk, "follow_up_id": follow_up.pk},
        )
        return
    logger.info(
        "Case %s reopened to %s: the follow-up answer is still unhappy",
        case.pk,
        to_state,
        extra={"case_id": case.pk, "follow_up_id": follow_up.pk},
    )


# Unsubscribe


def customer_by_unsubscribe_token(*, token: str) -> Customer | None:
    """Return the customer a signed unsubscribe token names, or None if it is forged."""
    try:
        customer_id = signing.loads(token, salt=UNSUBSCRIBE_SALT)
    except signing.BadSignature:
        return None
    if not isinstance(customer_id, int):
        return None
    return Customer.objects.filter(pk=customer_id).first()


def customer_unsubscribe(*, customer: Customer, now: datetime | None = None) -> int:
    """Opt the customer out of email and cancel their scheduled follow-ups.

    Emails already queued are cancelled by the outbox, which checks the
    opt-out right before sending. Sent surveys stay answerable until they
    expire. Returns how many follow-ups were cancelled.
    """
    with transaction.atomic():
        Customer.objects.filter(pk=customer.pk).update(is_opted_out=True)
        cancelled = FollowUp.objects.filter(
            customer_id=customer.pk, state=FollowUp.State.SCHEDULED
        ).update(
            state=FollowUp.State.CANCELLED, skip_reason="the customer unsubscribed"
        )
    customer.is_opted_out = True
    logger.info(
        "Customer %s unsubscribed; %d scheduled follow-ups cancelled",
        customer.pk,
        cancelled,
        extra={"customer_id": customer.pk},
    )
    return cancelled
