"""HTTP API of remediation actions and team figures.

Actions are listed and shown to members of their team and to admins, and
any other action returns 404. Creating and changing actions is for the team's
leads and admins (403 for agents), as the services decide.
"""

from datetime import UTC, datetime, time, timedelta

from django.db import transaction
from django.db.models import Prefetch
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action as route
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cases.permissions import cases_visible_to
from oscm.errors import DomainError
from oscm.idempotency.api import IDEMPOTENCY_KEY_PARAMETER, idempotent

from . import serializers, services
from .models import Action, ActionCase, ActionEvent
from .selectors import action_list_for, team_figures

FIGURES_DEFAULT_DAYS = 30


class ActionPagination(PageNumberPagination):
    page_size = 25
    page_size_query_param = "page_size"
    max_page_size = 100


class ActionViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    pagination_class = ActionPagination

    def get_queryset(self):
        actions = action_list_for(actions=services.actions_visible_to(self.request.user))
        if self.action == "list":
            state = self.request.query_params.get("state")
            if state:
                actions = actions.filter(state=state)
            return actions.order_by("-created_at", "-pk")
        return actions.prefetch_related(
            Prefetch("actioncase_set", queryset=ActionCase.objects.only("action_id", "case_id")),
            Prefetch("events", queryset=ActionEvent.objects.select_related("actor")),
        )

    def get_serializer_class(self):
        if self.action == "list":
            return serializers.ActionListSerializer
        return serializers.ActionDetailSerializer

    def _detail(self, pk: int, *, status_code: int = status.HTTP_200_OK, **extra) -> Response:
        action = self.get_queryset().get(pk=pk)
        data = serializers.ActionDetailSerializer(action).data
        return Response({**data, **extra}, status=status_code)

    @extend_schema(
        request=serializers.ActionCreateSerializer,
        responses={201: serializers.ActionDetailSerializer},
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
    )
    @idempotent
    def create(self, request: Request) -> Response:
        query = serializers.ActionCreateSerializer(data=request.data)
        query.is_valid(raise_exception=True)
        action = services.action_create(actor=request.user, **query.validated_data)
        return self._detail(action.pk, status_code=status.HTTP_201_CREATED)

    @extend_schema(request=serializers.TransitionSerializer, responses=serializers.ActionDetailSerializer)
    @route(detail=True, methods=["post"])
    def transition(self, request: Request, pk=None) -> Response:
        """Move the action to ``to_state``; with ``resolve_cases`` on done,
        also resolve the open linked cases in the same transaction."""
        action = self.get_object()
        body = serializers.TransitionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        extra = {}
        with transaction.atomic():
            action = services.action_transition(action=action, actor=request.user, to_state=data["to_state"])
            if data["resolve_cases"]:
                extra["cases"] = services.action_resolve_cases(
                    action=action,
                    actor=request.user,
                    root_cause=_required(data["root_cause"], "root_cause"),
                    resolution_note=data["resolution_note"],
                )
        return self._detail(action.pk, **extra)

    @extend_schema(request=serializers.ResolveCasesSerializer, responses=OpenApiTypes.OBJECT)
    @route(detail=True, methods=["post"], url_path="resolve-cases")
    def resolve_cases(self, request: Request, pk=None) -> Response:
        action = self.get_object()
        body = serializers.ResolveCasesSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        result = services.action_resolve_cases(action=action, actor=request.user, **body.validated_data)
        return Response(result)

    @extend_schema(request=serializers.CaseIdsSerializer, responses=serializers.ActionDetailSerializer)
    @route(detail=True, methods=["post"], url_path="link-cases")
    def link_cases(self, request: Request, pk=None) -> Response:
        action = self.get_object()
        body = serializers.CaseIdsSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        services.action_link_cases(action=action, actor=request.user, **body.validated_data)
        return self._detail(action.pk)


def _required(value, name: str):
    if value is None:
        raise DomainError(
            f"Resolving the cases requires {name}.", details={"missing": [name]}
        )
    return value


class TeamFiguresView(APIView):
    """GET /api/v1/team-figures/?since=&until=&by=team|agent|root_cause|source

    ``since`` and ``until`` are inclusive UTC days; the default is the last
    30 days up to today. Only cases of the user's teams count (all for admins).
    """

    @extend_schema(parameters=[serializers.TeamFiguresQuerySerializer], responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        query = serializers.TeamFiguresQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        today = timezone.now().astimezone(UTC).date()
        until_day = query.validated_data.get("until") or today
        since_day = query.validated_data.get("since") or until_day - timedelta(days=FIGURES_DEFAULT_DAYS - 1)
        since = datetime.combine(since_day, time.min, tzinfo=UTC)
        until = datetime.combine(until_day + timedelta(days=1), time.min, tzinfo=UTC)
        figures = team_figures(
            cases=cases_visible_to(request.user), since=since, until=until, by=query.validated_data["by"]
        )
        return Response(figures)
