"""Admin permission matrix: every persona against every admin page that matters.

Admins (superuser, staff without a team) see everything. Agents and leads
with staff status see their teams' cases and what is linked to them, and
only leads get the assign and priority actions. Configuration and privacy
pages are for admins only. Users without staff status and anonymous
visitors are sent to the admin login.
"""

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse

from cases.models import Case

from .factories import CaseFactory, make_personas

pytestmark = pytest.mark.django_db

PERSONAS = [
    "superuser",
    "staff_admin",
    "lead_a",
    "agent_a",
    "agent_b",
    "non_staff",
    "anonymous",
]

ADMIN_ONLY = (200, 200, 403, 403, 403, 302, 302)
CASE_WORKERS = (200, 200, 200, 200, 200, 302, 302)
TEAM_A_ONLY = (200, 200, 200, 200, 404, 302, 302)
LEADS = (200, 200, 200, 403, 403, 302, 302)

CONFIG_MODELS = [
    "cases_slapolicy",
    "cases_team",
    "cases_caserule",
    "cases_routingrule",
    "cases_rootcause",
    "cases_businesscalendar",
    "feedback_topic",
]

# Page name -> expected status for each persona, in PERSONAS order.
MATRIX = {
    "case changelist": CASE_WORKERS,
    "case change, team A": TEAM_A_ONLY,
    "case history, team A": TEAM_A_ONLY,
    "assign action": LEADS,
    "priority action": LEADS,
    # Closing runs at once and redirects back to the list, because the
    # workflow decides per case. Agent B's selection of a team A case is empty.
    "close action": (302, 302, 302, 302, 302, 302, 302),
    "customer changelist": CASE_WORKERS,
    "customer change, team A": TEAM_A_ONLY,
    "feedback changelist": CASE_WORKERS,
    "feedback change, team A": TEAM_A_ONLY,
    "erase action": ADMIN_ONLY,
    "export action": ADMIN_ONLY,
    "customer export, team A": ADMIN_ONLY,
    "erasure changelist": ADMIN_ONLY,
    **{f"{model} changelist": ADMIN_ONLY for model in CONFIG_MODELS},
    **{f"{model} add": ADMIN_ONLY for model in CONFIG_MODELS},
}


@pytest.fixture
def world(teams):
    team_a, team_b = teams["Product"], teams["IT"]
    personas = make_personas(team_a=team_a, team_b=team_b)
    case_a = CaseFactory(team=team_a)
    case_b = CaseFactory(team=team_b)
    return {"personas": personas, "case_a": case_a, "case_b": case_b}


def _action(model: str, name: str, pk: int):
    url = reverse(f"admin:{model}_changelist")
    return "post", url, {"action": name, ACTION_CHECKBOX_NAME: [pk]}


def _page(name: str, case: Case):
    customer_id, feedback_id = case.customer_id, case.trigger_feedback_id
    if name.endswith(" changelist") and name.split()[0] in CONFIG_MODELS:
        return "get", reverse(f"admin:{name.split()[0]}_changelist"), None
    if name.endswith(" add"):
        return "get", reverse(f"admin:{name.split()[0]}_add"), None
    pages = {
        "case changelist": ("get", reverse("admin:cases_case_changelist"), None),
        "case change, team A": (
            "get",
            reverse("admin:cases_case_change", args=[case.pk]),
            None,
        ),
        "case history, team A": (
            "get",
            reverse("admin:cases_case_history", args=[case.pk]),
            None,
        ),
        "assign action": _action("cases_case", "assign_to_agent", case.pk),
        "priority action": _action("cases_case", "change_priority", case.pk),
        "close action": _action("cases_case", "close_cases", case.pk),
        "customer changelist": (
            "get",
            reverse("admin:feedback_customer_changelist"),
            None,
        ),
        "customer change, team A": (
            "get",
            reverse("admin:feedback_customer_change", args=[customer_id]),
            None,
        ),
        "feedback changelist": (
            "get",
            reverse("admin:feedback_feedback_changelist"),
            None,
        ),
        "feedback change, team A": (
            "get",
            reverse("admin:feedback_feedback_change", args=[feedback_id]),
            None,
        ),
        "erase action": _action(
            "feedback_customer", "erase_personal_data", customer_id
        ),
        "export action": _action("feedback_customer", "export_as_json", customer_id),
        "customer export, team A": (
            "get",
            reverse("admin:feedback_customer_export", args=[customer_id]),
            None,
        ),
        "erasure changelist": (
            "get",
            reverse("admin:feedback_customererasure_changelist"),
            None,
        ),
    }
    return pages[name]


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("page", list(MATRIX))
def test_admin_permission_matrix(client, world, page, persona):
    user = world["personas"][persona]
    if user is not None:
        client.force_login(user)
    method, url, data = _page(page, world["case_a"])

    response = (
        getattr(client, method)(url, data) if data else getattr(client, method)(url)
    )

    expected = MATRIX[page][PERSONAS.index(persona)]
    assert response.status_code == expected
    if expected == 302 and persona in ("non_staff", "anonymous"):
        assert response["Location"].startswith(reverse("admin:login"))


