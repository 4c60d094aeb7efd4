"""Transactional outbox: side effects stored with the change behind them.

``outbox_enqueue`` writes a row in the caller's transaction and queues its
delivery after commit. ``outbox_deliver`` claims one row with a conditional
UPDATE, sends it through the handler registered for its channel and records
the outcome. ``outbox_enqueue_many`` and ``outbox_deliver_batch`` do the same
for many messages with a fixed number of queries. ``outbox_sweep`` delivers
due rows whose task was lost or whose retry time has come. Delivery is at least once: a worker that dies after
sending but before marking the row sent leaves it in ``sending``, and the row
is reclaimed and sent again after ``OUTBOX_SENDING_TIMEOUT``.
"""

import logging
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from feedback.models import Customer

from .models import OutboxMessage

logger = logging.getLogger(__name__)

# Attempts before a message is marked failed; with the backoff below the last
# one starts about four hours after the first.
OUTBOX_MAX_ATTEMPTS = 8
OUTBOX_BACKOFF_BASE = timedelta(minutes=1)
OUTBOX_BACKOFF_MAX = timedelta(hours=1)
# A row claimed longer ago than this belongs to a worker that died; it may be
# claimed again. It must exceed the longest send (the SMTP timeout). Set by
# OSCM_OUTBOX_CLAIM_TIMEOUT_SECONDS, 10 minutes by default.
OUTBOX_SENDING_TIMEOUT = timedelta(seconds=settings.OSCM_OUTBOX_CLAIM_TIMEOUT_SECONDS)
OUTBOX_SWEEP_BATCH_SIZE = 100
# Batches one sweep delivers at most, so a run stays within the task time limit.
OUTBOX_SWEEP_MAX_BATCHES = 10

# Payload keys removed once a message reaches a final state (sent, failed or
# cancelled), for content that must not stay in the database, such as a
# survey link carrying its token.
REDACT_KEY = "redact_after_delivery"
# Payload key whose dict of ids (follow_up_id, case_id, ...) goes into every
# log record about the message.
LOG_CONTEXT_KEY = "log_context"


class OutboxCancelled(Exception):
    """Raised by a handler when the message must not be sent at all.

    The message is marked cancelled with the exception's text as the reason
    and is never retried.
    """


OutboxHandler = Callable[[OutboxMessage], None]


def _check_channel(channel: str) -> None:
    if channel not in OutboxMessage.Channel.values:
        raise ValueError(
            f"Outbox channel {channel!r} is not valid; use one of "
            f"{', '.join(OutboxMessage.Channel.values)}."
        )


def outbox_enqueue(*, channel: str, dedup_key: str, payload: dict) -> int:
    """Store a message in the caller's transaction and queue its delivery.

    The insert ignores a conflict on ``dedup_key`` (ON CONFLICT DO NOTHING on
    PostgreSQL, INSERT OR IGNORE on SQLite), so the same effect queued twice
    is stored once and the second call returns the id of the first row.
    ``outbox_deliver_task`` is queued after commit. If the task is lost,
    ``outbox_sweep`` delivers the row.
    """
    _check_channel(channel)
    now = timezone.now()
    OutboxMessage.objects.bulk_create(
        [_new_message(channel, dedup_key, payload, now=now)], ignore_conflicts=True
    )
    message_id = OutboxMessage.objects.values_list("pk", flat=True).get(
        dedup_key=dedup_key
    )

    from .tasks import outbox_deliver_task

    transaction.on_commit(partial(outbox_deliver_task.delay, message_id))
    return message_id


def outbox_enqueue_many(*, channel: str, messages: list[tuple[str, dict]]) -> list[int]:
    """Store messages, given as (dedup_key, payload), and queue one delivery task.

    Works like ``outbox_enqueue`` for many messages: one INSERT that ignores
    conflicts on ``dedup_key``, one SELECT for the ids, and one
    ``outbox_deliver_batch_task`` queued after commit for all of them. Keys
    stored before return the ids of their earlier rows. Returns the ids in
    no particular order.
    """
    _check_channel(channel)
    if not messages:
        return []
    now = timezone.now()
    OutboxMessage.objects.bulk_create(
        [
            _new_message(channel, dedup_key, payload, now=now)
            for dedup_key, payload in messages
        ],
        ignore_conflicts=True,
    )
    message_ids = list(
        OutboxMessage.objects.filter(
            dedup_key__in=[dedup_key for dedup_key, _ in messages]
        ).values_list("pk", flat=True)
    )

    from .tasks import outbox_deliver_batch_task

    transaction.on_commit(partial(outbox_deliver_batch_task.delay, message_ids))
    return message_ids


