import re
from datetime import timedelta

import pytest
import yaml
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import URLResolver, get_resolver
from django.utils import timezone
from rest_framework.test import APIClient

from cases.models import Case, CaseEvent, FollowUp, TeamMember
from feedback.models import Feedback, FeedbackTopic, Topic

from .factories import (
    CaseFactory,
    CustomerFactory,
    FeedbackFactory,
    RootCauseFactory,
    TeamMemberFactory,
    UserFactory,
)
from .personas import make_personas

pytestmark = pytest.mark.django_db

PERSONAS = ["admin", "lead_a", "agent_a", "agent_b", "no_team", "anonymous"]


@pytest.fixture(autouse=True)
def _empty_cache():
    # Login failures are counted in the cache, which is Redis in CI.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def people():
    return make_personas()


def _client(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_login(user)
    return client


# Permission matrix


def _same_customer_case(people) -> Case:
    feedback = FeedbackFactory(customer=people.case_a.customer, score=3)
    return CaseFactory(team=people.team_a, trigger_feedback=feedback)


def _request(people, endpoint: str):
    """Return (method, url, payload) for one endpoint of the matrix."""
    case = people.case_a
    root_cause = RootCauseFactory(name="Website bug")
    base = f"/api/v1/cases/{case.pk}/"
    table = {
        "list": ("get", "/api/v1/cases/", None),
        "detail": ("get", base, None),
        "detail-other-team": ("get", f"/api/v1/cases/{people.case_b.pk}/", None),
        "assign-agent-a": ("post", base + "assign/", {"assignee": people.agent_a.pk}),
        "assign-other": ("post", base + "assign/", {"assignee": people.lead_a.pk}),
        "transition": (
            "post",
            base + "transition/",
            {
                "to_state": "resolved",
                "root_cause": root_cause.pk,
                "resolution_note": "Fixed the page.",
            },
        ),
        "comment": ("post", base + "comment/", {"body": "Looking", "visibility": "internal"}),
        "contact": ("post", base + "contact/", {"channel": "phone", "outcome": "reached"}),
        "customer-reply": ("post", base + "customer-reply/", {"body": "Thanks"}),
        "priority": ("post", base + "priority/", {"priority": 4}),
        "move": ("post", base + "move/", {"team": people.team_b.pk, "reason": "Billing"}),
        "merge": ("post", base + "merge/", {"into": _same_customer_case(people).pk}),
        "teams": ("get", "/api/v1/teams/", None),
        "teams-create": ("post", "/api/v1/teams/", {"name": "Logistics"}),
        "team-members": ("get", "/api/v1/team-members/", None),
        "case-rules": ("get", "/api/v1/case-rules/", None),
        "routing-rules": ("get", "/api/v1/routing-rules/", None),
        "sla-policies": ("get", "/api/v1/sla-policies/", None),
        "root-causes": ("get", "/api/v1/root-causes/", None),
        "root-causes-create": ("post", "/api/v1/root-causes/", {"name": "Courier lost it"}),
        "schema": ("get", "/api/schema/", None),
        "docs": ("get", "/api/docs/", None),
    }
    return table[endpoint]


# Expected status per persona, in the order of PERSONAS.
MATRIX = {
    "list": (200, 200, 200, 200, 200, 401),
    "detail": (200, 200, 200, 404, 404, 401),
    "detail-other-team": (200, 404, 404, 200, 404, 401),
    "assign-agent-a": (200, 200, 200, 404, 404, 401),
    "assign-other": (200, 200, 403, 404, 404, 401),
    "transition": (200, 200, 200, 404, 404, 401),
    "comment": (201, 201, 201, 404, 404, 401),
    "contact": (201, 201, 201, 404, 404, 401),
    "customer-reply": (201, 201, 201, 404, 404, 401),
    "priority": (200, 200, 403, 404, 404, 401),
    "move": (200, 200, 403, 404, 404, 401),
    "merge": (200, 200, 403, 404, 404, 401),
    "teams": (200, 403, 403, 403, 403, 401),
    "teams-create": (201, 403, 403, 403, 403, 401),
    "team-members": (200, 403, 403, 403, 403, 401),
    "case-rules": (200, 403, 403, 403, 403, 401),
    "routing-rules": (200, 403, 403, 403, 403, 401),
    "sla-policies": (200, 403, 403, 403, 403, 401),
    "root-causes": (200, 200, 200, 200, 200, 401),
    "root-causes-create": (201, 403, 403, 403, 403, 401),
    "schema": (200, 200, 200, 200, 200, 401),
    "docs": (200, 200, 200, 200, 200, 401),
}


def _matrix_cases():
    for endpoint, statuses in MATRIX.items():
        for persona, expected in zip(PERSONAS, statuses):
            yield pytest.param(endpoint, persona, expected, id=f"{endpoint}-{persona}")


@pytest.mark.parametrize(("endpoint", "persona", "expected"), list(_matrix_cases()))
def test_permission_matrix(people, endpoint, persona, expected):
    """Admins do everything; agents work their team's cases; leads also
    assign others, change priority, move and merge; other teams' cases
    are missing (404). For agent_a, assign-agent-a takes the unassigned case.
    """
    method, url, payload = _request(people, endpoint)
    client = _client(people.user(persona))

    response = getattr(client, method)(url, payload, format="json")

    assert response.status_code == expected, response.content[:300]


# List: query count, filters, search, ordering, pagination


def _team_a_cases(people, count: int) -> list[Case]:
    topic = Topic.objects.first()
    return [
        CaseFactory(team=people.team_a, assignee=people.agent_a, topic=topic)
        for _ in range(count)
    ]


def test_list_query_count_flat(people, django_assert_num_queries):
    _team_a_cases(people, 55)
    client = _client(people.agent_a)

    # Session, user, the agent's team ids and the page of cases with its joins.
    with django_assert_num_queries(4):
        small = client.get("/api/v1/cases/", {"page_size": 5})
    with django_assert_num_queries(4):
        large = client.get("/api/v1/cases/", {"page_size": 50})

    assert small.status_code == 200
    assert len(small.data["results"]) == 5
    assert len(large.data["results"]) == 50


def test_list_query_count_flat_filtered(people, django_assert_num_queries):
    _team_a_cases(people, 55)
    client = _client(people.agent_a)
    filters = {
        "state": ["new", "assigned"],
        "priority": ["2", "3"],
        "ordering": "resolution_due_at",
    }

    with django_assert_num_queries(4):
        small = client.get("/api/v1/cases/", {**filters, "page_size": 5})
    with django_assert_num_queries(4) as captured:
        large = client.get("/api/v1/cases/", {**filters, "page_size": 50})

    assert len(small.data["results"]) == 5
    assert len(large.data["results"]) == 50
    # Filters on the case's own columns must not add DISTINCT, which made
    # PostgreSQL sort every matching row with its joins before the LIMIT.
    page_sql = captured.captured_queries[-1]["sql"]
    assert "DISTINCT" not in page_sql


def test_list_scoped_to_own_teams(people):
    response = _client(people.agent_a).get("/api/v1/cases/")

    ids = [row["id"] for row in response.data["results"]]
    assert ids == [people.case_a.pk]


def test_list_page_size_capped(people):
    _team_a_cases(people, 105)

    response = _client(people.admin).get("/api/v1/cases/", {"page_size": 500})

    assert len(response.data["results"]) == 100
    assert response.data["next"]


def test_list_cursor_pages_cover_all(people):
    cases = _team_a_cases(people, 7)
    client = _client(people.agent_a)

    seen = []
    url = "/api/v1/cases/?page_size=3"
    while url:
        page = client.get(url).data
        seen.extend(row["id"] for row in page["results"])
        url = page["next"]

    assert sorted(seen) == sorted([people.case_a.pk] + [case.pk for case in cases])


def test_list_orders_by_due_time_nulls_last(people):
    now = timezone.now()
    late = CaseFactory(team=people.team_a, resolution_due_at=now + timedelta(hours=5))
    soon = CaseFactory(team=people.team_a, resolution_due_at=now + timedelta(hours=1))
    client = _client(people.agent_a)

    first = client.get("/api/v1/cases/", {"ordering": "resolution_due_at", "page_size": 2})
    second = client.get(first.data["next"])

    assert [row["id"] for row in first.data["results"]] == [soon.pk, late.pk]
    assert [row["id"] for row in second.data["results"]] == [people.case_a.pk]


def test_list_orders_by_priority(people):
    urgent = CaseFactory(team=people.team_a, priority=4)

    response = _client(people.agent_a).get("/api/v1/cases/", {"ordering": "-priority"})

    assert response.data["results"][0]["id"] == urgent.pk


def _ids(response) -> set[int]:
    return {row["id"] for row in response.data["results"]}


def test_list_filters(people):
    topic = Topic.objects.get(slug="delivery")
    breached = CaseFactory(team=people.team_a, is_breached=True)
    waiting = CaseFactory(team=people.team_a, state="waiting", assignee=people.agent_a)
    on_topic = CaseFactory(team=people.team_a, topic=topic, priority=4)
    old = CaseFactory(team=people.team_a, opened_at=timezone.now() - timedelta(days=30))
    client = _client(people.admin)

    assert _ids(client.get("/api/v1/cases/", {"breached": "true"})) == {breached.pk}
    assert _ids(client.get("/api/v1/cases/", {"state": "waiting"})) == {waiting.pk}
    assert _ids(client.get("/api/v1/cases/", {"assignee": people.agent_a.pk})) == {waiting.pk}
    assert _ids(client.get("/api/v1/cases/", {"topic": "delivery"})) == {on_topic.pk}
    assert _ids(client.get("/api/v1/cases/", {"priority": 4})) == {on_topic.pk}
    assert _ids(client.get("/api/v1/cases/", {"team": people.team_b.pk})) == {
        people.case_b.pk
    }
    assert old.pk not in _ids(
        client.get("/api/v1/cases/", {"opened_after": (timezone.now() - timedelta(days=1)).isoformat()})
    )
    assert _ids(
        client.get("/api/v1/cases/", {"opened_before": (timezone.now() - timedelta(days=1)).isoformat()})
    ) == {old.pk}
    customer = people.case_b.customer.external_id
    assert _ids(client.get("/api/v1/cases/", {"customer": customer})) == {people.case_b.pk}


def test_list_filter_invalid_value_400(people):
    response = _client(people.admin).get("/api/v1/cases/", {"state": "done"})

    assert response.status_code == 400
    assert "done" in str(response.data["state"])


@pytest.mark.parametrize("field", ["team", "assignee"])
def test_list_filter_out_of_range_id_400(people, field):
    response = _client(people.admin).get("/api/v1/cases/", {field: str(2**63)})

    assert response.status_code == 400
    assert field in response.data


def test_list_filter_fractional_id_400(people):
    response = _client(people.admin).get("/api/v1/cases/", {"team": "1.5"})

    assert response.status_code == 400


def test_list_search_comments_and_customer(people):
    CaseEvent.objects.create(
        case=people.case_b, kind=CaseEvent.Kind.COMMENT, body="Courier lost the parcel"
    )
    CaseEvent.objects.create(
        case=people.case_a, kind=CaseEvent.Kind.CONTACT, body="courier called"
    )
    client = _client(people.admin)

    by_comment = client.get("/api/v1/cases/", {"search": "courier"})
    by_customer = client.get(
        "/api/v1/cases/", {"search": people.case_a.customer.external_id}
    )

    assert _ids(by_comment) == {people.case_b.pk}
    assert _ids(by_customer) == {people.case_a.pk}


# Detail


def test_detail_shows_feedback_history_and_timeline(people):
    case = people.case_a
    topic = Topic.objects.get(slug="delivery")
    FeedbackTopic.objects.create(feedback=case.trigger_feedback, topic=topic)
    Feedback.objects.filter(pk=case.trigger_feedback_id).update(
        comment="Parcel late", sentiment=-0.7
    )
    for _ in range(55):
        FeedbackFactory(customer=case.customer, score=8)
    other = _same_customer_case(people)
    CaseEvent.objects.create(
        case=case, actor=people.agent_a, kind=CaseEvent.Kind.COMMENT, body="On it"
    )

    response = _client(people.agent_a).get(f"/api/v1/cases/{case.pk}/")

    data = response.data
    assert data["trigger_feedback"]["comment"] == "Parcel late"
    assert data["trigger_feedback"]["sentiment"] == -0.7
    assert data["trigger_feedback"]["topics"] == ["delivery"]
    assert data["trigger_feedback"]["score"] == 2
    assert len(data["customer_feedback"]) == 50
    assert {row["id"] for row in data["customer_cases"]} == {case.pk, other.pk}
    assert [event["body"] for event in data["timeline"]] == ["On it"]
    assert data["timeline"][0]["actor"]["username"] == "agent_a"
    assert data["allowed_states"] == ["assigned", "in_progress", "waiting", "resolved"]


def test_detail_hides_other_team_cases_of_customer(people):
    hidden = CaseFactory(
        team=people.team_b,
        trigger_feedback=FeedbackFactory(customer=people.case_a.customer, score=1),
    )

    response = _client(people.agent_a).get(f"/api/v1/cases/{people.case_a.pk}/")

    assert hidden.pk not in {row["id"] for row in response.data["customer_cases"]}


def _follow_up(case: Case, **fields) -> FollowUp:
    fields.setdefault("due_at", timezone.now() + timedelta(days=3))
    return FollowUp.objects.create(
        case=case, customer=case.customer, kind="nps", **fields
    )


def test_detail_shows_recovery_and_follow_ups(people):
    case = people.case_a
    Case.objects.filter(pk=case.pk).update(
        state="resolved",
        is_open=False,
        recovery_score_before=2,
        recovery_score_after=9,
        is_recovered=True,
    )
    sent_at = timezone.now() - timedelta(days=1)
    answered = _follow_up(
        case,
        state=FollowUp.State.ANSWERED,
        due_at=sent_at,
        sent_at=sent_at,
        answered_at=timezone.now(),
    )

    data = _client(people.agent_a).get(f"/api/v1/cases/{case.pk}/").data

    assert data["recovery_score_before"] == 2
    assert data["recovery_score_after"] == 9
    assert data["is_recovered"] is True
    (row,) = data["follow_ups"]
    assert row["id"] == answered.pk
    assert row["state"] == "answered"
    assert row["due_at"] is not None
    assert row["sent_at"] is not None
    assert row["answered_at"] is not None


def test_detail_query_count_flat_in_follow_ups(people):
    case = people.case_a
    client = _client(people.agent_a)
    _follow_up(case, state=FollowUp.State.SKIPPED)
    with CaptureQueriesContext(connection) as one:
        client.get(f"/api/v1/cases/{case.pk}/")
    for _ in range(3):
        _follow_up(case, state=FollowUp.State.EXPIRED)

    with CaptureQueriesContext(connection) as four:
        response = client.get(f"/api/v1/cases/{case.pk}/")

    assert len(response.data["follow_ups"]) == 4
    assert len(four.captured_queries) == len(one.captured_queries)


def test_recovery_fields_not_in_list(people):
    response = _client(people.agent_a).get("/api/v1/cases/")

    row = response.data["results"][0]
    assert "follow_ups" not in row
    assert "is_recovered" not in row


# Actions: errors


def test_take_own_case_again_is_noop(people):
    client = _client(people.agent_a)
    url = f"/api/v1/cases/{people.case_a.pk}/assign/"
    client.post(url, {"assignee": people.agent_a.pk}, format="json")

    response = client.post(url, {"assignee": people.agent_a.pk}, format="json")

    assert response.status_code == 200
    assert response.data["assignee"]["id"] == people.agent_a.pk
    assert CaseEvent.objects.filter(case=people.case_a, kind="assigned").count() == 1


@pytest.mark.parametrize(
    ("endpoint", "payload"),
    [
        ("contact/", {"channel": "phone", "outcome": "reached"}),
        ("customer-reply/", {"body": "Thanks"}),
        ("comment/", {"body": "We refunded you.", "visibility": "customer"}),
    ],
)
def test_contact_on_closed_case_409(people, endpoint, payload):
    case = people.case_a
    Case.objects.filter(pk=case.pk).update(state="closed", is_open=False)

    response = _client(people.agent_a).post(
        f"/api/v1/cases/{case.pk}/{endpoint}", payload, format="json"
    )

    assert response.status_code == 409
    assert f"Case #{case.pk} is closed" in response.data["detail"]
    case.refresh_from_db()
    assert case.first_response_at is None


def test_merge_closed_case_into_open_case(people):
    target = _same_customer_case(people)
    case = people.case_a
    Case.objects.filter(pk=case.pk).update(state="closed", is_open=False)

    response = _client(people.lead_a).post(
        f"/api/v1/cases/{case.pk}/merge/", {"into": target.pk}, format="json"
    )

    assert response.status_code == 200
    assert response.data["merged_into"] == target.pk
    assert response.data["state"] == "closed"


def test_transition_forbidden_409_message(people):
    response = _client(people.agent_a).post(
        f"/api/v1/cases/{people.case_a.pk}/transition/", {"to_state": "closed"}, format="json"
    )

    assert response.status_code == 409
    assert response.data["detail"] == (
        f"Case #{people.case_a.pk} is new and cannot move to closed; "
        "allowed next states: assigned, in_progress, waiting, resolved."
    )
    assert response.data["allowed"] == ["assigned", "in_progress", "waiting", "resolved"]


def test_transition_invalid_state_400(people):
    response = _client(people.agent_a).post(
        f"/api/v1/cases/{people.case_a.pk}/transition/", {"to_state": "done"}, format="json"
    )

    assert response.status_code == 400
    assert '"done" is not a valid state' in str(response.data["to_state"])


def test_resolve_without_root_cause_400(people):
    response = _client(people.agent_a).post(
        f"/api/v1/cases/{people.case_a.pk}/transition/",
        {"to_state": "resolved", "resolution_note": "Done"},
        format="json",
    )

    assert response.status_code == 400
    assert response.data["missing"] == ["root_cause"]


def test_priority_invalid_value_400(people):
    response = _client(people.lead_a).post(
        f"/api/v1/cases/{people.case_a.pk}/priority/", {"priority": 7}, format="json"
    )

    assert response.status_code == 400
    assert '"7" is not a valid priority' in str(response.data["priority"])


def test_assign_unknown_user_400(people):
    response = _client(people.lead_a).post(
        f"/api/v1/cases/{people.case_a.pk}/assign/", {"assignee": 999999}, format="json"
    )

    assert response.status_code == 400
    assert 'User "999999" not found.' in str(response.data["assignee"])


def test_merge_into_invisible_case_400(people):
    response = _client(people.lead_a).post(
        f"/api/v1/cases/{people.case_a.pk}/merge/", {"into": people.case_b.pk}, format="json"
    )

    assert response.status_code == 400
    assert f'Case "{people.case_b.pk}" not found' in response.data["detail"]


def test_session_post_needs_csrf(people):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(people.agent_a)

    response = client.post(
        f"/api/v1/cases/{people.case_a.pk}/comment/", {"body": "Hi"}, format="json"
    )

    assert response.status_code == 403
    assert "CSRF" in response.data["detail"]


def test_token_auth_works(people):
    client = APIClient()
    _set_password(people.agent_a, "secret-pass-1")

    token = client.post(
        "/api/v1/auth/token/", {"username": "agent_a", "password": "secret-pass-1"}
    )
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.data['token']}")
    response = client.get(f"/api/v1/cases/{people.case_a.pk}/")

    assert token.status_code == 200
    assert response.status_code == 200


