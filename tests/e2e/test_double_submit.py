"""The workspace script sends a POST form once: a second submit is dropped
and the buttons are disabled, and the back button brings them back."""

import pytest

from cases.models import CaseEvent
from tests.cases.factories import (
    CaseFactory,
    TeamFactory,
    TeamMemberFactory,
    UserFactory,
)

from .conftest import PASSWORD, log_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def case():
    team = TeamFactory(name="Delivery")
    user = UserFactory(username="ayu")
    user.set_password(PASSWORD)
    user.save()
    TeamMemberFactory(team=team, user=user)
    return CaseFactory(team=team)


def _comment_posts(page) -> list:
    posts = []
    page.on(
        "request",
        lambda request: (
            posts.append(request)
            if request.method == "POST" and request.url.endswith("/comment/")
            else None
        ),
    )
    return posts


def test_second_submit_is_dropped(page, case):
    log_in(page, "ayu")
    page.goto(f"/cases/{case.pk}/")
    posts = _comment_posts(page)
    page.fill("#comment-body", "Called the courier")

    # The second submit comes once the first request is under way, as a
    # double click's does; two in one task would be one navigation anyway.
    with page.expect_navigation():
        page.evaluate(
            """() => {
                const form = document.querySelector("#comment-body").form;
                form.requestSubmit();
                window.setTimeout(() => form.requestSubmit(), 5);
            }"""
        )
    page.wait_for_selector(".message.success")

    assert len(posts) == 1
    assert CaseEvent.objects.filter(case=case, kind=CaseEvent.Kind.COMMENT).count() == 1


def test_submit_disables_buttons(page, case):
    log_in(page, "ayu")
    page.goto(f"/cases/{case.pk}/")
    page.fill("#comment-body", "Called the courier")

    # The page's own timer, queued during the submit event, runs before this
    # one, which then stops the navigation so the form stays on screen.
    disabled = page.evaluate(
        """() => new Promise((resolve) => {
            const form = document.querySelector("#comment-body").form;
            form.requestSubmit();
            window.setTimeout(() => {
                window.stop();
                resolve(form.querySelector("button").disabled);
            }, 0);
        })"""
    )

    assert disabled


def test_double_click_adds_one_comment(page, case):
    log_in(page, "ayu")
    page.goto(f"/cases/{case.pk}/")
    page.fill("#comment-body", "Called the courier")

    page.dblclick("text=Add comment")
    page.wait_for_selector(".message.success")

    assert page.locator(".message.success").inner_text() == "Comment added."
    assert CaseEvent.objects.filter(case=case, kind=CaseEvent.Kind.COMMENT).count() == 1
