import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from cases import workflow
from cases.followups import (
    case_follow_up_schedule,
    follow_up_dispatch,
    survey_token_hash,
    unsubscribe_token,
)
from cases.models import Case, CaseEvent, CaseFeedback, ContactPolicy, FollowUp
from feedback.models import Feedback
from tests.cases.test_follow_ups import make_open_case, make_resolved_case

pytestmark = pytest.mark.django_db

TOKEN = "t" * 43


def send_follow_up(case, *, token=TOKEN, expires_in=timedelta(days=14)):
    """Return a follow-up of ``case`` that was sent with ``token``."""
    now = timezone.now()
    return FollowUp.objects.create(
        case=case,
        customer=case.customer,
        kind=case.trigger_feedback.kind,
        state=FollowUp.State.SENT,
        due_at=now,
        sent_at=now,
        expires_at=now + expires_in,
        token_hash=survey_token_hash(token),
    )


@pytest.fixture
def reopen_calls(monkeypatch):
    """Replace the workflow's case_transition and record its calls."""
    calls = []

    def case_transition(*, case, actor, to_state, **kwargs):
        calls.append({"case": case.pk, "actor": actor, "to_state": to_state})
        Case.objects.filter(pk=case.pk).update(state=to_state, is_open=True)
        return case

    monkeypatch.setattr(workflow, "case_transition", case_transition)
    return calls


def answer(client, score, comment="", token=TOKEN):
    return client.post(f"/s/{token}/", {"score": score, "comment": comment})


# Showing the survey


def test_get_preselects_emailed_score(client):
    send_follow_up(make_resolved_case())

    response = client.get(f"/s/{TOKEN}/?score=8")

    content = response.content.decode()
    assert response.status_code == 200
    assert re.search(r'value="8" required checked', content)
    assert content.count("checked") == 1
    assert "recommend us" in content
    assert 'name="comment"' in content


def test_get_shows_indonesian_page(client):
    send_follow_up(make_resolved_case(language="id"))

    response = client.get(f"/s/{TOKEN}/?score=8")

    content = response.content.decode()
    assert '<html lang="id">' in content
    assert "Kirim jawaban saya" in content
    assert "merekomendasikan" in content


def test_get_out_of_range_score_shows_error(client):
    send_follow_up(make_resolved_case())

    response = client.get(f"/s/{TOKEN}/?score=11")

    content = response.content.decode()
    assert "Please pick a score from 0 to 10." in content
    assert "checked" not in content


def test_forged_token_not_found(client):
    send_follow_up(make_resolved_case())

    response = client.get(f"/s/{'x' * 43}/?score=8")

    assert response.status_code == 404


def test_expired_link_shows_expired_page(client):
    send_follow_up(make_resolved_case(), expires_in=timedelta(seconds=-1))

    get = client.get(f"/s/{TOKEN}/?score=8")
    post = answer(client, 8)

    assert get.status_code == 410
    assert "This survey link has expired." in get.content.decode()
    assert post.status_code == 410
    assert not Feedback.objects.filter(external_id__startswith="follow-up:").exists()


def test_link_of_cancelled_follow_up_is_expired(client):
    follow_up = send_follow_up(make_resolved_case())
    FollowUp.objects.filter(pk=follow_up.pk).update(state=FollowUp.State.CANCELLED)

    assert client.get(f"/s/{TOKEN}/").status_code == 410


# Answering


def test_post_records_answer_as_feedback(client):
    case = make_resolved_case(kind="csat", score=1)
    follow_up = send_follow_up(case)

    response = answer(client, 4, comment="Much better now")

    follow_up.refresh_from_db()
    feedback = follow_up.answer
    assert response.status_code == 200
    assert "Your answer has been recorded." in response.content.decode()
    assert follow_up.state == FollowUp.State.ANSWERED
    assert follow_up.answered_at is not None
    assert feedback.source == Feedback.Source.SURVEY
    assert feedback.kind == "csat"
    assert feedback.score == 4
    assert feedback.comment == "Much better now"
    assert feedback.customer_id == case.customer_id
    assert feedback.external_id == f"follow-up:{follow_up.pk}"
    assert feedback.touchpoint == "case-follow-up"
    assert CaseFeedback.objects.filter(case=case, feedback=feedback).exists()