# Login rate limits


def _set_password(user, password: str) -> None:
    user.set_password(password)
    user.save()


def test_token_rate_limited_per_username_and_ip():
    user = UserFactory(username="alice")
    _set_password(user, "right-password-1")
    client = APIClient()

    failures = [
        client.post(
            "/api/v1/auth/token/",
            {"username": "alice", "password": "wrong"},
            REMOTE_ADDR="127.0.0.7",
        )
        for _ in range(5)
    ]
    blocked = client.post(
        "/api/v1/auth/token/",
        {"username": "alice", "password": "right-password-1"},
        REMOTE_ADDR="127.0.0.7",
    )
    elsewhere = client.post(
        "/api/v1/auth/token/",
        {"username": "alice", "password": "right-password-1"},
        REMOTE_ADDR="127.0.0.8",
    )

    assert [response.status_code for response in failures] == [400] * 5
    assert blocked.status_code == 429
    assert 1 <= int(blocked["Retry-After"]) <= 60
    assert "Too many failed login attempts" in blocked.json()["detail"]
    assert elsewhere.status_code == 200


def test_token_rate_limited_per_username_across_ips():
    UserFactory(username="carol")
    client = APIClient()

    for index in range(20):
        client.post(
            "/api/v1/auth/token/",
            {"username": "carol", "password": "wrong"},
            REMOTE_ADDR=f"127.0.1.{index + 1}",
        )
    blocked = client.post(
        "/api/v1/auth/token/", {"username": "carol", "password": "x"}, REMOTE_ADDR="127.0.2.1"
    )

    assert blocked.status_code == 429


