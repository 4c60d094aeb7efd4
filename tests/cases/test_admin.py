import pytest
from django.urls import reverse

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


def test_case_admin_save_closes(admin_client, case):
    url = reverse("admin:cases_case_change", args=[case.pk])
    data = {
        "state": Case.State.CLOSED,
        "priority": case.priority,
        "team": case.team_id,
        "assignee": case.assignee_id,
        "casefeedback_set-TOTAL_FORMS": "2",
        "casefeedback_set-INITIAL_FORMS": "2",
        "casefeedback_set-MIN_NUM_FORMS": "0",
        "casefeedback_set-MAX_NUM_FORMS": "1000",
    }
    for index, link in enumerate(case.casefeedback_set.order_by("pk")):
        data[f"casefeedback_set-{index}-id"] = link.pk
        data[f"casefeedback_set-{index}-case"] = case.pk

    response = admin_client.post(url, data)

    case.refresh_from_db()
    assert response.status_code == 302
    assert case.state == Case.State.CLOSED
    assert case.is_open is False


@pytest.mark.parametrize("model", ["caserule", "routingrule", "team"])
def test_add_page_loads(admin_client, model):
    response = admin_client.get(reverse(f"admin:cases_{model}_add"))

    assert response.status_code == 200