def test_plain_post_works_with_csrf_enforced():
    send_follow_up(make_resolved_case())
    browser = Client(enforce_csrf_checks=True)

    page = browser.get(f"/s/{TOKEN}/?score=9").content.decode()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    response = browser.post(f"/s/{TOKEN}/", {"csrfmiddlewaretoken": csrf, "score": "9"})

    assert "<script" not in page
    assert response.status_code == 200
    assert FollowUp.objects.get().state == FollowUp.State.ANSWERED


def test_post_without_csrf_token_rejected():
    send_follow_up(make_resolved_case())

    response = Client(enforce_csrf_checks=True).post(f"/s/{TOKEN}/", {"score": "9"})

    assert response.status_code == 403
    assert FollowUp.objects.get().state == FollowUp.State.SENT


@pytest.mark.parametrize("score", ["11", "-1", "", "seven", "8.5"])
def test_post_invalid_score_shows_form_again(client, score):
    send_follow_up(make_resolved_case())

    response = answer(client, score, comment="kept")

    content = response.content.decode()
    assert response.status_code == 400
    assert "Please pick a score from 0 to 10." in content
    assert ">kept</textarea>" in content
    assert FollowUp.objects.get().state == FollowUp.State.SENT


def test_post_too_long_comment_shows_form_again(client):
    send_follow_up(make_resolved_case())

    response = answer(client, 9, comment="x" * 2001)

    assert response.status_code == 400
    assert "under 2000 characters" in response.content.decode()


def test_double_submit_records_once(client):
    send_follow_up(make_resolved_case())

    first = answer(client, 9)
    second = answer(client, 2)

    assert first.status_code == 200
    assert "already been answered" in second.content.decode()
    assert Feedback.objects.filter(external_id__startswith="follow-up:").count() == 1
    assert FollowUp.objects.get().answer.score == 9


def test_reused_token_shows_already_answered(client):
    send_follow_up(make_resolved_case())
    answer(client, 9)

    response = client.get(f"/s/{TOKEN}/?score=3")

    assert response.status_code == 200
    assert "This survey has already been answered." in response.content.decode()


def test_token_never_opens_other_survey(client):
    mine = send_follow_up(make_resolved_case(), token="a" * 43)
    theirs = send_follow_up(make_resolved_case(), token="b" * 43)

    answer(client, 9, token="a" * 43)

    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert mine.state == FollowUp.State.ANSWERED
    assert theirs.state == FollowUp.State.SENT


def test_emailed_link_reaches_survey(
    client, mailoutbox, django_capture_on_commit_callbacks
):
    case = make_resolved_case(kind="rating", score=1)
    now = timezone.now()
    case_follow_up_schedule(case=case, now=now - timedelta(days=3))
    FollowUp.objects.update(due_at=now)
    ContactPolicy.objects.update(quiet_hours_start=None)
    with django_capture_on_commit_callbacks(execute=True):
        follow_up_dispatch(now=now)

    link = re.search(
        r"http://127\.0\.0\.1:8000(/s/[^/\s]+/\?score=5)", mailoutbox[0].body
    ).group(1)
    response = client.get(link)

    assert response.status_code == 200
    assert re.search(r'value="5" required checked', response.content.decode())


# Recovery


def test_answer_out_of_unhappy_band_recovers(client, reopen_calls):
    case = make_resolved_case(kind="nps", score=3)
    send_follow_up(case)

    answer(client, 7)

    case.refresh_from_db()
    assert case.recovery_score_before == 3
    assert case.recovery_score_after == 7
    assert case.is_recovered is True
    assert reopen_calls == []
    assert CaseEvent.objects.filter(
        case=case, kind=CaseEvent.Kind.FEEDBACK_ATTACHED
    ).exists()


@pytest.mark.parametrize(
    ("kind", "before", "after", "recovered"),
    [
        ("nps", 2, 6, False),
        ("csat", 1, 3, True),
        ("csat", 2, 2, False),
        ("rating", 1, 3, True),
        ("ces", 2, 4, True),
        ("ces", 1, 3, False),
    ],
)
def test_recovery_per_kind(client, reopen_calls, kind, before, after, recovered):
    case = make_resolved_case(kind=kind, score=before)
    send_follow_up(case)

    answer(client, after)

    case.refresh_from_db()
    assert case.is_recovered is recovered


def test_still_unhappy_reopens_case(client, reopen_calls):
    case = make_resolved_case(kind="nps", score=3)
    send_follow_up(case)

    answer(client, 4)

    case.refresh_from_db()
    assert case.is_recovered is False
    assert reopen_calls == [{"case": case.pk, "actor": None, "to_state": "new"}]