@pytest.mark.parametrize(
    ("persona", "expected"),
    [
        ("superuser", {"case_a", "case_b"}),
        ("staff_admin", {"case_a", "case_b"}),
        ("lead_a", {"case_a"}),
        ("agent_a", {"case_a"}),
        ("agent_b", {"case_b"}),
    ],
)
def test_case_changelist_shows_own_teams(client, world, persona, expected):
    client.force_login(world["personas"][persona])

    response = client.get(reverse("admin:cases_case_changelist"))

    shown = set(response.context["cl"].result_list)
    assert shown == {world[name] for name in expected}


@pytest.mark.parametrize(
    ("persona", "expected"), [("agent_a", "case_a"), ("agent_b", "case_b")]
)
def test_customer_changelist_shows_linked(client, world, persona, expected):
    client.force_login(world["personas"][persona])

    response = client.get(reverse("admin:feedback_customer_changelist"))

    assert list(response.context["cl"].result_list) == [world[expected].customer]


@pytest.mark.parametrize(
    ("persona", "expected"), [("agent_a", "case_a"), ("agent_b", "case_b")]
)
def test_feedback_changelist_shows_linked(client, world, persona, expected):
    client.force_login(world["personas"][persona])

    response = client.get(reverse("admin:feedback_feedback_changelist"))

    assert list(response.context["cl"].result_list) == [
        world[expected].trigger_feedback
    ]


@pytest.mark.parametrize(
    ("persona", "actions"),
    [
        ("superuser", {"assign_to_agent", "change_priority", "close_cases"}),
        ("lead_a", {"assign_to_agent", "change_priority", "close_cases"}),
        ("agent_a", {"close_cases"}),
    ],
)
def test_case_actions_offered_by_role(client, world, persona, actions):
    client.force_login(world["personas"][persona])

    response = client.get(reverse("admin:cases_case_changelist"))

    offered = {
        name for name, _ in response.context["action_form"].fields["action"].choices
    }
    assert offered - {""} == actions


def test_case_change_page_rejects_post(client, world):
    client.force_login(world["personas"]["superuser"])
    case = world["case_a"]

    response = client.post(
        reverse("admin:cases_case_change", args=[case.pk]),
        {"state": Case.State.CLOSED, "priority": 4},
    )

    case.refresh_from_db()
    assert response.status_code == 403
    assert case.state == Case.State.NEW


def test_config_models_hidden_from_agents_index(client, world):
    client.force_login(world["personas"]["lead_a"])

    response = client.get(reverse("admin:index"))

    models = {
        model["object_name"]
        for app in response.context["app_list"]
        for model in app["models"]
    }
    assert models == {"Case", "Customer", "Feedback"}


def test_admin_group_member_manages_team_members(client, django_user_model):
    from django.contrib.auth.models import Group

    from cases.models import Team
    from cases.permissions import ADMIN_GROUP

    member = django_user_model.objects.create_user("group_admin", is_staff=True)
    member.groups.add(Group.objects.get(name=ADMIN_GROUP))
    client.force_login(member)
    team = Team.objects.first()

    page = client.get(f"/admin/cases/team/{team.pk}/change/")

    assert page.status_code == 200
    assert "members-TOTAL_FORMS" in page.content.decode()
    assert client.get("/admin/auth/user/").status_code == 200
    assert client.get("/admin/authtoken/tokenproxy/").status_code == 200
