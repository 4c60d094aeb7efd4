from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from cases.models import Case
from cases.services import feedback_evaluate

from .factories import CustomerFactory, FeedbackFactory, TeamMemberFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def case(teams) -> Case:
    TeamMemberFactory(team=teams["Customer Service"])
    customer = CustomerFactory(email="dana@example.test", name="Dana")
    rows = FeedbackFactory.create_batch(2, customer=customer, score=1)
    feedback_evaluate(feedback_ids=[row.pk for row in rows])
    return Case.objects.get()


@pytest.mark.parametrize("model", ["case", "team", "caserule", "routingrule"])
def test_changelist_loads(admin_client, case, model):
    response = admin_client.get(reverse(f"admin:cases_{model}_changelist"))

    assert response.status_code == 200


def test_case_change_page_shows_reasons(admin_client, case):
    response = admin_client.get(reverse("admin:cases_case_change", args=[case.pk]))

    content = response.content.decode()
    assert response.status_code == 200
    assert case.rule_reason.replace("'", "&#x27;") in content
    assert case.routing_reason in content
    assert "round-robin in Customer Service" in content


@pytest.mark.parametrize("term", ["dana@example.test", "Dana"])
def test_case_search_by_customer(admin_client, case, term):
    response = admin_client.get(reverse("admin:cases_case_changelist"), {"q": term})

    assert list(response.context["cl"].result_list) == [case]


def _registered(view: str) -> list[str]:
    """Return the admin URL names of every registered model that has ``view``."""
    names = []
    for model in apps.get_models():
        if not admin.site.is_registered(model):
            continue
        model_admin = admin.site.get_model_admin(model)
        name = f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}"
        if view != "add" or model_admin.has_add_permission(_superuser_request()):
            names.append(name)
    return sorted(names)


def _superuser_request():
    request = RequestFactory().get("/admin/")
    request.user = get_user_model()(is_superuser=True, is_staff=True, is_active=True)
    return request


@pytest.mark.parametrize("url_name", _registered("changelist"))
def test_every_changelist_loads(admin_client, case, url_name):
    response = admin_client.get(reverse(url_name))

    assert response.status_code == 200


@pytest.mark.parametrize("url_name", _registered("add"))
def test_every_add_page_loads(admin_client, url_name):
    response = admin_client.get(reverse(url_name))

    assert response.status_code == 200


def test_case_list_shows_sla_due(admin_client, case):
    due = timezone.now() + timedelta(hours=4)
    Case.objects.filter(pk=case.pk).update(
        first_response_due_at=due, resolution_due_at=due
    )

    response = admin_client.get(reverse("admin:cases_case_changelist"))

    content = response.content.decode()
    assert "first response:" in content
    assert "resolution:" in content


def test_sla_policy_list_shows_targets(admin_client):
    response = admin_client.get(reverse("admin:cases_slapolicy_changelist"))

    names = [policy.name for policy in response.context["cl"].result_list]
    assert names == ["Urgent", "High", "Low", "Standard"]
    assert "8 h" in response.content.decode()
