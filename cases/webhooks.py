"""Outgoing webhooks: events queued in the outbox and POSTed signed.

``webhook_event_emit`` writes one OutboxMessage per active endpoint that
subscribes to the event, in the caller's transaction, so an event is sent
only if the change behind it commits. The outbox delivers each message
through ``webhook_deliver``, registered for the ``webhook`` channel by
``ActionsConfig.ready``, and retries with backoff while it raises.

Each request is a POST of a JSON body ``{"id", "event", "created_at",
"data"}`` with these headers:

- ``X-OSCM-Event``: the event name, such as ``case.resolved``.
- ``X-OSCM-Delivery``: the outbox message id, the same on every retry of one
  event, so a receiver can drop duplicates.
- ``X-OSCM-Timestamp``: Unix seconds when this attempt was signed.
- ``X-OSCM-Signature``: ``sha256=`` and the hex HMAC-SHA256, keyed with the
  endpoint's secret, of ``<timestamp>.<body>`` (the timestamp header, a
  dot, then the raw body bytes).

A receiver recomputes the HMAC over the timestamp and the raw body, compares
it in constant time, and rejects timestamps more than a few minutes old
(``webhook_signature_verify`` does all three), so a captured request cannot
be replayed later. Redirects are not followed and count as failures.
"""

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from .models import Case, OutboxMessage, WebhookDelivery, WebhookEndpoint

logger = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_SECONDS = 5
# Receivers should reject signatures older than this; verification uses it.
WEBHOOK_TOLERANCE_SECONDS = 300
# Response text kept in the delivery log, enough to see an error page's title.
_LOGGED_BODY_CHARS = 500

Event = WebhookEndpoint.Event