def test_token_other_users_failures_no_lockout():
    user = UserFactory(username="dave")
    _set_password(user, "right-password-4")
    client = APIClient()

    for index in range(10):
        client.post(
            "/api/v1/auth/token/", {"username": f"nobody{index}", "password": "wrong"}
        )
    response = client.post(
        "/api/v1/auth/token/", {"username": "dave", "password": "right-password-4"}
    )

    assert response.status_code == 200


def test_token_rate_limited_per_ip():
    client = APIClient()

    for index in range(50):
        client.post(
            "/api/v1/auth/token/", {"username": f"user{index}", "password": "wrong"}
        )
    blocked = client.post("/api/v1/auth/token/", {"username": "fresh", "password": "x"})

    assert blocked.status_code == 429


def test_token_success_not_counted():
    user = UserFactory(username="bob")
    _set_password(user, "right-password-2")
    client = APIClient()

    responses = [
        client.post(
            "/api/v1/auth/token/", {"username": "bob", "password": "right-password-2"}
        )
        for _ in range(7)
    ]

    assert [response.status_code for response in responses] == [200] * 7


def test_admin_login_rate_limited():
    client = APIClient()

    failures = [
        client.post("/admin/login/", {"username": "root", "password": "wrong"})
        for _ in range(5)
    ]
    blocked = client.post("/admin/login/", {"username": "root", "password": "wrong"})

    assert [response.status_code for response in failures] == [200] * 5
    assert blocked.status_code == 429
    assert blocked.has_header("Retry-After")


