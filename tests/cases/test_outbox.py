import logging
import smtplib
from datetime import timedelta

import pytest
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.backends.locmem import EmailBackend as LocmemEmailBackend
from django.db import connection, transaction
from django.utils import timezone

from cases import outbox
from cases.models import OutboxMessage
from cases.outbox import (
    OUTBOX_MAX_ATTEMPTS,
    OUTBOX_SENDING_TIMEOUT,
    OutboxCancelled,
    outbox_backoff,
    outbox_deliver,
    outbox_deliver_batch,
    outbox_enqueue,
    outbox_enqueue_many,
    outbox_sweep,
    register_outbox_handler,
)
from tests.cases.factories import CustomerFactory
from tests.cases.test_follow_ups import _run_in_threads

pytestmark = pytest.mark.django_db

FAILING_BACKEND = "tests.cases.test_outbox.FailingEmailBackend"
REJECTING_BACKEND = "tests.cases.test_outbox.RejectingEmailBackend"


class FailingEmailBackend(BaseEmailBackend):
    """An email backend whose SMTP server always hangs up."""

    def send_messages(self, email_messages):
        raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")


class RejectingEmailBackend(LocmemEmailBackend):
    """A locmem backend whose server rejects addresses starting with "reject"."""

    def send_messages(self, messages):
        for message in messages:
            if any(address.startswith("reject") for address in message.to):
                raise smtplib.SMTPRecipientsRefused({message.to[0]: (550, b"no")})
        return super().send_messages(messages)


def email_payload(customer, **extra):
    return {
        "customer_id": customer.pk,
        "subject": "How did we do?",
        "text": "Plain body",
        "html": "<p>HTML body</p>",
        "unsubscribe_url": "http://127.0.0.1:8000/s/unsubscribe/signed/",
        "log_context": {"follow_up_id": 41, "case_id": 7},
        **extra,
    }


def enqueue(customer, key="follow-up:41", **extra):
    return outbox_enqueue(
        channel="email", dedup_key=key, payload=email_payload(customer, **extra)
    )


def test_enqueue_same_key_stored_once():
    customer = CustomerFactory()

    first = enqueue(customer)
    second = enqueue(customer)

    assert second == first
    assert OutboxMessage.objects.count() == 1


def test_enqueue_rejects_unknown_channel():
    with pytest.raises(ValueError, match="not valid"):
        outbox_enqueue(channel="pigeon", dedup_key="x", payload={})


def test_enqueue_delivers_after_commit(django_capture_on_commit_callbacks, mailoutbox):
    customer = CustomerFactory()

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        message_id = enqueue(customer)
        assert mailoutbox == []

    message = OutboxMessage.objects.get(pk=message_id)
    assert len(callbacks) == 1
    assert message.state == OutboxMessage.State.SENT
    assert message.sent_at is not None
    assert message.attempts == 1
    assert len(mailoutbox) == 1
    assert mailoutbox[0].to == [customer.email]


