from django.urls import path
from rest_framework.routers import SimpleRouter

from . import api

router = SimpleRouter()
router.register("cases", api.CaseViewSet, basename="case")
router.register("teams", api.TeamViewSet, basename="team")
router.register("team-members", api.TeamMemberViewSet, basename="team-member")
router.register("case-rules", api.CaseRuleViewSet, basename="case-rule")
router.register("routing-rules", api.RoutingRuleViewSet, basename="routing-rule")
router.register("sla-policies", api.SlaPolicyViewSet, basename="sla-policy")
router.register("root-causes", api.RootCauseViewSet, basename="root-cause")

urlpatterns = [
    path("auth/token/", api.TokenObtainView.as_view(), name="auth-token"),
    *router.urls,
]
