"""Input and output serializers of the actions API."""

from django.contrib.auth import get_user_model
from rest_framework import serializers

from cases.filters import MAX_ID
from cases.models import RootCause, Team
from feedback.metrics import METRIC_KINDS
from feedback.models import Topic
from oscm.dates import filter_date_validators

from .models import Action, ActionEvent
from .selectors import FIGURE_GROUPS


def _invalid_choice(name: str, choices) -> str:
    return f'"{{input}}" is not a valid {name}: use one of {", ".join(choices)}.'


class ActionEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor.username", default=None)

    class Meta:
        model = ActionEvent
        fields = ["id", "kind", "actor", "changes", "body", "created_at"]


class ActionListSerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="team.name")
    team_id = serializers.IntegerField()
    owner = serializers.CharField(source="owner.username")
    topic = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    case_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Action
        fields = [
            "id", "title", "team", "team_id", "owner", "state", "due_date", "topic",
            "touchpoint", "product", "metric_kind", "window_days", "case_count",
            "created_at", "started_at", "done_at", "measure_due_at", "measured_at", "verdict",
        ]  # fmt: skip


class ActionDetailSerializer(ActionListSerializer):
    case_ids = serializers.SerializerMethodField()
    allowed_states = serializers.SerializerMethodField()
    events = ActionEventSerializer(many=True, read_only=True)

    class Meta(ActionListSerializer.Meta):
        fields = ActionListSerializer.Meta.fields + [
            "description", "case_ids", "allowed_states", "measurement", "events",
        ]  # fmt: skip

    def get_case_ids(self, action: Action) -> list[int]:
        return sorted(link.case_id for link in action.actioncase_set.all())

    def get_allowed_states(self, action: Action) -> list[str]:
        from .services import action_allowed_states

        return list(action_allowed_states(action=action))


class ActionCreateSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    team = serializers.PrimaryKeyRelatedField(queryset=Team.objects.all())
    owner = serializers.PrimaryKeyRelatedField(queryset=get_user_model().objects.filter(is_active=True))
    due_date = serializers.DateField(required=False, allow_null=True, default=None)
    topic = serializers.SlugRelatedField(
        slug_field="slug", queryset=Topic.objects.all(), required=False, allow_null=True, default=None
    )
    touchpoint = serializers.CharField(max_length=50, required=False, allow_blank=True, default="")
    product = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    case_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_ID),
        allow_empty=True,
        default=list,
    )
    metric_kind = serializers.ChoiceField(
        choices=METRIC_KINDS, required=False, allow_blank=True, default="",
        error_messages={"invalid_choice": _invalid_choice("metric_kind", METRIC_KINDS)},
    )
    window_days = serializers.IntegerField(min_value=1, max_value=365, required=False, default=None)


class CaseIdsSerializer(serializers.Serializer):
    case_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_ID), allow_empty=False
    )


class ResolveCasesSerializer(serializers.Serializer):
    root_cause = serializers.PrimaryKeyRelatedField(queryset=RootCause.objects.all())
    resolution_note = serializers.CharField()


class TransitionSerializer(serializers.Serializer):
    to_state = serializers.ChoiceField(
        choices=Action.State.values,
        error_messages={"invalid_choice": _invalid_choice("to_state", Action.State.values)},
    )
    resolve_cases = serializers.BooleanField(
        required=False, default=False,
        help_text="With to_state done, also resolve the open linked cases.",
    )
    root_cause = serializers.PrimaryKeyRelatedField(
        queryset=RootCause.objects.all(), required=False, allow_null=True, default=None
    )
    resolution_note = serializers.CharField(required=False, allow_blank=True, default="")

    def validate(self, data):
        if data["resolve_cases"] and data["to_state"] != Action.State.DONE:
            raise serializers.ValidationError(
                {"resolve_cases": "Cases are resolved only when the action moves to done."}
            )
        return data


class TeamFiguresQuerySerializer(serializers.Serializer):
    since = serializers.DateField(
        input_formats=["%Y-%m-%d"], required=False, validators=filter_date_validators()
    )
    until = serializers.DateField(
        input_formats=["%Y-%m-%d"], required=False, validators=filter_date_validators()
    )
    by = serializers.ChoiceField(
        choices=FIGURE_GROUPS, required=False, default="team",
        error_messages={"invalid_choice": _invalid_choice("by", FIGURE_GROUPS)},
    )

    def validate(self, data):
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            raise serializers.ValidationError(
                {"since": f"since {since.isoformat()} is after until {until.isoformat()}: swap them."}
            )
        return data
