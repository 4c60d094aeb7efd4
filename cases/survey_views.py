"""Survey pages for customers: no login and no JavaScript.

The token in the URL identifies the follow-up; it is looked up by its SHA-256
hash, so a forged token finds nothing (404). The answer form is a plain POST
with CSRF protection. The unsubscribe URL also takes the one-click POST of
RFC 8058 from mail providers, which carries no CSRF token; its signed
customer id is what authorises it.
"""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from feedback.intake import InvalidItem, parse_score
from feedback.models import Feedback

from .followups import (
    SURVEY_TEXT,
    SurveyUnavailable,
    customer_by_unsubscribe_token,
    customer_unsubscribe,
    follow_up_answer,
    follow_up_by_token,
    follow_up_status,
    survey_language,
    survey_scale,
)
from .models import FollowUp

MAX_COMMENT_LENGTH = 2000

PAGE_TEXT = {
    "en": {
        "title": "Your feedback",
        "comment": "Anything you would like to add? (optional)",
        "submit": "Send my answer",
        "score_error": "Please pick a score from {low} to {high}.",
        "comment_error": "Please keep your comment under {limit} characters.",
        "thanks_title": "Thank you",
        "thanks": "Your answer has been recorded. Thank you for taking the time.",
        "answered_title": "Already answered",
        "answered": "This survey has already been answered. Thank you.",
        "expired_title": "Link expired",
        "expired": "This survey link has expired.",
        "unsubscribe_title": "Unsubscribe",
        "unsubscribe": "Stop receiving survey emails from us?",
        "unsubscribe_submit": "Unsubscribe",
        "unsubscribed_title": "Unsubscribed",
        "unsubscribed": "You will not receive survey emails from us any more.",
    },
    "id": {
        "title": "Masukan Anda",
        "comment": "Ada yang ingin Anda tambahkan? (opsional)",
        "submit": "Kirim jawaban saya",
        "score_error": "Silakan pilih nilai dari {low} sampai {high}.",
        "comment_error": "Komentar Anda maksimal {limit} karakter.",
        "thanks_title": "Terima kasih",
        "thanks": "Jawaban Anda sudah kami terima. Terima kasih atas waktu Anda.",
        "answered_title": "Sudah dijawab",
        "answered": "Survei ini sudah dijawab. Terima kasih.",
        "expired_title": "Tautan kedaluwarsa",
        "expired": "Tautan survei ini sudah kedaluwarsa.",
        "unsubscribe_title": "Berhenti berlangganan",
        "unsubscribe": "Berhenti menerima email survei dari kami?",
        "unsubscribe_submit": "Berhenti berlangganan",
        "unsubscribed_title": "Berhenti berlangganan",
        "unsubscribed": "Anda tidak akan menerima email survei dari kami lagi.",
    },
}


def _not_found(request: HttpRequest) -> HttpResponse:
    return render(request, "cases/survey/not_found.html", status=404)


def _message_page(
    request: HttpRequest, *, language: str, key: str, status: int = 200
) -> HttpResponse:
    text = PAGE_TEXT[language]
    context = {
        "language": language,
        "title": text[f"{key}_title"],
        "message": text[key],
    }
    return render(request, "cases/survey/message.html", context, status=status)


def _status_page(request: HttpRequest, *, language: str, status: str) -> HttpResponse:
    if status == "answered":
        return _message_page(request, language=language, key="answered")
    return _message_page(request, language=language, key="expired", status=410)


def _parse_score(raw: str | None, kind: str) -> int | None:
    """Return the score, or None when it is missing or outside the kind's range."""
    try:
        return parse_score(raw, kind)
    except InvalidItem:
        return None


def _form_page(
    request: HttpRequest,
    *,
    follow_up: FollowUp,
    language: str,
    score: int | None,
    comment: str = "",
    error: str = "",
    status: int = 200,
) -> HttpResponse:
    text = PAGE_TEXT[language]
    context = {
        "language": language,
        "text": text,
        "title": text["title"],
        "question": SURVEY_TEXT[language]["questions"][follow_up.kind],
        "scale": survey_scale(kind=follow_up.kind, language=language),
        "selected": score,
        "comment": comment,
        "error": error,
        "max_comment_length": MAX_COMMENT_LENGTH,
    }
    return render(request, "cases/survey/form.html", context, status=status)


@require_http_methods(["GET", "POST"])
def survey_answer(request: HttpRequest, token: str) -> HttpResponse:
    """Show the survey with the emailed score pre-selected (GET) or record it (POST)."""
    follow_up = follow_up_by_token(token=token)
    if follow_up is None:
        return _not_found(request)
    language = survey_language(follow_up.customer)
    status = follow_up_status(follow_up=follow_up, now=timezone.now())
    if status != "open":
        return _status_page(request, language=language, status=status)

    low, high = Feedback.SCORE_RANGES[follow_up.kind]
    score_error = PAGE_TEXT[language]["score_error"].format(low=low, high=high)
    if request.method == "GET":
        raw = request.GET.get("score")
        score = _parse_score(raw, follow_up.kind)
        error = score_error if raw and score is None else ""
        return _form_page(
            request, follow_up=follow_up, language=language, score=score, error=error
        )

    score = _parse_score(request.POST.get("score"), follow_up.kind)
    comment = request.POST.get("comment", "").strip()
    error = ""
    if score is None:
        error = score_error
    elif len(comment) > MAX_COMMENT_LENGTH:
        error = PAGE_TEXT[language]["comment_error"].format(limit=MAX_COMMENT_LENGTH)
    if error:
        return _form_page(
            request,
            follow_up=follow_up,
            language=language,
            score=score,
            comment=comment,
            error=error,
            status=400,
        )
    try:
        follow_up_answer(follow_up=follow_up, score=score, comment=comment)
    except SurveyUnavailable:
        follow_up.refresh_from_db()
        status = follow_up_status(follow_up=follow_up, now=timezone.now())
        return _status_page(request, language=language, status=status)
    return _message_page(request, language=language, key="thanks")


@csrf_exempt
@require_http_methods(["GET", "POST"])
def survey_unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    """Confirm (GET) and record (POST, including one-click) an email opt-out."""
    customer = customer_by_unsubscribe_token(token=token)
    if customer is None:
        return _not_found(request)
    language = survey_language(customer)
    if request.method == "POST":
        customer_unsubscribe(customer=customer)
        return _message_page(request, language=language, key="unsubscribed")
    text = PAGE_TEXT[language]
    context = {"language": language, "text": text, "title": text["unsubscribe_title"]}
    return render(request, "cases/survey/unsubscribe.html", context)
