"""Workspace pages of the cases app: inbox, case page and lead board."""

from django.urls import path

from . import views

app_name = "cases_web"

urlpatterns = [
    path("", views.inbox, name="home"),
    path("inbox/", views.inbox, name="inbox"),
    path("cases/<int:pk>/", views.case_detail, name="case"),
    path("cases/<int:pk>/transition/", views.case_transition, name="transition"),
    path("cases/<int:pk>/resolve/", views.case_resolve, name="resolve"),
    path("cases/<int:pk>/take/", views.case_take, name="take"),
    path("cases/<int:pk>/assign/", views.case_assign, name="assign"),
    path("cases/<int:pk>/priority/", views.case_priority, name="priority"),
    path("cases/<int:pk>/comment/", views.case_comment, name="comment"),
    path("cases/<int:pk>/contact/", views.case_contact, name="contact"),
    path("cases/<int:pk>/reply/", views.case_customer_reply, name="reply"),
    path("team/", views.team_board, name="team"),
    path("team/bulk/", views.team_bulk, name="team-bulk"),
]