def _new_message(
    channel: str, dedup_key: str, payload: dict, *, now: datetime
) -> OutboxMessage:
    return OutboxMessage(
        channel=channel,
        dedup_key=dedup_key,
        payload=payload,
        next_attempt_at=now,
        created_at=now,
    )


def _deliver_email(message: OutboxMessage) -> None:
    """Send an email payload as plain text with an HTML alternative.

    Payload keys: ``subject``, ``text``, ``html`` and either ``customer_id``
    (the address is read from the customer now, and an opted-out or erased
    customer cancels the message) or ``to``, a list of addresses. With
    ``unsubscribe_url`` the one-click ``List-Unsubscribe`` headers of RFC 8058
    are added.
    """
    payload = message.payload
    _email_message(payload, _email_recipients(payload)).send(fail_silently=False)


def _email_message(payload: dict, recipients: list[str]) -> EmailMultiAlternatives:
    headers = {}
    if payload.get("unsubscribe_url"):
        headers["List-Unsubscribe"] = f"<{payload['unsubscribe_url']}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    email = EmailMultiAlternatives(
        subject=payload["subject"],
        body=payload["text"],
        to=recipients,
        headers=headers,
    )
    if payload.get("html"):
        email.attach_alternative(payload["html"], "text/html")
    return email


_CUSTOMER_FIELDS = ("email", "is_opted_out", "erased_at")


def _email_recipients(
    payload: dict, customers: dict[int, Customer] | None = None
) -> list[str]:
    """Return the addresses of an email payload, or raise OutboxCancelled.

    ``customers`` maps ids to the customers preloaded for a batch. Without
    it, the customer is read now.
    """
    customer_id = payload.get("customer_id")
    if customer_id is None:
        recipients = list(payload.get("to") or [])
        if not recipients:
            raise OutboxCancelled("the email payload has neither customer_id nor to")
        return recipients
    if customers is None:
        customer = (
            Customer.objects.filter(pk=customer_id).only(*_CUSTOMER_FIELDS).first()
        )
    else:
        customer = customers.get(customer_id)
    if customer is None:
        raise OutboxCancelled(f"customer {customer_id} no longer exists")
    if customer.is_opted_out:
        raise OutboxCancelled(f"customer {customer_id} opted out of email")
    if customer.erased_at is not None or not customer.email:
        raise OutboxCancelled(f"customer {customer_id} has no email address")
    return [customer.email]


OUTBOX_HANDLERS: dict[str, OutboxHandler] = {
    OutboxMessage.Channel.EMAIL: _deliver_email,
}


def register_outbox_handler(channel: str, handler: OutboxHandler) -> None:
    """Make ``handler`` deliver the messages of ``channel``.

    A handler sends one message and returns. It raises ``OutboxCancelled``
    when the message must never be sent. Any other exception it raises makes
    the delivery retry with backoff.
    """
    _check_channel(channel)
    OUTBOX_HANDLERS[channel] = handler


def outbox_backoff(*, attempts: int) -> timedelta:
    """Return the wait before the next attempt: 1, 2, 4, ... minutes, capped."""
    exponent = min(max(attempts - 1, 0), 20)
    return min(OUTBOX_BACKOFF_BASE * 2**exponent, OUTBOX_BACKOFF_MAX)


def outbox_deliver(*, message_id: int, now: datetime | None = None) -> str | None:
    """Claim one message, send it and record the outcome.

    The claim is a conditional UPDATE to sending, from pending and due or
    from sending and claimed more than ``OUTBOX_SENDING_TIMEOUT`` ago. It
    commits before the send, so a second task or the sweep finds the row
    taken. Returns the new state, or None when the row was not claimable
    (already sent, taken by another worker, not due yet or missing).
    Must not run inside a transaction, because the claim has to be visible to
    other workers while the message is sent.
    """
    now = now or timezone.now()
    claimable = Q(state=OutboxMessage.State.PENDING, next_attempt_at__lte=now) | Q(
        state=OutboxMessage.State.SENDING,
        claimed_at__lte=now - OUTBOX_SENDING_TIMEOUT,
    )
    claimed = OutboxMessage.objects.filter(claimable, pk=message_id).update(
        state=OutboxMessage.State.SENDING, claimed_at=now, attempts=F("attempts") + 1
    )
    if claimed != 1:
        logger.debug("Outbox message %s not claimable", message_id)
        return None
    message = OutboxMessage.objects.get(pk=message_id)

    handler = OUTBOX_HANDLERS.get(message.channel)
    if handler is None:
        return _fail(
            message, f"no outbox handler is registered for channel {message.channel!r}"
        )
    if message.attempts > OUTBOX_MAX_ATTEMPTS:
        return _fail(message, "the worker sending it was lost on the last attempt")
    try:
        handler(message)
    except OutboxCancelled as reason:
        return _finish(message, OutboxMessage.State.CANCELLED, error=str(reason))
    except Exception as error:  # noqa: BLE001 - any send failure is retried
        return _retry_or_fail(message, error, now=now)
    return _finish(message, OutboxMessage.State.SENT, sent_at=timezone.now())


