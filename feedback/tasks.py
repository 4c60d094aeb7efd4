import logging

from celery import shared_task
from django.conf import settings
from django.db import OperationalError

from .services import feedback_analyze, feedback_analyze_pending

logger = logging.getLogger(__name__)


@shared_task(
    autoretry_for=(OperationalError,), retry_backoff=5, retry_backoff_max=60, max_retries=3,
    soft_time_limit=50, time_limit=55,
)
def feedback_analyze_pending_task() -> None:
    """Analyse feedback stored without analysis, so the case sweep can evaluate it."""
    feedback_analyze_pending(older_than_seconds=settings.OSCM_SWEEP_GRACE_SECONDS)


@shared_task(
    autoretry_for=(OperationalError,),
    retry_backoff=2,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=5,
)
def feedback_analyze_task(feedback_ids: list[int]) -> None:
    """Analyse the given feedback; ids already analysed or missing are skipped.

    A task that exhausts its retries leaves the rows to
    ``feedback_analyze_pending_task``, which picks them up after the grace
    period.
    """
    feedback_analyze(feedback_ids=feedback_ids)
