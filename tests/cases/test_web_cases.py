"""Workspace pages of the cases app: login, inbox, case page and lead board."""

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from cases.models import Case, CaseEvent, Priority, RootCause, TeamMember

from .factories import CaseFactory, FeedbackFactory, TeamMemberFactory, UserFactory
from .personas import make_personas

pytestmark = pytest.mark.django_db


@pytest.fixture
def people():
    return make_personas()


@pytest.fixture
def root_cause():
    return RootCause.objects.create(name="Courier delay", is_active=True)


def test_login_page_renders(client):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert b'name="username"' in response.content


def test_login_redirects_to_inbox(client, people):
    people.agent_a.set_password("pw-agent-a-1")
    people.agent_a.save()
    response = client.post(
        reverse("login"), {"username": "agent_a", "password": "pw-agent-a-1"}
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("cases_web:inbox")


def test_login_rate_limited_after_failures(client, people, monkeypatch):
    # A fixed clock keeps every attempt in one rate-limit window.
    monkeypatch.setattr("oscm.ratelimit.time.time", lambda: 1_800_000_000.0)
    cache.clear()
    for _ in range(5):
        response = client.post(
            reverse("login"), {"username": "agent_a", "password": "wrong"}
        )
        assert response.status_code == 200
    response = client.post(
        reverse("login"), {"username": "agent_a", "password": "wrong"}
    )
    assert response.status_code == 429
    cache.clear()


def test_inbox_requires_login(client):
    response = client.get(reverse("cases_web:home"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_inbox_lists_own_team_cases_only(client, people):
    client.force_login(people.agent_a)
    response = client.get(reverse("cases_web:inbox"))
    assert response.status_code == 200
    assert f"#{people.case_a.pk}<".encode() in response.content
    assert f"#{people.case_b.pk}<".encode() not in response.content


def test_inbox_hides_colleagues_cases_by_default(client, people):
    colleague = TeamMemberFactory(
        team=people.team_a, user=UserFactory(username="colleague")
    ).user
    taken = CaseFactory(
        team=people.team_a, assignee=colleague, state=Case.State.ASSIGNED
    )
    client.force_login(people.agent_a)
    default = client.get(reverse("cases_web:inbox"))
    everything = client.get(reverse("cases_web:inbox"), {"scope": "all"})
    assert f"#{taken.pk}<".encode() not in default.content
    assert f"#{taken.pk}<".encode() in everything.content


def test_inbox_filters_breached(client, people):
    breached = CaseFactory(
        team=people.team_a,
        is_breached=True,
        resolution_due_at=timezone.now() - timedelta(hours=2),
    )
    client.force_login(people.agent_a)
    response = client.get(reverse("cases_web:inbox"), {"breached": "true"})
    assert f"#{breached.pk}<".encode() in response.content
    assert f"#{people.case_a.pk}<".encode() not in response.content
    assert b"overdue by 2h" in response.content


def test_inbox_countdown_shows_time_left(client, people):
    CaseFactory(
        team=people.team_a,
        resolution_due_at=timezone.now() + timedelta(hours=3, minutes=5),
    )
    client.force_login(people.agent_a)
    response = client.get(reverse("cases_web:inbox"))
    assert b"3h 4m left" in response.content or b"3h 5m left" in response.content


def test_inbox_query_count_flat(client, people, django_assert_num_queries):
    for _ in range(120):
        CaseFactory(team=people.team_a)
    client.force_login(people.agent_a)
    url = reverse("cases_web:inbox")
    # Session, user, the user's team ids, topics of the filter, count, page,
    # and the lead flag of the navigation.
    with django_assert_num_queries(7):
        small = client.get(url, {"page_size": 25})
    with django_assert_num_queries(7):
        large = client.get(url, {"page_size": 100})
    assert small.content.count(b'class="row-link"') == 25
    assert large.content.count(b'class="row-link"') == 100


def test_case_page_of_other_team_is_404(client, people):
    client.force_login(people.agent_b)
    response = client.get(reverse("cases_web:case", args=[people.case_a.pk]))
    assert response.status_code == 404


def test_case_page_post_of_other_team_is_404(client, people):
    client.force_login(people.agent_b)
    response = client.post(
        reverse("cases_web:comment", args=[people.case_a.pk]),
        {"body": "hello", "visibility": "internal"},
    )
    assert response.status_code == 404
    assert not CaseEvent.objects.filter(
        case=people.case_a, kind=CaseEvent.Kind.COMMENT
    ).exists()


def test_case_page_shows_trigger_and_history(client, people):
    client.force_login(people.agent_a)
    response = client.get(reverse("cases_web:case", args=[people.case_a.pk]))
    assert response.status_code == 200
    assert b"Trigger feedback" in response.content
    assert b"Customer history" in response.content


def test_case_page_offers_allowed_transitions_only(client, people):
    client.force_login(people.agent_a)
    unassigned = client.get(reverse("cases_web:case", args=[people.case_a.pk])).content
    assert b"Take it" in unassigned
    assert b'value="in_progress"' not in unassigned
    client.post(reverse("cases_web:take", args=[people.case_a.pk]))
    assigned = client.get(reverse("cases_web:case", args=[people.case_a.pk])).content
    assert b'value="in_progress"' in assigned
    assert b'value="waiting"' in assigned
    assert b'value="new"' not in assigned


def test_agent_logs_contact_and_resolves(client, people, root_cause):
    client.force_login(people.agent_a)
    case_url = reverse("cases_web:case", args=[people.case_a.pk])
    client.post(reverse("cases_web:take", args=[people.case_a.pk]))
    response = client.post(
        reverse("cases_web:contact", args=[people.case_a.pk]),
        {"channel": "phone", "outcome": "reached", "body": "Called back"},
    )
    assert response.status_code == 302
    assert response["Location"] == case_url
    response = client.post(
        reverse("cases_web:resolve", args=[people.case_a.pk]),
        {"root_cause": root_cause.pk, "resolution_note": "Refunded the delivery fee"},
        follow=True,
    )
    assert b"is resolved" in response.content
    people.case_a.refresh_from_db()
    assert people.case_a.state == Case.State.RESOLVED
    assert people.case_a.first_response_at is not None
    assert people.case_a.root_cause == root_cause


def test_resolve_without_root_cause_shows_message(client, people):
    client.force_login(people.agent_a)
    case_url = reverse("cases_web:case", args=[people.case_a.pk])
    response = client.post(
        reverse("cases_web:resolve", args=[people.case_a.pk]),
        {"root_cause": "", "resolution_note": ""},
        HTTP_REFERER="http://testserver" + case_url,
        follow=True,
    )
    assert response.redirect_chain[-1][0] == case_url
    assert b"requires root_cause and resolution_note" in response.content
    people.case_a.refresh_from_db()
    assert people.case_a.state == Case.State.NEW


def test_agent_assigning_others_is_403(client, people):
    client.force_login(people.agent_a)
    response = client.post(
        reverse("cases_web:assign", args=[people.case_a.pk]),
        {"assignee": people.lead_a.pk},
    )
    assert response.status_code == 403
    people.case_a.refresh_from_db()
    assert people.case_a.assignee_id is None


def test_lead_assigns_and_changes_priority(client, people):
    client.force_login(people.lead_a)
    client.post(
        reverse("cases_web:assign", args=[people.case_a.pk]),
        {"assignee": people.agent_a.pk},
    )
    client.post(reverse("cases_web:priority", args=[people.case_a.pk]), {"priority": 4})
    people.case_a.refresh_from_db()
    assert people.case_a.assignee_id == people.agent_a.pk
    assert people.case_a.priority == 4


def test_timeline_shows_names_not_ids(client, people):
    client.force_login(people.lead_a)
    client.post(
        reverse("cases_web:assign", args=[people.case_a.pk]),
        {"assignee": people.agent_a.pk},
    )
    client.post(reverse("cases_web:priority", args=[people.case_a.pk]), {"priority": 4})
    response = client.get(reverse("cases_web:case", args=[people.case_a.pk]))
    rows = [row for event in response.context["events"] for row in event.change_rows]
    assert ("assignee", None, "agent_a") in rows
    assert ("state", "New", "Assigned") in rows
    assert ("priority", "Normal", "Urgent") in rows


def test_comment_is_added(client, people):
    client.force_login(people.agent_a)
    client.post(
        reverse("cases_web:comment", args=[people.case_a.pk]),
        {"body": "Looked at the order", "visibility": "internal"},
    )
    event = CaseEvent.objects.get(case=people.case_a, kind=CaseEvent.Kind.COMMENT)
    assert event.body == "Looked at the order"


def test_case_page_lead_tools_for_leads_only(client, people):
    client.force_login(people.agent_a)
    agent_page = client.get(reverse("cases_web:case", args=[people.case_a.pk])).content
    client.force_login(people.lead_a)
    lead_page = client.get(reverse("cases_web:case", args=[people.case_a.pk])).content

    assert b'name="operation" value="move"' not in agent_page
    assert b'name="operation" value="merge"' not in agent_page
    assert b'name="operation" value="move"' in lead_page
    assert b'name="operation" value="merge"' in lead_page


def test_lead_moves_case_with_reason(client, people):
    client.force_login(people.lead_a)
    response = client.post(
        reverse("cases_web:case", args=[people.case_a.pk]),
        {"operation": "move", "team": people.team_b.pk, "reason": "Billing question"},
        follow=True,
    )

    # The lead does not lead team B, so the case left their view.
    assert response.redirect_chain[-1][0] == reverse("cases_web:team")
    assert b"is moved to team Team B" in response.content
    people.case_a.refresh_from_db()
    assert people.case_a.team == people.team_b
    event = CaseEvent.objects.get(case=people.case_a, kind=CaseEvent.Kind.TEAM_CHANGED)
    assert event.body == "Billing question"


def test_move_without_reason_shows_message(client, people):
    client.force_login(people.lead_a)
    case_url = reverse("cases_web:case", args=[people.case_a.pk])
    response = client.post(
        case_url,
        {
            "operation": "move",
            "team": people.team_b.pk,
            "reason": " ",
            "next": case_url,
        },
        follow=True,
    )

    assert response.redirect_chain[-1][0] == case_url
    assert b"Moving a case requires a reason" in response.content
    people.case_a.refresh_from_db()
    assert people.case_a.team == people.team_a


def test_agent_move_is_403(client, people):
    client.force_login(people.agent_a)
    response = client.post(
        reverse("cases_web:case", args=[people.case_a.pk]),
        {"operation": "move", "team": people.team_b.pk, "reason": "Billing"},
    )

    assert response.status_code == 403
    people.case_a.refresh_from_db()
    assert people.case_a.team == people.team_a


def test_lead_merges_closed_case(client, people):
    target = CaseFactory(
        team=people.team_a,
        trigger_feedback=FeedbackFactory(customer=people.case_a.customer, score=3),
    )
    Case.objects.filter(pk=people.case_a.pk).update(state="closed", is_open=False)
    client.force_login(people.lead_a)

    response = client.post(
        reverse("cases_web:case", args=[people.case_a.pk]),
        {"operation": "merge", "into": target.pk},
        follow=True,
    )

    assert response.redirect_chain[-1][0] == reverse("cases_web:case", args=[target.pk])
    assert f"is merged into case #{target.pk}".encode() in response.content
    people.case_a.refresh_from_db()
    assert people.case_a.merged_into == target


def test_merge_other_customer_shows_message(client, people):
    other = CaseFactory(team=people.team_a)
    client.force_login(people.lead_a)
    case_url = reverse("cases_web:case", args=[people.case_a.pk])

    response = client.post(
        case_url,
        {"operation": "merge", "into": other.pk, "next": case_url},
        follow=True,
    )

    assert response.redirect_chain[-1][0] == case_url
    assert b"belong to different customers" in response.content
    people.case_a.refresh_from_db()
    assert people.case_a.merged_into is None


def test_merge_into_hidden_case_shows_not_found(client, people):
    client.force_login(people.lead_a)
    case_url = reverse("cases_web:case", args=[people.case_a.pk])

    response = client.post(
        case_url,
        {"operation": "merge", "into": people.case_b.pk, "next": case_url},
        follow=True,
    )

    assert f"Case #{people.case_b.pk} not found".encode() in response.content


def test_case_page_post_needs_csrf(people):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(people.lead_a)

    response = client.post(
        reverse("cases_web:case", args=[people.case_a.pk]),
        {"operation": "move", "team": people.team_b.pk, "reason": "Billing"},
    )

    assert response.status_code == 403
    people.case_a.refresh_from_db()
    assert people.case_a.team == people.team_a


def test_case_page_post_of_hidden_case_is_404(client, people):
    client.force_login(people.agent_b)
    response = client.post(
        reverse("cases_web:case", args=[people.case_a.pk]),
        {"operation": "merge", "into": people.case_b.pk},
    )

    assert response.status_code == 404


def test_contact_on_closed_case_shows_message(client, people):
    Case.objects.filter(pk=people.case_a.pk).update(state="closed", is_open=False)
    client.force_login(people.agent_a)
    case_url = reverse("cases_web:case", args=[people.case_a.pk])

    response = client.post(
        reverse("cases_web:contact", args=[people.case_a.pk]),
        {"channel": "phone", "outcome": "reached", "next": case_url},
        follow=True,
    )

    assert f"Case #{people.case_a.pk} is closed".encode() in response.content
    assert not CaseEvent.objects.filter(case=people.case_a).exists()


def test_get_on_workflow_form_is_405(client, people):
    client.force_login(people.agent_a)
    response = client.get(reverse("cases_web:take", args=[people.case_a.pk]))
    assert response.status_code == 405


def test_team_board_agent_is_403(client, people):
    client.force_login(people.agent_a)
    response = client.get(reverse("cases_web:team"))
    assert response.status_code == 403


def test_team_board_shows_workload(client, people):
    member = TeamMember.objects.get(user=people.agent_a)
    member.is_away = True
    member.save()
    CaseFactory(team=people.team_a, assignee=people.agent_a, state=Case.State.ASSIGNED)
    client.force_login(people.lead_a)
    response = client.get(reverse("cases_web:team"))
    assert response.status_code == 200
    assert response.context["team"] == people.team_a
    workload = {
        agent.user.username: agent.open_case_count
        for agent in response.context["agents"]
    }
    assert workload == {"agent_a": 1}
    assert b"away" in response.content


def test_team_board_lead_sees_only_led_teams(client, people):
    client.force_login(people.lead_a)
    response = client.get(reverse("cases_web:team"), {"team": people.team_b.pk})
    assert response.context["team"] == people.team_a


def test_team_bulk_reassigns(client, people):
    second = CaseFactory(team=people.team_a)
    client.force_login(people.lead_a)
    response = client.post(
        reverse("cases_web:team-bulk"),
        {
            "operation": "reassign",
            "assignee": people.agent_a.pk,
            "case": [people.case_a.pk, second.pk],
        },
    )
    assert response.status_code == 302
    assert set(
        Case.objects.filter(assignee=people.agent_a).values_list("pk", flat=True)
    ) == {
        people.case_a.pk,
        second.pk,
    }


def test_team_bulk_action_opens_form(client, people):
    second = CaseFactory(team=people.team_a)
    client.force_login(people.lead_a)
    response = client.post(
        reverse("cases_web:team-bulk"),
        {"operation": "action", "case": [people.case_a.pk, second.pk]},
    )
    assert response.status_code == 302
    assert response["Location"] == (
        f"{reverse('actions_web:new')}?case={people.case_a.pk}&case={second.pk}"
    )


@pytest.mark.parametrize(
    "target",
    ["https://attacker.example/x", "//attacker.example/x", "/\\attacker.example"],
)
def test_case_form_next_off_site_goes_to_case(client, people, target):
    client.force_login(people.agent_a)
    response = client.post(
        reverse("cases_web:comment", args=[people.case_a.pk]),
        {"body": "Called the courier", "next": target},
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("cases_web:case", args=[people.case_a.pk])


def test_case_form_next_on_site_is_followed(client, people):
    client.force_login(people.agent_a)
    response = client.post(
        reverse("cases_web:comment", args=[people.case_a.pk]),
        {"body": "Called the courier", "next": "/inbox/?scope=mine"},
    )
    assert response["Location"] == "/inbox/?scope=mine"


def test_failed_form_next_off_site_goes_to_inbox(client, people):
    client.force_login(people.agent_a)
    response = client.post(
        reverse("cases_web:resolve", args=[people.case_a.pk]),
        {"root_cause": "", "resolution_note": "", "next": "/\\attacker.example"},
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("cases_web:inbox")


@pytest.mark.parametrize("case_id", ["\u00b2", "99999999999999999999999", "-3"])
def test_team_bulk_invalid_case_id_shows_message(client, people, case_id):
    client.force_login(people.lead_a)
    response = client.post(
        reverse("cases_web:team-bulk"),
        {"operation": "reassign", "assignee": people.agent_a.pk, "case": [case_id]},
        follow=True,
    )
    assert response.status_code == 200
    assert "No cases selected" in str(list(response.context["messages"])[0])


def test_team_bulk_by_agent_is_403(client, people):
    client.force_login(people.agent_a)
    response = client.post(
        reverse("cases_web:team-bulk"),
        {
            "operation": "reassign",
            "assignee": people.agent_a.pk,
            "case": [people.case_a.pk],
        },
    )
    assert response.status_code == 403


def test_pages_in_indonesian(client, people):
    client.force_login(people.agent_a)
    client.cookies["django_language"] = "id"
    response = client.get(reverse("cases_web:inbox"))
    assert response.status_code == 200
    assert b'lang="id"' in response.content
    assert "Kotak masuk".encode() in response.content


def test_language_switch_sets_cookie(client, people):
    client.force_login(people.agent_a)
    response = client.post(
        reverse("set_language"), {"language": "id", "next": "/inbox/"}
    )
    assert response.status_code == 302
    assert response.cookies["django_language"].value == "id"


def test_inbox_priority_sort_puts_urgent_first(client, people):
    low = CaseFactory(team=people.team_a, priority=Priority.LOW)
    urgent = CaseFactory(team=people.team_a, priority=Priority.URGENT)
    client.force_login(people.agent_a)
    response = client.get(reverse("cases_web:inbox"), {"sort": "priority"})
    content = response.content
    assert content.index(f"#{urgent.pk}<".encode()) < content.index(
        f"#{people.case_a.pk}<".encode()
    )
    assert content.index(f"#{people.case_a.pk}<".encode()) < content.index(
        f"#{low.pk}<".encode()
    )


def test_inbox_of_user_without_team_is_empty(client, people):
    client.force_login(people.no_team)
    response = client.get(reverse("cases_web:inbox"))
    assert response.status_code == 200
    assert b'class="row-link"' not in response.content
    assert b"No cases match these filters." in response.content


@pytest.mark.parametrize("field", ["team", "assignee"])
def test_inbox_out_of_range_filter_id_renders(client, people, field):
    client.force_login(people.agent_a)
    response = client.get(reverse("cases_web:inbox"), {field: str(2**63)})
    assert response.status_code == 200
