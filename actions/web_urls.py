"""Workspace pages of the actions app: the board and the creation form."""

from django.urls import path

from . import views

app_name = "actions_web"

urlpatterns = [
    path("actions/", views.board, name="board"),
    path("actions/new/", views.new, name="new"),
    path("actions/<int:pk>/transition/", views.transition, name="transition"),
]
