"""HTTP API of the cases app: the case list and detail, the workflow actions
agents and leads take on a case, and the admin configuration endpoints.

Every case query goes through cases_visible_to, so a case outside the
user's teams returns 404. The workflow services check role rights and
raise 403 when the case is visible but the role is not enough.
"""

from datetime import datetime, timezone as dt_timezone

from django.db.models import Prefetch, ProtectedError, QuerySet, Value
from django.db.models.functions import Coalesce
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import permissions, serializers as drf_serializers, status, viewsets
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.decorators import action
from rest_framework.filters import OrderingFilter
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from django_filters.rest_framework import DjangoFilterBackend

from feedback.models import Feedback
from oscm.errors import DomainError
from oscm.idempotency.api import IDEMPOTENCY_KEY_PARAMETER, idempotent
from oscm.ratelimit import client_ip, login_rate_limiter, too_many_attempts

from . import serializers, workflow
from .filters import CaseFilter
from .models import (
    Case,
    CaseRule,
    FollowUp,
    RootCause,
    RoutingRule,
    SlaPolicy,
    Team,
    TeamMember,
)
from .permissions import cases_visible_to, user_is_admin

# Latest feedback of the customer shown on the case detail.
CUSTOMER_FEEDBACK_LIMIT = 50
# Sorts cases without a resolution due time after every case that has one.
_NO_DUE_TIME = datetime(9999, 1, 1, tzinfo=dt_timezone.utc)


class ApiAuthMixin:
    """Token first, so an anonymous request gets 401 with WWW-Authenticate
    instead of the 403 that session authentication alone gives."""

    authentication_classes = [TokenAuthentication, SessionAuthentication]


class IsOscmAdmin(permissions.BasePermission):
    message = "Only admins may manage this configuration."

    def has_permission(self, request, view) -> bool:
        return user_is_admin(request.user)


class ReadAnyWriteAdmin(permissions.BasePermission):
    message = "Only admins may change this configuration."

    def has_permission(self, request, view) -> bool:
        if not request.user.is_authenticated:
            return False
        return request.method in permissions.SAFE_METHODS or user_is_admin(request.user)


# Case list and detail


class CasePagination(CursorPagination):
    page_size = 25
    page_size_query_param = "page_size"
    max_page_size = 100
    ordering = "-opened_at"


class CaseOrderingFilter(OrderingFilter):
    """Orders by the public field names; ``resolution_due_at`` sorts on a
    non-null copy, because cursor pagination cannot page over NULLs."""

    _SORT_KEYS = {"resolution_due_at": "resolution_due_sort"}

    def get_ordering(self, request, queryset, view):
        ordering = super().get_ordering(request, queryset, view)
        if not ordering:
            return ordering
        mapped = []
        for field in ordering:
            prefix = "-" if field.startswith("-") else ""
            name = field.lstrip("-")
            mapped.append(prefix + self._SORT_KEYS.get(name, name))
        return mapped


_CASE_RESPONSES = {200: serializers.CaseDetailSerializer}


def _event_response(description: str):
    return {201: OpenApiResponse(serializers.CaseEventSerializer, description=description)}


