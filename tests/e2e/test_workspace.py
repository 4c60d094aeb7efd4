"""End-to-end runs of the workspace in headless Chromium: an agent works a
case, a lead reassigns and creates an action, the dashboard agrees with the
metrics API, and another team's agent cannot open the case."""

from datetime import timedelta

import pytest
from django.utils import timezone

from actions.models import Action
from cases.models import Case, CaseEvent, RootCause, TeamMember
from feedback.models import Feedback, Topic
from feedback.rollups import rollup_rebuild
from tests.cases.factories import (
    CaseFactory,
    FeedbackFactory,
    TeamFactory,
    TeamMemberFactory,
    UserFactory,
)

from .conftest import PASSWORD, log_in, screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _member(team, username: str, role: str = TeamMember.Role.AGENT):
    user = UserFactory(username=username)
    user.set_password(PASSWORD)
    user.save()
    TeamMemberFactory(team=team, user=user, role=role)
    return user


@pytest.fixture
def world():
    team_a = TeamFactory(name="Delivery")
    team_b = TeamFactory(name="Payments")
    delivery = Topic.objects.filter(is_active=True).order_by("pk").first()
    cases = []
    for score, comment in [(2, "The courier never came"), (1, "Parcel arrived broken")]:
        feedback = FeedbackFactory(
            score=score, comment=comment, sentiment=-0.6, sentiment_label="negative"
        )
        if delivery is not None:
            feedback.topics.add(delivery)
        cases.append(
            CaseFactory(
                team=team_a,
                trigger_feedback=feedback,
                topic=delivery,
                resolution_due_at=timezone.now() + timedelta(hours=5),
            )
        )
    return {
        "team_a": team_a,
        "agent_a": _member(team_a, "ayu"),
        "lead_a": _member(team_a, "lina", TeamMember.Role.LEAD),
        "agent_b": _member(team_b, "budi"),
        "cases": cases,
        "root_cause": RootCause.objects.create(name="Courier delay", is_active=True),
    }


def test_agent_logs_contact_and_resolves(page, world):
    case = world["cases"][0]
    page.goto("/login/")
    screenshot(page, "login")
    log_in(page, "ayu")
    screenshot(page, "inbox")
    page.click(f"a.row-link[href='/cases/{case.pk}/']")
    page.wait_for_url(f"**/cases/{case.pk}/")
    page.click("text=Take it")
    page.select_option("#contact-channel", "phone")
    page.select_option("#contact-outcome", "reached")
    page.fill("#contact-body", "Called, the parcel is on its way")
    page.click("text=Log contact")
    assert page.locator(".message.success").inner_text() == "Contact attempt logged."
    page.select_option("#root-cause", str(world["root_cause"].pk))
    page.fill("#resolution-note", "Rebooked the courier")
    page.click("text=Resolve case")
    assert "is resolved" in page.locator(".message.success").inner_text()
    screenshot(page, "case_resolved")

    case.refresh_from_db()
    assert case.state == Case.State.RESOLVED
    assert case.first_response_at is not None
    assert CaseEvent.objects.filter(case=case, kind=CaseEvent.Kind.CONTACT).count() == 1


def test_lead_reassigns_and_creates_action(page, world):
    first, second = world["cases"]
    log_in(page, "lina")
    page.goto(f"/team/?team={world['team_a'].pk}")
    screenshot(page, "team_board")
    page.check(f"#case-{first.pk}")
    page.select_option("#bulk-assignee", str(world["agent_a"].pk))
    page.click("button[value=reassign]")
    assert "1 case reassigned" in page.locator(".message.success").inner_text()
    first.refresh_from_db()
    assert first.assignee == world["agent_a"]

    page.check(f"#case-{first.pk}")
    page.check(f"#case-{second.pk}")
    page.click("button[value=action]")
    page.wait_for_url("**/actions/new/**")
    page.fill("#id_title", "Add live courier tracking")
    screenshot(page, "action_new")
    page.click("text=Create action")
    page.wait_for_url("**/actions/")
    assert (
        page.locator(".column").first.locator("h3").inner_text()
        == "Add live courier tracking"
    )
    screenshot(page, "actions_board")

    action = Action.objects.get(title="Add live courier tracking")
    assert set(action.cases.values_list("pk", flat=True)) == {first.pk, second.pk}


def test_dashboard_chart_matches_metrics_api(page, world):
    today = timezone.now().date()
    for index, score in enumerate([0, 4, 7, 8, 9, 10, 10, 6, 9, 3] * 4):
        FeedbackFactory(
            kind=Feedback.Kind.NPS,
            score=score,
            occurred_at=timezone.now() - timedelta(days=index * 2),
        )
    rollup_rebuild()
    since = today - timedelta(days=84)
    query = f"since={since.isoformat()}&until={today.isoformat()}&by=week"
    log_in(page, "lina")
    page.goto(f"/dashboard/?{query}")
    screenshot(page, "dashboard")
    chart = page.locator("#chart-nps")
    assert chart.locator("svg polyline.line").count() == 1
    table = [
        [cell.inner_text() for cell in row.locator("td").all()]
        for row in chart.locator("tbody tr").all()
    ]

    api = page.request.get(f"/api/v1/metrics/?kind=nps&{query}").json()
    assert [row[0] for row in table] == [period["period"] for period in api["periods"]]
    assert [int(row[1]) for row in table] == [period["n"] for period in api["periods"]]
    assert [float(row[2]) for row in table] == [
        period["score"] for period in api["periods"]
    ]
    assert sum(period["n"] for period in api["periods"]) == api["n"]


def test_other_team_agent_gets_404(page, world):
    case = world["cases"][0]
    log_in(page, "budi")
    response = page.goto(f"/cases/{case.pk}/")
    assert response.status == 404
    screenshot(page, "other_team_404")
