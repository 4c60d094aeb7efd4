"""Workspace pages of the feedback app: dashboard and feedback explorer."""

from django.urls import path

from . import views

app_name = "feedback_web"

urlpatterns = [
    path("dashboard/", views.dashboard, name="dashboard"),
    path("feedback/", views.explorer, name="explorer"),
]
