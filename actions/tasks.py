"""Celery beat tasks of actions: measurements that fall due, overdue
reminders and the leads' daily digest.

Each task is idempotent: measurements and reminders are claimed with a
conditional update, so a task that runs twice, or on two workers at once,
measures and reminds once.
"""

import logging

from celery import shared_task
from django.contrib.auth import get_user_model
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from cases.models import TeamMember

from . import notifications, selectors, services

logger = logging.getLogger(__name__)

# Lost connections and deadlocks are worth another try; other errors are not.
TRANSIENT_DB_ERRORS = (OperationalError, InterfaceError)


@shared_task(
    autoretry_for=TRANSIENT_DB_ERRORS, retry_backoff=5, retry_backoff_max=60, max_retries=3
)
def action_measure_due_task() -> None:
    """Measure done actions whose after window has ended and that are not measured."""
    measured = services.action_measure_due(now=timezone.now())
    if measured:
        logger.info("Measured %d actions", len(measured), extra={"action_ids": measured})


@shared_task(
    autoretry_for=TRANSIENT_DB_ERRORS, retry_backoff=5, retry_backoff_max=60, max_retries=3
)
def action_overdue_remind_task() -> None:
    """Email the owner and the leads of each overdue open action, once a day."""
    reminded = services.action_remind_overdue_all(today=timezone.now().date())
    if reminded:
        logger.info("Sent %d overdue action reminders", len(reminded), extra={"action_ids": reminded})


@shared_task(
    autoretry_for=TRANSIENT_DB_ERRORS, retry_backoff=5, retry_backoff_max=60, max_retries=3
)
def lead_digest_task() -> None:
    """Email each active lead with an address the daily digest of the teams they lead.

    Idempotent per UTC day: the outbox stores one digest per lead and day.
    """
    now = timezone.now()
    team_ids_by_user: dict[int, set[int]] = {}
    for user_id, team_id in TeamMember.objects.filter(role=TeamMember.Role.LEAD).values_list(
        "user_id", "team_id"
    ):
        team_ids_by_user.setdefault(user_id, set()).add(team_id)
    leads = get_user_model().objects.filter(pk__in=team_ids_by_user, is_active=True).exclude(email="")
    sent = 0
    for lead in leads.order_by("pk"):
        digest = selectors.team_digest(team_ids=team_ids_by_user[lead.pk], now=now)
        body = notifications.digest_body(lead_name=lead.get_username(), digest=digest, now=now)
        notifications.digest_send(email=lead.email, body=body, user_id=lead.pk, day=now.date())
        sent += 1
    logger.info("Queued %d lead digests", sent)
