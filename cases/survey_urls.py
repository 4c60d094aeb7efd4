"""Public survey pages under /s/: answering a follow-up and unsubscribing."""

from django.urls import path

from . import survey_views

app_name = "survey"

urlpatterns = [
    path(
        "unsubscribe/<str:token>/",
        survey_views.survey_unsubscribe,
        name="unsubscribe",
    ),
    path("<str:token>/", survey_views.survey_answer, name="answer"),
]
