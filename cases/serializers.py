"""Serializers of the case API: case list and detail, workflow action input,
and the admin configuration models."""

from django.contrib.auth import get_user_model
from rest_framework import serializers

from feedback.models import Customer, Feedback, Topic

from .models import (
    Case,
    CaseEvent,
    CaseRule,
    FollowUp,
    Priority,
    RootCause,
    RoutingRule,
    SlaPolicy,
    Team,
    TeamMember,
)

User = get_user_model()


def _invalid_choice(name: str, choices) -> str:
    # DRF fills {input}; the list shows the caller what to send instead.
    return f'"{{input}}" is not a valid {name}: use one of {", ".join(map(str, choices))}.'


def _choice_field(name: str, choices, **kwargs) -> serializers.ChoiceField:
    return serializers.ChoiceField(
        choices=choices,
        error_messages={"invalid_choice": _invalid_choice(name, [c for c, _ in choices])},
        **kwargs,
    )


def _related_field(name: str, queryset, **kwargs) -> serializers.PrimaryKeyRelatedField:
    return serializers.PrimaryKeyRelatedField(
        queryset=queryset,
        error_messages={
            "does_not_exist": f'{name} "{{pk_value}}" not found.',
            "incorrect_type": f"{name} must be an id (integer), not {{data_type}}.",
        },
        **kwargs,
    )


# Nested read-only pieces


class UserBriefSerializer(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "username"]


class TeamBriefSerializer(serializers.ModelSerializer):
    class Meta:
        model = Team
        fields = ["id", "name"]


class TopicBriefSerializer(serializers.ModelSerializer):
    class Meta:
        model = Topic
        fields = ["id", "slug", "name"]


class CustomerBriefSerializer(serializers.ModelSerializer):
    class Meta:
        model = Customer
        fields = ["id", "external_id", "name"]


class RootCauseBriefSerializer(serializers.ModelSerializer):
    class Meta:
        model = RootCause
        fields = ["id", "name"]


# Cases


class CaseListSerializer(serializers.ModelSerializer):
    team = TeamBriefSerializer(read_only=True)
    assignee = UserBriefSerializer(read_only=True)
    customer = CustomerBriefSerializer(read_only=True)
    topic = TopicBriefSerializer(read_only=True)

    class Meta:
        model = Case
        fields = [
            "id",
            "state",
            "priority",
            "is_open",
            "team",
            "assignee",
            "customer",
            "topic",
            "opened_at",
            "updated_at",
            "first_response_at",
            "first_response_due_at",
            "resolution_due_at",
            "is_breached",
        ]


class FeedbackSerializer(serializers.ModelSerializer):
    topics = serializers.SlugRelatedField(slug_field="slug", many=True, read_only=True)

    class Meta:
        model = Feedback
        fields = [
            "id",
            "kind",
            "score",
            "comment",
            "sentiment",
            "sentiment_label",
            "topics",
            "source",
            "touchpoint",
            "occurred_at",
        ]


class CaseBriefSerializer(serializers.ModelSerializer):
    class Meta:
        model = Case
        fields = ["id", "state", "priority", "topic", "team", "opened_at"]


class CaseEventSerializer(serializers.ModelSerializer):
    actor = UserBriefSerializer(read_only=True)

    class Meta:
        model = CaseEvent
        fields = [
            "id",
            "kind",
            "actor",
            "created_at",
            "changes",
            "body",
            "visibility",
            "channel",
            "outcome",
        ]


class FollowUpBriefSerializer(serializers.ModelSerializer):
    class Meta:
        model = FollowUp
        fields = ["id", "state", "due_at", "sent_at", "answered_at"]
        read_only_fields = fields