def webhook_signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """Return the ``X-OSCM-Signature`` value of a body signed at ``timestamp``."""
    material = str(timestamp).encode() + b"." + body
    digest = hmac.new(secret.encode(), material, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def webhook_signature_verify(
    *, secret: str, body: bytes, timestamp: str, signature: str, now: float | None = None,
    tolerance: int = WEBHOOK_TOLERANCE_SECONDS,
) -> bool:
    """Check a received signature and reject timestamps outside ``tolerance``."""
    try:
        signed_at = int(timestamp)
    except (TypeError, ValueError):
        return False
    now = time.time() if now is None else now
    if abs(now - signed_at) > tolerance:
        return False
    expected = webhook_signature(secret=secret, timestamp=signed_at, body=body)
    return hmac.compare_digest(expected, signature)


def _subscribed_endpoints(event: str) -> list[WebhookEndpoint]:
    # ``events`` is a JSON list where empty means every event. It is filtered
    # in Python because JSON containment differs between SQLite and
    # PostgreSQL, and the endpoint table has few rows.
    endpoints = WebhookEndpoint.objects.filter(is_active=True).order_by("pk")
    return [endpoint for endpoint in endpoints if not endpoint.events or event in endpoint.events]


def webhook_events_emit(
    *, event: str, items: Iterable[tuple[int | str, str | int, dict[str, Any]]]
) -> int:
    """Queue one message per subscribed endpoint and item, set-based.

    ``items`` are ``(object_id, version, payload)``; the whole batch costs
    one endpoint query and one bulk insert, whatever its size. Returns the
    number of messages stored; duplicates of an earlier emit (same endpoint,
    event, object and version) are skipped by the unique dedup key.
    """
    if event not in Event.values:
        raise ValueError(f"webhook event {event!r} is invalid: use one of {', '.join(Event.values)}")
    endpoints = _subscribed_endpoints(event)
    if not endpoints:
        return 0
    now = timezone.now()
    messages = []
    for object_id, version, payload in items:
        body = {"event": event, "created_at": now.isoformat(), "data": payload}
        body = json.loads(json.dumps(body, cls=DjangoJSONEncoder))
        for endpoint in endpoints:
            messages.append(
                OutboxMessage(
                    channel=OutboxMessage.Channel.WEBHOOK,
                    dedup_key=f"webhook:{endpoint.pk}:{event}:{object_id}:{version}"[:200],
                    payload={"endpoint_id": endpoint.pk, "event": event, "body": body},
                    next_attempt_at=now,
                    created_at=now,
                )
            )
    created = OutboxMessage.objects.bulk_create(messages, ignore_conflicts=True)
    _queue_delivery([message.dedup_key for message in messages])
    return len(created)


def _queue_delivery(dedup_keys: list[str]) -> None:
    """Queue delivery of the stored messages after commit; the outbox sweep
    delivers them if the task is lost."""
    def deliver() -> None:
        from .tasks import outbox_deliver_task

        ids = OutboxMessage.objects.filter(
            dedup_key__in=dedup_keys, state=OutboxMessage.State.PENDING
        ).values_list("pk", flat=True)
        for message_id in ids:
            outbox_deliver_task.delay(message_id)

    transaction.on_commit(deliver)


def webhook_event_emit(
    *, event: str, payload: dict[str, Any], object_id: int | str | None = None,
    version: str | int | None = None,
) -> int:
    """Queue ``event`` for every active endpoint subscribed to it.

    Runs in the caller's transaction. ``object_id`` defaults to
    ``payload["id"]`` and ``version`` to ``payload["version"]``; together
    they make the dedup key ``webhook:<endpoint>:<event>:<object id>:<version>``,
    so emitting the same change twice stores it once.
    """
    object_id = payload["id"] if object_id is None else object_id
    version = payload.get("version", "") if version is None else version
    return webhook_events_emit(event=event, items=[(object_id, version, payload)])


def case_webhook_payload(case: Case) -> dict[str, Any]:
    """Return the webhook ``data`` of a case: ids and states, no customer text."""
    return {
        "id": case.pk,
        "state": case.state,
        "priority": case.priority,
        "team_id": case.team_id,
        "assignee_id": case.assignee_id,
        "topic_id": case.topic_id,
        "customer_id": case.customer_id,
        "trigger_feedback_id": case.trigger_feedback_id,
        "root_cause_id": case.root_cause_id,
        "opened_at": case.opened_at,
        "resolved_at": case.resolved_at,
        "is_breached": case.is_breached,
    }


def case_webhook_emit(*, event: str, case: Case, version: str | int | datetime) -> int:
    """Queue a case event. ``version`` distinguishes repeats of one event on
    one case, such as the timestamp of each resolution."""
    if isinstance(version, datetime):
        version = version.isoformat()
    return webhook_event_emit(
        event=event, payload=case_webhook_payload(case), object_id=case.pk, version=version
    )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Turn a redirect into an HTTPError instead of following it."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def webhook_deliver(message: OutboxMessage) -> None:
    """POST one outbox message to its endpoint and log the attempt.

    Records a WebhookDelivery row per attempt with the status code, error and
    duration, then raises on a non-2xx status, a redirect, a timeout or a
    connection error so the outbox retries with backoff. An endpoint deleted
    or deactivated since the event cancels the message.
    """
    from .outbox import OutboxCancelled

    endpoint = WebhookEndpoint.objects.filter(pk=message.payload.get("endpoint_id")).first()
    if endpoint is None or not endpoint.is_active:
        raise OutboxCancelled(f"webhook endpoint {message.payload.get('endpoint_id')} is gone or inactive")
    event = message.payload["event"]
    body = json.dumps({"id": message.pk, **message.payload["body"]}, separators=(",", ":")).encode()
    timestamp = int(time.time())
    request = urllib.request.Request(
        endpoint.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "OSCM-Webhook/1",
            "X-OSCM-Event": event,
            "X-OSCM-Delivery": str(message.pk),
            "X-OSCM-Timestamp": str(timestamp),
            "X-OSCM-Signature": webhook_signature(secret=endpoint.secret, timestamp=timestamp, body=body),
        },
    )
    started = time.monotonic()
    status, error = _post(request)
    duration_ms = int((time.monotonic() - started) * 1000)
    delivery_error = error or ("" if 200 <= status < 300 else f"HTTP {status}")
    WebhookDelivery.objects.create(
        endpoint=endpoint,
        outbox=message,
        event=event,
        attempt=message.attempts or 1,
        status_code=status,
        error=delivery_error[:2000],
        duration_ms=duration_ms,
    )
    if delivery_error:
        logger.warning(
            "Webhook %s to endpoint %s failed on attempt %d: %s",
            event,
            endpoint.pk,
            message.attempts,
            delivery_error.splitlines()[0],
            extra={"endpoint_id": endpoint.pk, "outbox_message_id": message.pk},
        )
        raise WebhookDeliveryError(delivery_error)


class WebhookDeliveryError(Exception):
    """The receiver did not accept the webhook; the outbox retries it."""


def _post(request: urllib.request.Request) -> tuple[int | None, str]:
    """Send the request; returns the status code (None without a response) and an error text."""
    try:
        with _OPENER.open(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:
            return response.status, ""
    except urllib.error.HTTPError as error:
        text = error.read(_LOGGED_BODY_CHARS).decode("utf-8", "replace")
        location = error.headers.get("Location")
        if 300 <= error.code < 400:
            return error.code, f"HTTP {error.code} redirect to {location} not followed"
        return error.code, f"HTTP {error.code}: {text}".strip()
    except urllib.error.URLError as error:
        return None, f"connection failed: {error.reason}"
    except TimeoutError:
        return None, f"timed out after {WEBHOOK_TIMEOUT_SECONDS} s"
    except OSError as error:
        return None, f"{type(error).__name__}: {error}"


def webhook_handler_register() -> None:
    """Register ``webhook_deliver`` as the outbox handler of the webhook channel."""
    from .outbox import register_outbox_handler

    register_outbox_handler(OutboxMessage.Channel.WEBHOOK, webhook_deliver)