class CaseViewSet(ApiAuthMixin, viewsets.ReadOnlyModelViewSet):
    """Cases of the user's teams (all cases for admins), with workflow actions."""

    pagination_class = CasePagination
    filter_backends = [DjangoFilterBackend, CaseOrderingFilter]
    filterset_class = CaseFilter
    ordering_fields = ["opened_at", "priority", "resolution_due_at", "updated_at"]
    ordering = ["-opened_at"]

    def get_queryset(self) -> QuerySet[Case]:
        queryset = Case.objects.select_related("team", "assignee", "customer", "topic")
        if self.action == "list":
            queryset = queryset.annotate(
                resolution_due_sort=Coalesce("resolution_due_at", Value(_NO_DUE_TIME))
            )
        else:
            queryset = queryset.select_related("root_cause", "trigger_feedback")
        return cases_visible_to(
            self.request.user, queryset, inline_team_ids=self.action == "list"
        )

    def get_serializer_class(self):
        if self.action == "list":
            return serializers.CaseListSerializer
        return serializers.CaseDetailSerializer

    def filter_queryset(self, queryset):
        # Filters and ordering apply to the list only, so an action finds its
        # case whatever the query string contains.
        if self.action != "list":
            return queryset
        return super().filter_queryset(queryset)

    def retrieve(self, request: Request, *args, **kwargs) -> Response:
        return Response(self._detail(self.get_object()))

    def _detail(self, case: Case) -> dict:
        """Serialize a case with its timeline and the customer's history.

        A case the user can no longer see, such as one a lead moved to a
        team they do not belong to, gets the list fields only.
        """
        visible = (
            self.get_queryset()
            .prefetch_related(
                "trigger_feedback__topics",
                "events__actor",
                Prefetch(
                    "follow_ups", queryset=FollowUp.objects.order_by("due_at", "pk")
                ),
            )
            .filter(pk=case.pk)
            .first()
        )
        if visible is None:
            return serializers.CaseListSerializer(case).data
        case = visible
        context = self.get_serializer_context()
        if case.customer_id is not None:
            context["customer_feedback"] = list(
                Feedback.objects.filter(customer_id=case.customer_id)
                .prefetch_related("topics")
                .order_by("-occurred_at", "-pk")[:CUSTOMER_FEEDBACK_LIMIT]
            )
            context["customer_cases"] = list(
                cases_visible_to(
                    self.request.user, Case.objects.filter(customer_id=case.customer_id)
                ).order_by("-opened_at", "-pk")
            )
        return serializers.CaseDetailSerializer(case, context=context).data

    def _input(self, serializer_class) -> dict:
        serializer = serializer_class(data=self.request.data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    @extend_schema(request=serializers.AssignInputSerializer, responses=_CASE_RESPONSES)
    @action(detail=True, methods=["post"])
    def assign(self, request: Request, pk=None) -> Response:
        """Assign the case to a member of its team, or unassign with null."""
        case = self.get_object()
        data = self._input(serializers.AssignInputSerializer)
        case = workflow.case_assign_to(case=case, actor=request.user, assignee=data["assignee"])
        return Response(self._detail(case))

    @extend_schema(request=serializers.TransitionInputSerializer, responses=_CASE_RESPONSES)
    @action(detail=True, methods=["post"])
    def transition(self, request: Request, pk=None) -> Response:
        """Move the case to another state; 409 names the allowed next states."""
        case = self.get_object()
        data = self._input(serializers.TransitionInputSerializer)
        case = workflow.case_transition(
            case=case,
            actor=request.user,
            to_state=data["to_state"],
            root_cause=data.get("root_cause"),
            resolution_note=data["resolution_note"],
        )
        return Response(self._detail(case))

    @extend_schema(
        request=serializers.CommentInputSerializer,
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
        responses=_event_response("The comment added to the timeline."),
    )
    @action(detail=True, methods=["post"])
    @idempotent
    def comment(self, request: Request, pk=None) -> Response:
        """Add an internal note or a reply to the customer."""
        case = self.get_object()
        data = self._input(serializers.CommentInputSerializer)
        event = workflow.case_comment(case=case, actor=request.user, **data)
        return Response(
            serializers.CaseEventSerializer(event).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(
        request=serializers.ContactInputSerializer,
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
        responses=_event_response("The contact attempt added to the timeline."),
    )
    @action(detail=True, methods=["post"])
    @idempotent
    def contact(self, request: Request, pk=None) -> Response:
        """Record an attempt to reach the customer."""
        case = self.get_object()
        data = self._input(serializers.ContactInputSerializer)
        event = workflow.case_contact(case=case, actor=request.user, **data)
        return Response(
            serializers.CaseEventSerializer(event).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(
        request=serializers.CustomerReplyInputSerializer,
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
        responses=_event_response("The customer's reply added to the timeline."),
    )
    @action(detail=True, methods=["post"], url_path="customer-reply")
    @idempotent
    def customer_reply(self, request: Request, pk=None) -> Response:
        """Record the customer's reply; a waiting case resumes to in_progress."""
        case = self.get_object()
        data = self._input(serializers.CustomerReplyInputSerializer)
        event = workflow.case_customer_replied(case=case, actor=request.user, **data)
        return Response(
            serializers.CaseEventSerializer(event).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(request=serializers.PriorityInputSerializer, responses=_CASE_RESPONSES)
    @action(detail=True, methods=["post"])
    def priority(self, request: Request, pk=None) -> Response:
        """Change the priority; leads and admins only."""
        case = self.get_object()
        data = self._input(serializers.PriorityInputSerializer)
        case = workflow.case_change_priority(
            case=case, actor=request.user, priority=int(data["priority"])
        )
        return Response(self._detail(case))

    @extend_schema(request=serializers.MoveInputSerializer, responses=_CASE_RESPONSES)
    @action(detail=True, methods=["post"])
    def move(self, request: Request, pk=None) -> Response:
        """Move the case to another team with a reason; leads and admins only."""
        case = self.get_object()
        data = self._input(serializers.MoveInputSerializer)
        case = workflow.case_move_team(
            case=case, actor=request.user, team=data["team"], reason=data["reason"]
        )
        return Response(self._detail(case))

    @extend_schema(request=serializers.MergeInputSerializer, responses=_CASE_RESPONSES)
    @action(detail=True, methods=["post"])
    def merge(self, request: Request, pk=None) -> Response:
        """Merge the case (open, resolved or closed) into another open case
        of the same customer; leads of both teams and admins only."""
        case = self.get_object()
        data = self._input(serializers.MergeInputSerializer)
        into = cases_visible_to(request.user).filter(pk=data["into"]).first()
        if into is None:
            raise DomainError(
                f'Case "{data["into"]}" not found: pass the id of an open case '
                "of the same customer.",
                details={"into": data["into"]},
            )
        case = workflow.case_merge(case=case, actor=request.user, into=into)
        return Response(self._detail(case))


# Admin configuration


class AdminModelViewSet(ApiAuthMixin, viewsets.ModelViewSet):
    permission_classes = [IsOscmAdmin]

    def perform_destroy(self, instance) -> None:
        try:
            instance.delete()
        except ProtectedError:
            raise DomainError(
                f"{instance._meta.verbose_name.capitalize()} '{instance}' is still used "
                "by cases and cannot be deleted; deactivate it instead.",
                status=409,
            ) from None


class TeamViewSet(AdminModelViewSet):
    queryset = Team.objects.prefetch_related("members__user").order_by("name")
    serializer_class = serializers.TeamSerializer


class TeamMemberViewSet(AdminModelViewSet):
    queryset = TeamMember.objects.select_related("user").order_by("team_id", "pk")
    serializer_class = serializers.TeamMemberSerializer
    filterset_fields = ["team", "user", "role"]


class CaseRuleViewSet(AdminModelViewSet):
    queryset = CaseRule.objects.order_by("position", "pk")
    serializer_class = serializers.CaseRuleSerializer


class RoutingRuleViewSet(AdminModelViewSet):
    queryset = RoutingRule.objects.order_by("position", "pk")
    serializer_class = serializers.RoutingRuleSerializer


class SlaPolicyViewSet(AdminModelViewSet):
    queryset = SlaPolicy.objects.order_by("position", "pk")
    serializer_class = serializers.SlaPolicySerializer


class RootCauseViewSet(AdminModelViewSet):
    """Root causes: every signed-in user reads them to resolve cases, only
    admins change them."""

    queryset = RootCause.objects.order_by("name")
    serializer_class = serializers.RootCauseSerializer
    permission_classes = [ReadAnyWriteAdmin]
    filterset_fields = ["is_active"]


# Authentication


class TokenObtainView(APIView):
    """Exchange a username and password for an API token.

    Failed attempts are limited per username and per client IP; past the
    limit the endpoint returns 429 with Retry-After.
    """

    authentication_classes: list = []
    permission_classes = [permissions.AllowAny]

    @extend_schema(
        request=AuthTokenSerializer,
        responses={
            200: inline_serializer("TokenResponse", {"token": drf_serializers.CharField()}),
            400: OpenApiResponse(description="Wrong username or password."),
            429: OpenApiResponse(description="Too many failed attempts; see Retry-After."),
        },
        auth=[],
    )
    def post(self, request: Request) -> Response:
        username = str(request.data.get("username", ""))
        ip = client_ip(request)
        retry_after = login_rate_limiter.retry_after(username=username, ip=ip)
        if retry_after:
            return too_many_attempts(retry_after)
        serializer = AuthTokenSerializer(data=request.data, context={"request": request})
        if not serializer.is_valid():
            login_rate_limiter.record_failure(username=username, ip=ip)
            raise drf_serializers.ValidationError(serializer.errors)
        token, _ = Token.objects.get_or_create(user=serializer.validated_data["user"])
        return Response({"token": token.key})
