"""Plain-text emails about actions: overdue reminders and the leads' digest.

Emails go out with ``send_mail`` after the surrounding transaction commits,
so a rolled-back claim sends nothing.
"""

import logging
from datetime import date, datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction

from cases.models import TeamMember

from .models import Action

logger = logging.getLogger(__name__)


def _send_after_commit(*, subject: str, body: str, recipients: list[str], log_extra: dict) -> None:
    def send() -> None:
        try:
            send_mail(subject, body, None, recipients)
        except OSError:
            # The reminder is claimed for the day already, so a failed send
            # is logged for a person to follow up rather than retried.
            logger.exception("Sending email %r failed", subject, extra=log_extra)

    transaction.on_commit(send)


def _lead_emails(team_id: int) -> list[str]:
    users = get_user_model().objects.filter(
        team_memberships__team_id=team_id,
        team_memberships__role=TeamMember.Role.LEAD,
        is_active=True,
    )
    return [email for email in users.values_list("email", flat=True) if email]


def overdue_reminder_send(*, action: Action, today: date) -> list[str]:
    """Queue the overdue reminder to the owner and the team's leads; returns the addresses."""
    recipients = sorted({*([action.owner.email] if action.owner.email else []), *_lead_emails(action.team_id)})
    if not recipients:
        logger.info("Overdue action %s not reminded: no owner or lead has an email address", action.pk, extra={"action_id": action.pk})
        return []
    days = (today - action.due_date).days
    body = (
        f"Action #{action.pk} \"{action.title}\" of {action.team.name} was due on "
        f"{action.due_date.isoformat()}, {days} day{'s' if days != 1 else ''} ago, "
        f"and is still {action.get_state_display().lower()}.\n\n"
        f"Owner: {action.owner.get_username()}\n\n"
        "Move it forward, or change the due date if the plan changed.\n"
    )
    _send_after_commit(
        subject=f"[OSCM] Overdue action: {action.title}",
        body=body,
        recipients=recipients,
        log_extra={"action_id": action.pk},
    )
    return recipients


def _format_rate(rate: float | None) -> str:
    return "no data" if rate is None else f"{rate:.1f}%"


def digest_body(*, lead_name: str, digest: dict[str, Any], now: datetime) -> str:
    """Write the plain-text daily digest of one lead."""
    lines = [f"Daily digest for {lead_name}, {now:%Y-%m-%d %H:%M} UTC", ""]
    lines.append(f"New cases in the last 24 hours: {len(digest['new_cases'])}")
    lines += [f"  #{case.pk} {case.team.name}, {case.get_state_display()}" for case in digest["new_cases"]]
    lines.append(f"SLA breaches in the last 24 hours: {len(digest['breached_cases'])}")
    lines += [f"  #{case.pk} {case.team.name}, {case.get_state_display()}" for case in digest["breached_cases"]]
    lines += ["", "Recovery in the last 30 days (recovered / answered the follow-up):"]
    if not digest["recovery"]:
        lines.append("  no resolved cases")
    for row in digest["recovery"]:
        recovery = row["recovery"]
        lines.append(
            f"  {row['label']}: {_format_rate(recovery['rate'])} "
            f"({recovery['recovered']} of {recovery['answered']}; "
            f"{recovery['non_responders']} did not answer)"
        )
    lines += ["", f"Actions due within 7 days or overdue: {len(digest['actions_due'])}"]
    lines += [
        f"  #{action.pk} {action.title}, due {action.due_date.isoformat()}, {action.get_state_display()}"
        for action in digest["actions_due"]
    ]
    lines += ["", f"Verdicts in the last 7 days: {len(digest['verdicts'])}"]
    lines += [
        f"  #{action.pk} {action.title}: {action.get_verdict_display()}"
        for action in digest["verdicts"]
    ]
    return "\n".join(lines) + "\n"


def digest_send(*, email: str, body: str, user_id: int, day: date) -> None:
    """Queue one digest email through the outbox, at most one per lead and day.

    The outbox's unique dedup key makes a second run on the same day store
    nothing, so a retried or doubled beat run sends no second digest.
    """
    from cases.outbox import outbox_enqueue

    with transaction.atomic():
        outbox_enqueue(
            channel="email",
            dedup_key=f"digest:{user_id}:{day.isoformat()}",
            payload={
                "subject": "[OSCM] Your daily team digest",
                "text": body,
                "to": [email],
            },
        )