def test_still_unhappy_reopens_assigned_case_in_progress(
    client, reopen_calls, django_user_model
):
    case = make_resolved_case(kind="nps", score=3)
    Case.objects.filter(pk=case.pk).update(
        assignee=django_user_model.objects.create(username="agent")
    )
    send_follow_up(case)

    answer(client, 4)

    assert reopen_calls[0]["to_state"] == "in_progress"


def test_failed_reopen_keeps_answer(client, monkeypatch, caplog):
    def case_transition(**kwargs):
        raise AttributeError("'NoneType' object has no attribute 'is_authenticated'")

    monkeypatch.setattr(workflow, "case_transition", case_transition)
    case = make_resolved_case(kind="nps", score=3)
    follow_up = send_follow_up(case)

    response = answer(client, 4)

    follow_up.refresh_from_db()
    case.refresh_from_db()
    assert response.status_code == 200
    assert follow_up.state == FollowUp.State.ANSWERED
    assert case.recovery_score_after == 4
    assert case.state == Case.State.RESOLVED
    assert "Reopening case" in caplog.text


def test_still_unhappy_without_reopen_policy(client, reopen_calls):
    ContactPolicy.objects.filter(team__isnull=True).update(
        reopen_when_still_unhappy=False
    )
    case = make_resolved_case(kind="nps", score=3)
    send_follow_up(case)

    answer(client, 4)

    case.refresh_from_db()
    assert case.is_recovered is False
    assert reopen_calls == []


def test_unhappy_answer_opens_no_new_case(
    client, reopen_calls, django_capture_on_commit_callbacks
):
    case = make_resolved_case(kind="nps", score=3)
    send_follow_up(case)

    with django_capture_on_commit_callbacks(execute=True):
        answer(client, 1)

    answer_feedback = FollowUp.objects.get().answer
    assert answer_feedback.evaluated_at is not None
    assert Case.objects.count() == 1


# Unsubscribe


def test_unsubscribe_get_shows_confirmation(client):
    case = make_resolved_case()

    response = client.get(f"/s/unsubscribe/{unsubscribe_token(case.customer)}/")

    case.customer.refresh_from_db()
    assert response.status_code == 200
    assert "Stop receiving survey emails" in response.content.decode()
    assert case.customer.is_opted_out is False


def test_unsubscribe_one_click_post():
    case = make_resolved_case()
    scheduled = case_follow_up_schedule(case=case, now=timezone.now())
    mail_client = Client(enforce_csrf_checks=True)

    response = mail_client.post(
        f"/s/unsubscribe/{unsubscribe_token(case.customer)}/",
        "List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )

    case.customer.refresh_from_db()
    scheduled.refresh_from_db()
    assert response.status_code == 200
    assert case.customer.is_opted_out is True
    assert scheduled.state == FollowUp.State.CANCELLED
    assert scheduled.skip_reason == "the customer unsubscribed"


def test_unsubscribe_indonesian_page(client):
    case = make_resolved_case(language="id")

    response = client.post(f"/s/unsubscribe/{unsubscribe_token(case.customer)}/")

    assert "Anda tidak akan menerima email survei" in response.content.decode()


def test_unsubscribe_forged_token_not_found(client):
    case = make_resolved_case()
    token = unsubscribe_token(case.customer)

    response = client.post(f"/s/unsubscribe/{token[:-2]}xx/")

    case.customer.refresh_from_db()
    assert response.status_code == 404
    assert case.customer.is_opted_out is False


def test_unsubscribe_keeps_other_customers_subscribed(client):
    leaving = make_resolved_case()
    staying = make_open_case(customer=make_resolved_case().customer)

    client.post(f"/s/unsubscribe/{unsubscribe_token(leaving.customer)}/")

    staying.customer.refresh_from_db()
    assert staying.customer.is_opted_out is False


def test_still_unhappy_reopens_through_real_workflow(client):
    case = make_resolved_case(kind="nps", score=3)
    send_follow_up(case)

    answer(client, 2)

    case.refresh_from_db()
    assert case.state == Case.State.NEW
    assert case.is_open is True
    assert case.is_recovered is False
    reopen = CaseEvent.objects.filter(case=case, kind=CaseEvent.Kind.STATE_CHANGED).last()
    assert reopen.changes["state"] == ["resolved", "new"]
    assert reopen.actor is None