def outbox_deliver_batch(
    *, message_ids: list[int], now: datetime | None = None
) -> Counter[str]:
    """Claim many messages at once, send them and record the outcomes.

    The claim is one conditional UPDATE of the rows that are pending and
    due, to sending, committed before the sends like ``outbox_deliver``
    does. Emails for the built-in email handler are checked against the
    customers in one query and sent through one backend connection. Other
    channels go through their handler one message at a time. Sent and
    cancelled rows are marked in one UPDATE at the end, and a message whose
    send fails gets its own retry with backoff. Returns the count of each
    new state. Must not run inside a transaction.

    NOTE: the at-least-once window spans the batch. A worker lost between
    the first send and the final UPDATE leaves every claimed row in
    sending, and the reclaim after ``OUTBOX_SENDING_TIMEOUT`` sends again
    the ones that had gone out.
    """
    now = now or timezone.now()
    outcomes: Counter[str] = Counter()
    finished: list[OutboxMessage] = []
    emails: list[OutboxMessage] = []
    for message in _claim_batch(message_ids, now=now):
        handler = OUTBOX_HANDLERS.get(message.channel)
        if handler is None:
            error = f"no outbox handler is registered for channel {message.channel!r}"
            outcomes[_fail(message, error)] += 1
        elif handler is _deliver_email:
            emails.append(message)
        else:
            _deliver_with_handler(message, handler, finished, outcomes, now=now)
    if emails:
        _send_emails(emails, finished, outcomes, now=now)

    if finished:
        OutboxMessage.objects.filter(state=OutboxMessage.State.SENDING).bulk_update(
            finished, ["state", "sent_at", "last_error", "payload"]
        )
    for message in finished:
        outcomes[message.state] += 1
        _log_finished(message)
    return outcomes


def _claim_batch(message_ids: list[int], *, now: datetime) -> list[OutboxMessage]:
    """Move the pending, due rows among ``message_ids`` to sending; return them.

    One UPDATE ... RETURNING, which PostgreSQL and SQLite 3.35 or later
    support, so only the rows this call changed come back.
    """
    if not message_ids:
        return []
    table = connection.ops.quote_name(OutboxMessage._meta.db_table)
    ids = ", ".join(["%s"] * len(message_ids))
    sql = (
        f"UPDATE {table} SET state = %s, claimed_at = %s, attempts = attempts + 1 "
        f"WHERE id IN ({ids}) AND state = %s AND next_attempt_at <= %s "
        "RETURNING *"
    )
    moment = connection.ops.adapt_datetimefield_value(now)
    params = [
        OutboxMessage.State.SENDING,
        moment,
        *message_ids,
        OutboxMessage.State.PENDING,
        moment,
    ]
    return list(OutboxMessage.objects.raw(sql, params))


def _deliver_with_handler(
    message: OutboxMessage,
    handler: OutboxHandler,
    finished: list[OutboxMessage],
    outcomes: Counter[str],
    *,
    now: datetime,
) -> None:
    try:
        handler(message)
    except OutboxCancelled as reason:
        finished.append(_finished(message, OutboxMessage.State.CANCELLED, str(reason)))
    except Exception as error:  # noqa: BLE001 - any send failure is retried
        outcomes[_retry_or_fail(message, error, now=now)] += 1
    else:
        finished.append(_finished(message, OutboxMessage.State.SENT))


def _send_emails(
    messages: list[OutboxMessage],
    finished: list[OutboxMessage],
    outcomes: Counter[str],
    *,
    now: datetime,
) -> None:
    """Send email messages through one connection of the email backend."""
    customer_ids = {m.payload.get("customer_id") for m in messages} - {None}
    customers = (
        Customer.objects.only(*_CUSTOMER_FIELDS).in_bulk(customer_ids)
        if customer_ids
        else {}
    )
    email_connection = get_connection(fail_silently=False)
    try:
        email_connection.open()
    except Exception as error:  # noqa: BLE001 - every message retries
        for message in messages:
            outcomes[_retry_or_fail(message, error, now=now)] += 1
        return
    try:
        for message in messages:
            try:
                recipients = _email_recipients(message.payload, customers)
            except OutboxCancelled as reason:
                state = OutboxMessage.State.CANCELLED
                finished.append(_finished(message, state, str(reason)))
                continue
            email = _email_message(message.payload, recipients)
            email.connection = email_connection
            try:
                email.send(fail_silently=False)
            except Exception as error:  # noqa: BLE001 - any send failure is retried
                outcomes[_retry_or_fail(message, error, now=now)] += 1
            else:
                finished.append(_finished(message, OutboxMessage.State.SENT))
    finally:
        email_connection.close()


