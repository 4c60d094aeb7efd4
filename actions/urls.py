from django.urls import path
from rest_framework.routers import SimpleRouter

from . import api

router = SimpleRouter()
router.register("actions", api.ActionViewSet, basename="action")

urlpatterns = [
    path("team-figures/", api.TeamFiguresView.as_view(), name="team-figures"),
    *router.urls,
]