def test_enqueue_rolled_back_stores_nothing(django_capture_on_commit_callbacks):
    customer = CustomerFactory()

    with (
        django_capture_on_commit_callbacks() as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        enqueue(customer)
        raise RuntimeError("the change behind the message failed")

    assert callbacks == []
    assert not OutboxMessage.objects.exists()


def test_deliver_sends_plain_and_html_with_unsubscribe_headers(mailoutbox):
    message_id = enqueue(CustomerFactory())

    outbox_deliver(message_id=message_id)

    email = mailoutbox[0]
    headers = email.message()
    assert email.body == "Plain body"
    assert email.alternatives[0][1] == "text/html"
    assert (
        headers["List-Unsubscribe"] == "<http://127.0.0.1:8000/s/unsubscribe/signed/>"
    )
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_deliver_twice_sends_once(mailoutbox):
    message_id = enqueue(CustomerFactory())

    assert outbox_deliver(message_id=message_id) == OutboxMessage.State.SENT
    assert outbox_deliver(message_id=message_id) is None
    assert len(mailoutbox) == 1


def test_deliver_cancels_for_customer_opted_out_after_queueing(mailoutbox):
    customer = CustomerFactory()
    message_id = enqueue(customer)
    customer.is_opted_out = True
    customer.save()

    state = outbox_deliver(message_id=message_id)

    message = OutboxMessage.objects.get(pk=message_id)
    assert state == OutboxMessage.State.CANCELLED
    assert message.state == OutboxMessage.State.CANCELLED
    assert "opted out" in message.last_error
    assert mailoutbox == []


def test_deliver_cancels_for_erased_customer(mailoutbox):
    customer = CustomerFactory()
    message_id = enqueue(customer)
    customer.email = ""
    customer.erased_at = timezone.now()
    customer.save()

    assert outbox_deliver(message_id=message_id) == OutboxMessage.State.CANCELLED
    assert mailoutbox == []


def test_deliver_to_plain_address(mailoutbox):
    message_id = outbox_enqueue(
        channel="email",
        dedup_key="digest:1",
        payload={"to": ["lead@example.test"], "subject": "Digest", "text": "Body"},
    )

    outbox_deliver(message_id=message_id)

    assert mailoutbox[0].to == ["lead@example.test"]
    assert "List-Unsubscribe" not in mailoutbox[0].message()


def test_deliver_retries_with_backoff(settings, caplog):
    settings.EMAIL_BACKEND = FAILING_BACKEND
    message_id = enqueue(CustomerFactory())
    now = timezone.now()

    with caplog.at_level(logging.WARNING, logger="cases.outbox"):
        state = outbox_deliver(message_id=message_id, now=now)

    message = OutboxMessage.objects.get(pk=message_id)
    assert state == OutboxMessage.State.PENDING
    assert message.attempts == 1
    assert message.next_attempt_at == now + timedelta(minutes=1)
    assert "SMTPServerDisconnected" in message.last_error
    record = caplog.records[-1]
    assert record.outbox_message_id == message_id
    assert record.follow_up_id == 41
    assert "SMTPServerDisconnected" in record.getMessage()


def test_deliver_retry_not_before_next_attempt(settings):
    settings.EMAIL_BACKEND = FAILING_BACKEND
    message_id = enqueue(CustomerFactory())
    now = timezone.now()
    outbox_deliver(message_id=message_id, now=now)

    assert (
        outbox_deliver(message_id=message_id, now=now + timedelta(seconds=59)) is None
    )
    assert OutboxMessage.objects.get(pk=message_id).attempts == 1


def test_deliver_fails_after_max_attempts(settings, caplog):
    settings.EMAIL_BACKEND = FAILING_BACKEND
    message_id = enqueue(CustomerFactory())
    now = timezone.now()
    waits = []

    for _ in range(OUTBOX_MAX_ATTEMPTS):
        outbox_deliver(message_id=message_id, now=now)
        message = OutboxMessage.objects.get(pk=message_id)
        waits.append(message.next_attempt_at - now)
        now = message.next_attempt_at

    message = OutboxMessage.objects.get(pk=message_id)
    assert message.state == OutboxMessage.State.FAILED
    assert message.attempts == OUTBOX_MAX_ATTEMPTS
    assert [wait.total_seconds() // 60 for wait in waits[:6]] == [1, 2, 4, 8, 16, 32]
    assert caplog.records[-1].levelname == "ERROR"


def test_backoff_doubles_and_caps():
    assert outbox_backoff(attempts=1) == timedelta(minutes=1)
    assert outbox_backoff(attempts=2) == timedelta(minutes=2)
    assert outbox_backoff(attempts=4) == timedelta(minutes=8)
    assert outbox_backoff(attempts=7) == timedelta(hours=1)
    assert outbox_backoff(attempts=100) == timedelta(hours=1)


def test_deliver_reclaims_stuck_sending_after_timeout(mailoutbox):
    message_id = enqueue(CustomerFactory())
    claimed_at = timezone.now() - OUTBOX_SENDING_TIMEOUT
    OutboxMessage.objects.filter(pk=message_id).update(
        state=OutboxMessage.State.SENDING, claimed_at=claimed_at + timedelta(seconds=5)
    )

    assert outbox_deliver(message_id=message_id) is None

    OutboxMessage.objects.filter(pk=message_id).update(claimed_at=claimed_at)
    assert outbox_deliver(message_id=message_id) == OutboxMessage.State.SENT
    assert len(mailoutbox) == 1


def test_sweep_delivers_due_pending(mailoutbox):
    customer = CustomerFactory()
    due = enqueue(customer, key="due")
    later = enqueue(customer, key="later")
    OutboxMessage.objects.filter(pk=later).update(
        next_attempt_at=timezone.now() + timedelta(minutes=5)
    )

    claimed = outbox_sweep()

    assert claimed == 1
    assert OutboxMessage.objects.get(pk=due).state == OutboxMessage.State.SENT
    assert OutboxMessage.objects.get(pk=later).state == OutboxMessage.State.PENDING
    assert len(mailoutbox) == 1


def test_sweep_works_in_batches(mailoutbox):
    customer = CustomerFactory()
    for number in range(5):
        enqueue(customer, key=f"batch:{number}")

    assert outbox_sweep(batch_size=2) == 5
    assert len(mailoutbox) == 5


def test_registered_handler_delivers_its_channel(monkeypatch):
    monkeypatch.setattr(outbox, "OUTBOX_HANDLERS", dict(outbox.OUTBOX_HANDLERS))
    delivered = []
    register_outbox_handler("webhook", lambda message: delivered.append(message.pk))
    message_id = outbox_enqueue(
        channel="webhook", dedup_key="hook:1", payload={"event": "x"}
    )

    state = outbox_deliver(message_id=message_id)

    assert state == OutboxMessage.State.SENT
    assert delivered == [message_id]


def test_handler_cancel_is_final(monkeypatch):
    monkeypatch.setattr(outbox, "OUTBOX_HANDLERS", dict(outbox.OUTBOX_HANDLERS))

    def cancel(message):
        raise OutboxCancelled("endpoint deleted")

    register_outbox_handler("webhook", cancel)
    message_id = outbox_enqueue(channel="webhook", dedup_key="hook:2", payload={})

    assert outbox_deliver(message_id=message_id) == OutboxMessage.State.CANCELLED
    assert OutboxMessage.objects.get(pk=message_id).last_error == "endpoint deleted"


def test_missing_handler_fails_message(monkeypatch):
    monkeypatch.setattr(outbox, "OUTBOX_HANDLERS", {})
    message_id = outbox_enqueue(channel="webhook", dedup_key="hook:3", payload={})

    assert outbox_deliver(message_id=message_id) == OutboxMessage.State.FAILED
    assert "no outbox handler" in OutboxMessage.objects.get(pk=message_id).last_error


def test_deliver_task_runs_delivery(mailoutbox):
    from cases.tasks import outbox_deliver_task, outbox_sweep_task

    message_id = enqueue(CustomerFactory())

    outbox_deliver_task.delay(message_id)
    outbox_sweep_task.delay()

    assert len(mailoutbox) == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_delivery_sends_once(mailoutbox):
    if connection.vendor != "postgresql":
        pytest.skip("row locking races need PostgreSQL; SQLite writes one at a time")
    message_id = OutboxMessage.objects.create(
        channel="email", dedup_key="race", payload=email_payload(CustomerFactory())
    ).pk

    _run_in_threads(lambda: outbox_deliver(message_id=message_id), count=4)

    assert OutboxMessage.objects.get(pk=message_id).attempts == 1
    assert len(mailoutbox) == 1


# Batch delivery


def enqueue_batch(customers):
    return outbox_enqueue_many(
        channel="email",
        messages=[
            (f"follow-up:{customer.pk}", email_payload(customer))
            for customer in customers
        ],
    )


def test_enqueue_many_queues_one_task(django_capture_on_commit_callbacks):
    customers = CustomerFactory.create_batch(3)

    with django_capture_on_commit_callbacks() as callbacks:
        first = enqueue_batch(customers)
        second = enqueue_batch(customers)

    assert sorted(second) == sorted(first)
    assert OutboxMessage.objects.count() == 3
    assert len(callbacks) == 2


def test_deliver_batch_sends_each_once(mailoutbox):
    from cases.tasks import outbox_deliver_batch_task

    message_ids = enqueue_batch(CustomerFactory.create_batch(3))

    outbox_deliver_batch_task.delay(message_ids)
    outbox_deliver_batch_task.delay(message_ids)

    states = set(OutboxMessage.objects.values_list("state", flat=True))
    assert len(mailoutbox) == 3
    assert states == {OutboxMessage.State.SENT}
    assert set(OutboxMessage.objects.values_list("attempts", flat=True)) == {1}


def test_deliver_batch_redacts_and_stamps(mailoutbox):
    message_ids = enqueue_batch(CustomerFactory.create_batch(2))

    outcomes = outbox_deliver_batch(message_ids=message_ids)

    assert outcomes == {OutboxMessage.State.SENT: 2}
    for message in OutboxMessage.objects.all():
        assert message.sent_at is not None
        assert message.payload["customer_id"] is not None
    headers = mailoutbox[0].message()
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_deliver_batch_cancels_opted_out_customer(mailoutbox):
    subscribed, opted_out = CustomerFactory.create_batch(2)
    message_ids = enqueue_batch([subscribed, opted_out])
    opted_out.is_opted_out = True
    opted_out.save()

    outcomes = outbox_deliver_batch(message_ids=message_ids)

    cancelled = OutboxMessage.objects.get(dedup_key=f"follow-up:{opted_out.pk}")
    assert outcomes[OutboxMessage.State.CANCELLED] == 1
    assert cancelled.state == OutboxMessage.State.CANCELLED
    assert "opted out" in cancelled.last_error
    assert [email.to for email in mailoutbox] == [[subscribed.email]]


def test_deliver_batch_retries_failing_message_alone(settings, mailoutbox):
    settings.EMAIL_BACKEND = REJECTING_BACKEND
    good = CustomerFactory.create_batch(2)
    rejected = CustomerFactory(email="reject@example.test")
    message_ids = enqueue_batch([good[0], rejected, good[1]])
    now = timezone.now()

    outcomes = outbox_deliver_batch(message_ids=message_ids, now=now)

    failed = OutboxMessage.objects.get(dedup_key=f"follow-up:{rejected.pk}")
    sent = OutboxMessage.objects.exclude(pk=failed.pk)
    assert outcomes[OutboxMessage.State.SENT] == 2
    assert outcomes[OutboxMessage.State.PENDING] == 1
    assert failed.state == OutboxMessage.State.PENDING
    assert failed.attempts == 1
    assert failed.next_attempt_at == now + timedelta(minutes=1)
    assert "SMTPRecipientsRefused" in failed.last_error
    assert set(sent.values_list("state", flat=True)) == {OutboxMessage.State.SENT}
    assert len(mailoutbox) == 2


def test_deliver_batch_failed_message_retried_by_sweep(settings, mailoutbox):
    settings.EMAIL_BACKEND = REJECTING_BACKEND
    rejected = CustomerFactory(email="reject@example.test")
    message_ids = enqueue_batch([CustomerFactory(), rejected])
    now = timezone.now()
    outbox_deliver_batch(message_ids=message_ids, now=now)
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

    claimed = outbox_sweep(now=now + timedelta(minutes=1))

    failed = OutboxMessage.objects.get(dedup_key=f"follow-up:{rejected.pk}")
    assert claimed == 1
    assert failed.state == OutboxMessage.State.SENT
    assert failed.attempts == 2
    assert len(mailoutbox) == 2


def test_deliver_batch_skips_not_due_and_sending(mailoutbox):
    waiting, sending, due = CustomerFactory.create_batch(3)
    message_ids = enqueue_batch([waiting, sending, due])
    now = timezone.now()
    OutboxMessage.objects.filter(dedup_key=f"follow-up:{waiting.pk}").update(
        next_attempt_at=now + timedelta(minutes=5)
    )
    OutboxMessage.objects.filter(dedup_key=f"follow-up:{sending.pk}").update(
        state=OutboxMessage.State.SENDING, claimed_at=now
    )

    outcomes = outbox_deliver_batch(message_ids=message_ids, now=now)

    assert outcomes == {OutboxMessage.State.SENT: 1}
    assert [email.to for email in mailoutbox] == [[due.email]]


def test_deliver_batch_uses_registered_handler(monkeypatch):
    delivered = []
    monkeypatch.setitem(outbox.OUTBOX_HANDLERS, "email", delivered.append)
    message_ids = enqueue_batch(CustomerFactory.create_batch(2))

    outcomes = outbox_deliver_batch(message_ids=message_ids)

    assert outcomes == {OutboxMessage.State.SENT: 2}
    assert sorted(message.pk for message in delivered) == sorted(message_ids)


@pytest.mark.django_db(transaction=True)
def test_concurrent_batch_delivery_sends_once(mailoutbox):
    if connection.vendor != "postgresql":
        pytest.skip("row locking races need PostgreSQL; SQLite writes one at a time")
    message_ids = [
        OutboxMessage.objects.create(
            channel="email",
            dedup_key=f"race-{number}",
            payload=email_payload(CustomerFactory()),
        ).pk
        for number in range(10)
    ]

    _run_in_threads(lambda: outbox_deliver_batch(message_ids=message_ids), count=4)

    attempts = set(OutboxMessage.objects.values_list("attempts", flat=True))
    assert attempts == {1}
    assert len(mailoutbox) == 10
