"""Periodic clean-up of expired idempotency keys, run by the beat schedule."""

import logging

from celery import shared_task
from django.db import InterfaceError, OperationalError

from .services import idempotency_keys_delete_expired

logger = logging.getLogger(__name__)


@shared_task(
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=5,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=3,
)
def idempotency_keys_delete_expired_task() -> None:
    """Delete the idempotency keys past their expiry."""
    deleted = idempotency_keys_delete_expired()
    if deleted:
        logger.info("Deleted %d expired idempotency keys", deleted)
