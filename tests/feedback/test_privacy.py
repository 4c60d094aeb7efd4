import json

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse

from cases.models import Case, CaseEvent, Team
from cases.services import feedback_evaluate
from cases.workflow import case_comment, case_contact
from feedback.models import CustomerErasure, Feedback, MetricRollup
from feedback.privacy import ERASED_TEXT, customer_erase, customer_export
from feedback.rollups import rollup_record
from tests.cases.factories import (
    CustomerFactory,
    FeedbackFactory,
    StaffUserFactory,
    TeamMemberFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_user():
    return StaffUserFactory(username="privacy_admin", is_superuser=True)


@pytest.fixture
def customer(admin_user):
    """Dana, with two unhappy NPS responses that opened one case, and notes on it."""
    TeamMemberFactory(team=Team.objects.get(name="Customer Service"))
    dana = CustomerFactory(external_id="crm-77", email="dana@example.test", name="Dana")
    rows = FeedbackFactory.create_batch(
        2,
        customer=dana,
        score=1,
        comment="Dana here, call me on 555-0100",
        raw={"respondent": "Dana", "phone": "555-0100"},
    )
    rollup_record(
        (row.occurred_at, row.kind, row.source, row.touchpoint, [], row.score)
        for row in rows
    )
    feedback_evaluate(feedback_ids=[row.pk for row in rows])
    case = Case.objects.get(customer=dana)
    case_comment(
        case=case,
        actor=admin_user,
        body="Dana is upset about order 12",
        visibility="internal",
    )
    case_contact(
        case=case,
        actor=admin_user,
        channel="phone",
        outcome="reached",
        body="Spoke to Dana",
    )
    return dana


def _rollups() -> list[tuple]:
    return list(
        MetricRollup.objects.order_by("pk").values_list("day", "kind", "score", "count")
    )


def test_customer_erase_blanks_profile(customer, admin_user):
    customer_erase(customer=customer, requested_by=admin_user)

    customer.refresh_from_db()
    assert customer.name == ""
    assert customer.email == ""
    assert customer.external_id.startswith("erased-")
    assert customer.erased_at is not None


def test_customer_erase_blanks_feedback_text(customer, admin_user):
    customer_erase(customer=customer, requested_by=admin_user)

    rows = list(Feedback.objects.filter(customer=customer))
    assert [row.comment for row in rows] == ["", ""]
    assert [row.raw for row in rows] == [{}, {}]


def test_customer_erase_keeps_scores_and_rollups(customer, admin_user):
    rollups_before = _rollups()
    case_before = Case.objects.get(customer=customer)

    customer_erase(customer=customer, requested_by=admin_user)

    case_after = Case.objects.get(customer=customer)
    assert sorted(
        Feedback.objects.filter(customer=customer).values_list("score", flat=True)
    ) == [1, 1]
    assert _rollups() == rollups_before
    assert rollups_before
    assert case_after.pk == case_before.pk
    assert case_after.state == case_before.state
    assert case_after.priority == case_before.priority


def test_customer_erase_replaces_event_bodies(customer, admin_user):
    case = Case.objects.get(customer=customer)
    erasable = set(case.events.exclude(body="").values_list("pk", flat=True))

    customer_erase(customer=customer, requested_by=admin_user)

    bodies = set(
        CaseEvent.objects.filter(pk__in=erasable).values_list("body", flat=True)
    )
    assert len(erasable) >= 2
    assert bodies == {ERASED_TEXT}


def test_customer_erase_records_erasure(customer, admin_user):
    erasure = customer_erase(
        customer=customer, requested_by=admin_user, reason="Email request"
    )

    case = Case.objects.get(customer=customer)
    event = case.events.get(kind=CaseEvent.Kind.CUSTOMER_ERASED)
    assert erasure.requested_by == admin_user
    assert erasure.reason == "Email request"
    assert erasure.feedback_count == 2
    assert event.actor == admin_user


def test_customer_erase_is_idempotent(customer, admin_user):
    first = customer_erase(customer=customer, requested_by=admin_user)
    external_id = customer.external_id

    second = customer_erase(customer=customer, requested_by=admin_user)

    customer.refresh_from_db()
    assert second == first
    assert CustomerErasure.objects.count() == 1
    assert CaseEvent.objects.filter(kind=CaseEvent.Kind.CUSTOMER_ERASED).count() == 1
    assert customer.external_id == external_id


def test_customer_erase_clears_resolution_note(customer, admin_user):
    case = Case.objects.get(customer=customer)
    Case.objects.filter(pk=case.pk).update(resolution_note="Refunded Dana")
    CaseEvent.objects.create(
        case=case,
        kind=CaseEvent.Kind.STATE_CHANGED,
        changes={"resolution_note": ["", "Refunded Dana"]},
    )

    customer_erase(customer=customer, requested_by=admin_user)

    case.refresh_from_db()
    changed = case.events.get(changes__has_key="resolution_note")
    assert case.resolution_note == ERASED_TEXT
    assert "Refunded Dana" not in json.dumps(changed.changes)


def test_customer_export_contains_everything(customer):
    data = customer_export(customer=customer)

    case = Case.objects.get(customer=customer)
    exported_case = data["cases"][0]
    bodies = [event["body"] for event in exported_case["timeline"]]
    assert data["profile"]["email"] == "dana@example.test"
    assert data["profile"]["external_id"] == "crm-77"
    assert [row["score"] for row in data["feedback"]] == [1, 1]
    assert data["feedback"][0]["comment"] == "Dana here, call me on 555-0100"
    assert data["feedback"][0]["raw"] == {"respondent": "Dana", "phone": "555-0100"}
    assert "topics" in data["feedback"][0]
    assert exported_case["id"] == case.pk
    assert exported_case["state"] == case.state
    assert sorted(exported_case["feedback_ids"]) == sorted(
        Feedback.objects.filter(customer=customer).values_list("pk", flat=True)
    )
    assert "Dana is upset about order 12" in bodies
    assert "Spoke to Dana" in bodies
    assert json.loads(json.dumps(data)) == data


def test_customer_export_after_erasure(customer, admin_user):
    customer_erase(customer=customer, requested_by=admin_user)

    text = json.dumps(customer_export(customer=customer))

    assert "Dana" not in text
    assert "555-0100" not in text
    assert "dana@example.test" not in text


def test_erase_action_confirms_first(client, customer, admin_user):
    client.force_login(admin_user)

    response = client.post(
        reverse("admin:feedback_customer_changelist"),
        {"action": "erase_personal_data", ACTION_CHECKBOX_NAME: [customer.pk]},
    )

    customer.refresh_from_db()
    assert response.status_code == 200
    assert "cannot be undone" in response.content.decode()
    assert customer.erased_at is None


def test_erase_action_erases(client, customer, admin_user):
    client.force_login(admin_user)

    response = client.post(
        reverse("admin:feedback_customer_changelist"),
        {
            "action": "erase_personal_data",
            ACTION_CHECKBOX_NAME: [customer.pk],
            "apply": "1",
            "reason": "Request by email",
        },
    )

    customer.refresh_from_db()
    assert response.status_code == 302
    assert customer.erased_at is not None
    assert CustomerErasure.objects.get().reason == "Request by email"


def test_export_action_downloads_json(client, customer, admin_user):
    client.force_login(admin_user)

    response = client.post(
        reverse("admin:feedback_customer_changelist"),
        {"action": "export_as_json", ACTION_CHECKBOX_NAME: [customer.pk]},
    )

    data = json.loads(response.content)
    assert response["Content-Type"] == "application/json"
    assert "attachment" in response["Content-Disposition"]
    assert data["customers"][0]["profile"]["name"] == "Dana"


def test_export_view_downloads_one(client, customer, admin_user):
    client.force_login(admin_user)

    response = client.get(reverse("admin:feedback_customer_export", args=[customer.pk]))

    assert json.loads(response.content)["profile"]["external_id"] == "crm-77"


def test_customer_page_shows_erasure(client, customer, admin_user):
    customer_erase(
        customer=customer, requested_by=admin_user, reason="Request by email"
    )
    client.force_login(admin_user)

    response = client.get(reverse("admin:feedback_customer_change", args=[customer.pk]))

    assert "Request by email" in response.content.decode()
