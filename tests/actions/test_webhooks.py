"""Webhooks end to end against a receiver on 127.0.0.1 started by each test."""

import json
import threading
from collections import deque
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from cases.models import OutboxMessage, WebhookDelivery, WebhookEndpoint
from cases.outbox import outbox_deliver
from cases.webhooks import (
    case_webhook_emit,
    webhook_event_emit,
    webhook_signature,
    webhook_signature_verify,
)

from .conftest import make_case

pytestmark = pytest.mark.django_db

SECRET = "s3cret-for-tests"


class Receiver:
    """An HTTP server on a free loopback port that answers with queued status codes."""

    def __init__(self):
        self.requests: list[dict] = []
        self.statuses: deque[int] = deque()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"headers": self.headers, "body": body, "path": self.path})
                status = receiver.statuses.popleft() if receiver.statuses else 200
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/moved")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    running = Receiver()
    yield running
    running.close()


@pytest.fixture
def endpoint(receiver) -> WebhookEndpoint:
    return WebhookEndpoint.objects.create(name="receiver", url=receiver.url, secret=SECRET, events=[])


def emit_one(**payload) -> OutboxMessage:
    webhook_event_emit(event="action.verdict", payload={"id": 7, "verdict": "improved", **payload}, version="v1")
    return OutboxMessage.objects.get(channel="webhook")


def test_delivery_signed_and_verifiable(endpoint, receiver):
    message = emit_one()
    assert outbox_deliver(message_id=message.pk) == "sent"
    (request,) = receiver.requests
    headers = request["headers"]
    assert headers["X-OSCM-Event"] == "action.verdict"
    assert headers["X-OSCM-Delivery"] == str(message.pk)
    assert headers["X-OSCM-Signature"] == webhook_signature(
        secret=SECRET, timestamp=int(headers["X-OSCM-Timestamp"]), body=request["body"]
    )
    assert webhook_signature_verify(
        secret=SECRET, body=request["body"], timestamp=headers["X-OSCM-Timestamp"],
        signature=headers["X-OSCM-Signature"],
    )
    body = json.loads(request["body"])
    assert body["event"] == "action.verdict"
    assert body["data"]["verdict"] == "improved"


def test_signature_rejects_tampering_and_replay(endpoint, receiver):
    outbox_deliver(message_id=emit_one().pk)
    request = receiver.requests[0]
    headers = request["headers"]
    timestamp = headers["X-OSCM-Timestamp"]
    signature = headers["X-OSCM-Signature"]
    assert not webhook_signature_verify(
        secret=SECRET, body=request["body"] + b" ", timestamp=timestamp, signature=signature
    )
    assert not webhook_signature_verify(
        secret="other", body=request["body"], timestamp=timestamp, signature=signature
    )
    assert not webhook_signature_verify(
        secret=SECRET, body=request["body"], timestamp=timestamp, signature=signature,
        now=int(timestamp) + 3600,
    )


def test_delivery_log_row_per_attempt(endpoint, receiver):
    message = emit_one()
    outbox_deliver(message_id=message.pk)
    (delivery,) = WebhookDelivery.objects.all()
    assert delivery.endpoint == endpoint
    assert delivery.outbox_id == message.pk
    assert delivery.event == "action.verdict"
    assert delivery.status_code == 200
    assert delivery.error == ""
    assert delivery.attempt == 1
    assert delivery.duration_ms is not None


def test_retries_on_500_then_sends(endpoint, receiver):
    receiver.statuses.append(500)
    message = emit_one()
    assert outbox_deliver(message_id=message.pk) == "pending"
    message.refresh_from_db()
    assert "HTTP 500" in message.last_error
    later = message.next_attempt_at + timedelta(seconds=1)
    assert outbox_deliver(message_id=message.pk, now=later) == "sent"
    attempts = list(WebhookDelivery.objects.order_by("attempt").values_list("attempt", "status_code"))
    assert attempts == [(1, 500), (2, 200)]
    assert len(receiver.requests) == 2
    assert receiver.requests[0]["headers"]["X-OSCM-Delivery"] == receiver.requests[1]["headers"]["X-OSCM-Delivery"]


def test_redirect_not_followed(endpoint, receiver):
    receiver.statuses.append(302)
    message = emit_one()
    assert outbox_deliver(message_id=message.pk) == "pending"
    assert len(receiver.requests) == 1
    delivery = WebhookDelivery.objects.get()
    assert delivery.status_code == 302
    assert "not followed" in delivery.error


def test_connection_refused_logged(db):
    # A port that was free a moment ago: nothing listens there now.
    probe = Receiver()
    url = probe.url
    probe.close()
    WebhookEndpoint.objects.create(name="gone", url=url, secret=SECRET)
    message = emit_one()
    assert outbox_deliver(message_id=message.pk) == "pending"
    delivery = WebhookDelivery.objects.get()
    assert delivery.status_code is None
    assert "connection failed" in delivery.error


def test_emit_respects_subscriptions(receiver):
    WebhookEndpoint.objects.create(name="resolved only", url=receiver.url, secret=SECRET, events=["case.resolved"])
    WebhookEndpoint.objects.create(name="off", url=receiver.url, secret=SECRET, is_active=False)
    all_events = WebhookEndpoint.objects.create(name="all", url=receiver.url, secret=SECRET)
    emit_one()
    (message,) = OutboxMessage.objects.all()
    assert message.payload["endpoint_id"] == all_events.pk
    assert message.dedup_key == f"webhook:{all_events.pk}:action.verdict:7:v1"


def test_emit_twice_stored_once(endpoint):
    emit_one()
    emit_one()
    assert OutboxMessage.objects.count() == 1


def test_case_event_payload(endpoint, people):
    case = make_case(team=people.team_a)
    case_webhook_emit(event="case.resolved", case=case, version=timezone.now())
    message = OutboxMessage.objects.get()
    assert message.payload["body"]["data"]["id"] == case.pk
    assert message.payload["body"]["data"]["team_id"] == people.team_a.pk


def test_emit_rejects_unknown_event(endpoint):
    with pytest.raises(ValueError, match="invalid"):
        webhook_event_emit(event="case.exploded", payload={"id": 1})


def test_inactive_endpoint_cancels(endpoint, receiver):
    message = emit_one()
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(is_active=False)
    assert outbox_deliver(message_id=message.pk) == "cancelled"
    assert receiver.requests == []


def test_case_resolved_emitted_by_workflow(endpoint, people, root_cause):
    from cases.workflow import case_transition

    case = make_case(team=people.team_a)
    case_transition(
        case=case, actor=people.lead_a, to_state="resolved", root_cause=root_cause, resolution_note="Fixed."
    )
    message = OutboxMessage.objects.get(channel="webhook")
    assert message.payload["event"] == "case.resolved"
    assert message.payload["body"]["data"]["state"] == "resolved"