def test_admin_login_still_works():
    admin = UserFactory(username="boss", is_staff=True, is_superuser=True)
    _set_password(admin, "right-password-3")

    response = APIClient().post(
        "/admin/login/", {"username": "boss", "password": "right-password-3"}
    )

    assert response.status_code == 302


# Schema


def _api_v1_routes() -> set[str]:
    """Return every URL route under /api/v1/ in OpenAPI path form."""
    routes = set()

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            text = prefix + str(pattern.pattern).lstrip("^").rstrip("$")
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, text)
            else:
                routes.add(text)

    walk(get_resolver().url_patterns, "")
    converted = set()
    for route in routes:
        if not route.startswith("api/v1/"):
            continue
        route = re.sub(r"\(\?P<pk>[^)]*\)", "{id}", route)
        route = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", route)
        route = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
        converted.add("/" + route)
    return converted


def test_schema_valid_and_complete(tmp_path):
    schema_file = tmp_path / "schema.yml"

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(schema_file))

    paths = set(yaml.safe_load(schema_file.read_text())["paths"])
    routes = _api_v1_routes()
    assert "/api/v1/cases/{id}/customer-reply/" in routes
    assert routes - paths == set()


def test_team_endpoint_lists_members(people):
    response = _client(people.admin).get(f"/api/v1/teams/{people.team_a.pk}/")

    members = {(row["username"], row["role"]) for row in response.data["members"]}
    assert members == {("lead_a", TeamMember.Role.LEAD), ("agent_a", TeamMember.Role.AGENT)}


