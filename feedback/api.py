"""HTTP API views of the feedback app."""

from django.utils import timezone
from rest_framework import serializers, status
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cases.permissions import user_is_admin
from oscm.errors import DomainError

from .intake import InvalidItem, validate_item
from .metrics import METRIC_KINDS
from .models import Feedback
from .selectors import PERIODS, metric_summary
from .services import feedback_ingest


def _invalid_choice(name: str, choices) -> str:
    # DRF fills {input}; the list shows the caller what to send instead.
    return f'"{{input}}" is not a valid {name}: use one of {", ".join(choices)}.'


class _IsoDateField(serializers.DateField):
    """A YYYY-MM-DD date whose error message names the rejected value."""

    def __init__(self, **kwargs):
        super().__init__(input_formats=["%Y-%m-%d"], **kwargs)

    def to_internal_value(self, value):
        try:
            return super().to_internal_value(value)
        except serializers.ValidationError:
            raise serializers.ValidationError(
                f'"{value}" is not a valid date: use YYYY-MM-DD.'
            ) from None


class MetricQuerySerializer(serializers.Serializer):
    """Query parameters of GET /api/v1/metrics/."""

    kind = serializers.ChoiceField(
        choices=METRIC_KINDS,
        error_messages={"invalid_choice": _invalid_choice("kind", METRIC_KINDS)},
    )
    by = serializers.ChoiceField(
        choices=PERIODS,
        required=False,
        error_messages={"invalid_choice": _invalid_choice("by", PERIODS)},
    )
    touchpoint = serializers.CharField(required=False, max_length=50)
    topic = serializers.SlugField(required=False, max_length=50)
    source = serializers.ChoiceField(
        choices=Feedback.Source.values,
        required=False,
        error_messages={
            "invalid_choice": _invalid_choice("source", Feedback.Source.values)
        },
    )
    since = _IsoDateField(required=False)
    until = _IsoDateField(required=False)

    def validate(self, attrs: dict) -> dict:
        since, until = attrs.get("since"), attrs.get("until")
        if since is not None and until is not None and since > until:
            raise serializers.ValidationError(
                {"since": f"since {since} is after until {until}."}
            )
        return attrs


class MetricSummaryView(APIView):
    """Return NPS, CSAT, CES or rating figures summed from the rollup table."""

    def get(self, request: Request) -> Response:
        query = MetricQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        # An unknown topic slug raises DomainError, which the project
        # exception handler turns into a 400 listing the known slugs.
        return Response(metric_summary(**query.validated_data))


# Items accepted in one request; larger loads belong in import_feedback.
MAX_ITEMS_PER_REQUEST = 1000


class CanSubmitFeedback(BasePermission):
    """Admins, and accounts granted ``feedback.add_feedback``: the survey tool,
    review scraper or help desk that feeds OSCM. Agents may not, because new
    feedback opens cases, fills customers' contact details and moves metrics."""

    message = (
        "Submitting feedback needs the 'feedback | feedback | Can add feedback' "
        "permission; ask an admin to grant it to this account."
    )

    def has_permission(self, request, view) -> bool:
        user = request.user
        return user_is_admin(user) or user.has_perm("feedback.add_feedback")


def _has_external_id(item: object) -> bool:
    """Return whether the item names its own external id.

    The number 0 is an id. Blank text is not, because intake strips it to
    nothing."""
    value = item.get("external_id") if isinstance(item, dict) else None
    if value is None or isinstance(value, bool):
        return False
    return bool(str(value).strip())


class FeedbackIntakeView(APIView):
    """Record one feedback object or a list of them.

    Returns 201 with one result per item when every item is valid. When some
    items are invalid it returns 400 with their errors by index, and the
    valid items are stored all the same (their ids are in ``results``).
    Sending an item again returns its stored id as a duplicate. Items
    without an external id are told apart by content and by their position
    among identical items of the request, so two identical anonymous answers
    are two feedback, and retrying the whole request adds nothing.
    """

    permission_classes = [IsAuthenticated, CanSubmitFeedback]

    def post(self, request):
        payload = request.data
        items = payload if isinstance(payload, list) else [payload]
        if not items:
            raise DomainError("The request has no feedback items; send an object or a list.")
        if len(items) > MAX_ITEMS_PER_REQUEST:
            raise DomainError(
                f"The request has {len(items)} items; send at most "
                f"{MAX_ITEMS_PER_REQUEST} per request or use the import_feedback command.",
            )

        valid: list[tuple[int, object]] = []
        errors = []
        now = timezone.now()
        occurrences: dict[str, int] = {}
        for index, item in enumerate(items):
            try:
                feedback = validate_item(item, now=now)
            except InvalidItem as error:
                errors.append({"index": index, "field": error.field, "message": error.message})
                continue
            if not _has_external_id(item):
                seen = occurrences.get(feedback.external_id, 0)
                occurrences[feedback.external_id] = seen + 1
                feedback.external_id = f"{feedback.external_id}:{seen}"
            valid.append((index, feedback))

        result = feedback_ingest(inputs=[feedback for _, feedback in valid])
        results = []
        for position, ((index, _), feedback_id, created) in enumerate(
            zip(valid, result.ids, result.created)
        ):
            if position in result.conflicts:
                message = result.conflicts[position]
                errors.append({"index": index, "field": "external_id", "message": message})
                continue
            status_text = "created" if created else "duplicate"
            results.append({"index": index, "id": feedback_id, "status": status_text})
        errors.sort(key=lambda error: error["index"])
        body = {
            "created": result.created_count,
            "duplicates": result.duplicate_count,
            "rejected": len(errors),
            "results": results,
            "errors": errors,
        }
        return Response(body, status=status.HTTP_400_BAD_REQUEST if errors else status.HTTP_201_CREATED)