class CaseDetailSerializer(CaseListSerializer):
    """A case with its trigger feedback, the customer's history, recovery
    and follow-ups, and the timeline. The view passes ``customer_feedback``
    and ``customer_cases`` in the context and prefetches ``follow_ups``, so
    each costs one query."""

    trigger_feedback = FeedbackSerializer(read_only=True)
    root_cause = RootCauseBriefSerializer(read_only=True)
    allowed_states = serializers.SerializerMethodField()
    customer_feedback = serializers.SerializerMethodField()
    customer_cases = serializers.SerializerMethodField()
    timeline = CaseEventSerializer(source="events", many=True, read_only=True)
    follow_ups = FollowUpBriefSerializer(many=True, read_only=True)

    class Meta(CaseListSerializer.Meta):
        fields = CaseListSerializer.Meta.fields + [
            "dedup_key",
            "rule_reason",
            "routing_reason",
            "assignment_reason",
            "root_cause",
            "resolution_note",
            "resolved_at",
            "closed_at",
            "merged_into",
            "sla_paused_at",
            "recovery_score_before",
            "recovery_score_after",
            "is_recovered",
            "follow_ups",
            "allowed_states",
            "trigger_feedback",
            "customer_feedback",
            "customer_cases",
            "timeline",
        ]
        read_only_fields = fields

    def get_allowed_states(self, case: Case) -> list[str]:
        from .workflow import case_allowed_states

        return list(case_allowed_states(case=case))

    def get_customer_feedback(self, case: Case) -> list[dict]:
        rows = self.context.get("customer_feedback", [])
        return FeedbackSerializer(rows, many=True).data

    def get_customer_cases(self, case: Case) -> list[dict]:
        rows = self.context.get("customer_cases", [])
        return CaseBriefSerializer(rows, many=True).data


# Workflow actions: input


class AssignInputSerializer(serializers.Serializer):
    assignee = _related_field(
        "User", User.objects.all(), allow_null=True, help_text="User id, or null to unassign."
    )


class TransitionInputSerializer(serializers.Serializer):
    to_state = _choice_field("state", Case.State.choices)
    root_cause = _related_field(
        "Root cause", RootCause.objects.all(), required=False, allow_null=True
    )
    resolution_note = serializers.CharField(required=False, allow_blank=True, default="")


class CommentInputSerializer(serializers.Serializer):
    body = serializers.CharField()
    visibility = _choice_field(
        "visibility",
        CaseEvent.Visibility.choices,
        required=False,
        default=CaseEvent.Visibility.INTERNAL,
    )


class ContactInputSerializer(serializers.Serializer):
    channel = _choice_field("channel", CaseEvent.Channel.choices)
    outcome = _choice_field("outcome", CaseEvent.Outcome.choices)
    body = serializers.CharField(required=False, allow_blank=True, default="")


class CustomerReplyInputSerializer(serializers.Serializer):
    body = serializers.CharField()
    channel = _choice_field(
        "channel", CaseEvent.Channel.choices, required=False, allow_blank=True, default=""
    )


class PriorityInputSerializer(serializers.Serializer):
    priority = _choice_field("priority", Priority.choices)


class MoveInputSerializer(serializers.Serializer):
    team = _related_field("Team", Team.objects.all())
    reason = serializers.CharField()


class MergeInputSerializer(serializers.Serializer):
    into = serializers.IntegerField(help_text="Id of the open case to merge into.")


# Admin configuration


class TeamMemberSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = TeamMember
        fields = [
            "id",
            "team",
            "user",
            "username",
            "role",
            "is_away",
            "max_open_cases",
            "last_assigned_at",
        ]
        read_only_fields = ["last_assigned_at"]


class TeamSerializer(serializers.ModelSerializer):
    members = TeamMemberSerializer(many=True, read_only=True)

    class Meta:
        model = Team
        fields = ["id", "name", "assignment_strategy", "is_fallback", "calendar", "members"]


class CaseRuleSerializer(serializers.ModelSerializer):
    class Meta:
        model = CaseRule
        fields = [
            "id",
            "position",
            "name",
            "kind",
            "score_min",
            "score_max",
            "sentiment_max",
            "priority",
            "is_active",
        ]


class RoutingRuleSerializer(serializers.ModelSerializer):
    class Meta:
        model = RoutingRule
        fields = ["id", "position", "topic", "touchpoint", "team", "is_active"]


class SlaPolicySerializer(serializers.ModelSerializer):
    class Meta:
        model = SlaPolicy
        fields = [
            "id",
            "position",
            "name",
            "team",
            "priority",
            "topic",
            "first_response_minutes",
            "resolution_minutes",
            "is_fallback",
            "is_active",
        ]


class RootCauseSerializer(serializers.ModelSerializer):
    class Meta:
        model = RootCause
        fields = ["id", "name", "description", "is_active"]
