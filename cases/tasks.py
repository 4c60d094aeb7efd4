"""Celery tasks that evaluate feedback into cases and sweep SLA targets.

The intake queues ``feedback_evaluate_task`` with
``transaction.on_commit(partial(feedback_evaluate_task.delay, ids))`` after it
stores a batch; the beat schedule runs ``feedback_sweep_task`` for anything a
lost task left behind, and ``case_sla_sweep_task`` and
``case_assign_waiting_task`` every minute. All are idempotent, so duplicate
deliveries are safe.
"""

from celery import shared_task
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from .escalation import case_sla_sweep
from .services import case_assign_waiting, feedback_evaluate, feedback_sweep

# Lost connections, deadlocks and serialization failures are worth another
# try. Any other error comes from a bug or bad data, so a retry would fail too.
TRANSIENT_DB_ERRORS = (OperationalError, InterfaceError)

# Retry options shared by the outbox and follow-up tasks: a delivery retries
# sooner and more often than a periodic sweep, which runs again anyway.
_DELIVERY_OPTIONS = {
    "autoretry_for": TRANSIENT_DB_ERRORS,
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 5,
    "acks_late": True,
}
_SWEEP_OPTIONS = {**_DELIVERY_OPTIONS, "retry_backoff": 5, "max_retries": 3}


@shared_task(
    autoretry_for=TRANSIENT_DB_ERRORS,
    retry_backoff=2,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=6,
)
def feedback_evaluate_task(feedback_ids: list[int]) -> None:
    """Evaluate the given feedback; ids already evaluated are skipped."""
    feedback_evaluate(feedback_ids=feedback_ids)


@shared_task(
    autoretry_for=TRANSIENT_DB_ERRORS,
    retry_backoff=5,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=3,
)
def feedback_sweep_task() -> None:
    """Evaluate feedback stored but never evaluated after the grace period."""
    feedback_sweep()


@shared_task(
    autoretry_for=TRANSIENT_DB_ERRORS,
    retry_backoff=5,
    retry_backoff_max=30,
    retry_jitter=True,
    max_retries=3,
    soft_time_limit=50,
    time_limit=55,
)
def case_sla_sweep_task() -> None:
    """Warn on SLA targets at 75% and escalate breaches.

    Safe to run twice or concurrently: each warning and breach is claimed
    once. The limits end a run before the next one, 60 s later, starts.
    """
    case_sla_sweep()


@shared_task(**_SWEEP_OPTIONS, soft_time_limit=50, time_limit=55)
def case_assign_waiting_task(team_ids: list[int] | None = None) -> None:
    """Assign queued cases of the given teams (default every team) to agents
    with a free slot.

    Safe to run twice or concurrently, because runs on one team wait on the
    team row and a case given an agent leaves the queue. The limits end a
    run before the next one, 60 s later, starts.
    """
    case_assign_waiting(now=timezone.now(), team_ids=team_ids)


# Outbox delivery and follow-up surveys. The modules are imported inside the
# tasks because cases.outbox imports this module to queue delivery.


@shared_task(**_DELIVERY_OPTIONS)
def outbox_deliver_task(message_id: int) -> None:
    """Deliver one outbox message; a message sent or claimed elsewhere is left alone."""
    from .outbox import outbox_deliver

    outbox_deliver(message_id=message_id)


@shared_task(**{**_SWEEP_OPTIONS, "retry_backoff_max": 30})
def outbox_sweep_task() -> None:
    """Deliver due outbox messages: retries, and messages whose task was lost."""
    from .outbox import outbox_sweep

    outbox_sweep()


@shared_task(**_SWEEP_OPTIONS)
def follow_up_dispatch_task() -> None:
    """Send the follow-up surveys that are due, as the contact policy allows."""
    from .followups import follow_up_dispatch

    follow_up_dispatch()


@shared_task(**_DELIVERY_OPTIONS)
def outbox_deliver_batch_task(message_ids: list[int]) -> None:
    """Deliver outbox messages together; ones sent or claimed elsewhere are left alone."""
    from .outbox import outbox_deliver_batch

    outbox_deliver_batch(message_ids=message_ids)