def test_team_with_cases_cannot_be_deleted(people):
    response = _client(people.admin).delete(f"/api/v1/teams/{people.team_a.pk}/")

    assert response.status_code == 409
    assert "Team 'Team A' is still used by cases" in response.data["detail"]


def test_staff_lead_is_not_admin(people):
    people.lead_a.is_staff = True
    people.lead_a.save()
    TeamMemberFactory(team=people.team_b, user=UserFactory(username="other"))

    response = _client(people.lead_a).get("/api/v1/teams/")

    assert response.status_code == 403


def test_staff_without_team_is_not_admin():
    from cases.permissions import user_is_admin

    user = UserFactory(username="former_agent", is_staff=True)
    assert user_is_admin(user) is False


def test_admin_group_grants_admin():
    from django.contrib.auth.models import Group

    from cases.permissions import ADMIN_GROUP, user_is_admin

    user = UserFactory(username="new_admin", is_staff=True)
    user.groups.add(Group.objects.get(name=ADMIN_GROUP))
    user = type(user).objects.get(pk=user.pk)
    assert user_is_admin(user) is True


def test_user_with_history_cannot_be_deleted():
    from django.db.models import ProtectedError

    from cases.models import CaseEvent

    case = CaseFactory()
    author = UserFactory(username="author")
    CaseEvent.objects.create(case=case, actor=author, kind=CaseEvent.Kind.COMMENT, body="x")
    with pytest.raises(ProtectedError):
        author.delete()


def test_rate_limit_window_not_split_by_clock_minute(monkeypatch):
    from oscm import ratelimit

    clock = [1_000_019.5]
    monkeypatch.setattr(ratelimit.time, "time", lambda: clock[0])
    limiter = ratelimit.LoginRateLimiter()

    for second in (0, 0.2, 0.4, 0.6, 0.8):
        clock[0] = 1_000_019.5 + second
        limiter.record_failure(username="erin", ip="127.0.0.5")

    assert limiter.retry_after(username="erin", ip="127.0.0.5") > 0
    assert limiter.retry_after(username="erin", ip="127.0.0.6") == 0