def _finished(message: OutboxMessage, state: str, error: str = "") -> OutboxMessage:
    """Set the final state on ``message`` in memory and drop redacted payload keys."""
    message.state = state
    message.last_error = error
    message.sent_at = timezone.now() if state == OutboxMessage.State.SENT else None
    message.payload = _redacted(message.payload)
    return message


def _redacted(payload: dict) -> dict:
    payload = dict(payload)
    for key in payload.pop(REDACT_KEY, []):
        payload.pop(key, None)
    return payload


def _log_extra(message: OutboxMessage) -> dict:
    extra = {
        "outbox_message_id": message.pk,
        "outbox_channel": message.channel,
        "outbox_dedup_key": message.dedup_key,
        "outbox_attempts": message.attempts,
    }
    context = message.payload.get(LOG_CONTEXT_KEY)
    if isinstance(context, dict):
        extra.update(context)
    return extra


def _finish(
    message: OutboxMessage,
    state: str,
    *,
    error: str = "",
    sent_at: datetime | None = None,
) -> str:
    payload = _redacted(message.payload)
    OutboxMessage.objects.filter(
        pk=message.pk, state=OutboxMessage.State.SENDING
    ).update(state=state, sent_at=sent_at, last_error=error, payload=payload)
    message.state = state
    message.last_error = error
    _log_finished(message)
    return state


def _log_finished(message: OutboxMessage) -> None:
    if message.state == OutboxMessage.State.CANCELLED:
        logger.info(
            "Outbox message %s cancelled: %s",
            message.pk,
            message.last_error,
            extra=_log_extra(message),
        )
    elif message.state == OutboxMessage.State.SENT:
        logger.info("Outbox message %s sent", message.pk, extra=_log_extra(message))


def _fail(message: OutboxMessage, error: str) -> str:
    logger.error(
        "Outbox message %s failed after %d attempts: %s",
        message.pk,
        message.attempts,
        error,
        extra=_log_extra(message),
    )
    return _finish(message, OutboxMessage.State.FAILED, error=error)


def _retry_or_fail(message: OutboxMessage, error: Exception, *, now: datetime) -> str:
    # The error text may name the recipient, so it goes to the row, and the
    # log gets only its type.
    description = f"{type(error).__name__}: {error}"
    if message.attempts >= OUTBOX_MAX_ATTEMPTS:
        return _fail(message, description)
    next_attempt_at = now + outbox_backoff(attempts=message.attempts)
    OutboxMessage.objects.filter(
        pk=message.pk, state=OutboxMessage.State.SENDING
    ).update(
        state=OutboxMessage.State.PENDING,
        next_attempt_at=next_attempt_at,
        last_error=description,
    )
    logger.warning(
        "Outbox message %s delivery failed with %s (attempt %d of %d); retrying at %s",
        message.pk,
        type(error).__name__,
        message.attempts,
        OUTBOX_MAX_ATTEMPTS,
        next_attempt_at.isoformat(),
        extra=_log_extra(message),
    )
    return OutboxMessage.State.PENDING


def outbox_sweep(
    *, now: datetime | None = None, batch_size: int = OUTBOX_SWEEP_BATCH_SIZE
) -> int:
    """Deliver due pending messages and reclaim ones stuck in sending.

    Covers delivery tasks lost before they ran and the retries scheduled by
    ``next_attempt_at``. Works through at most ``OUTBOX_SWEEP_MAX_BATCHES``
    batches and returns how many messages it claimed; the next run takes the
    rest.
    """
    now = now or timezone.now()
    due = Q(state=OutboxMessage.State.PENDING, next_attempt_at__lte=now) | Q(
        state=OutboxMessage.State.SENDING,
        claimed_at__lte=now - OUTBOX_SENDING_TIMEOUT,
    )
    claimed = 0
    after_pk = 0
    for _ in range(OUTBOX_SWEEP_MAX_BATCHES):
        ids = list(
            OutboxMessage.objects.filter(due, pk__gt=after_pk)
            .order_by("pk")
            .values_list("pk", flat=True)[:batch_size]
        )
        for message_id in ids:
            if outbox_deliver(message_id=message_id, now=now) is not None:
                claimed += 1
        if len(ids) < batch_size:
            break
        after_pk = ids[-1]
    if claimed:
        logger.info(
            "Outbox sweep delivered %d messages",
            claimed,
            extra={"outbox_claimed": claimed},
        )
    return claimed
