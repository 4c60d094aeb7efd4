from django.contrib import admin
from django.db.models import Count, Q
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from .models import Case, CaseFeedback, CaseRule, RoutingRule, Team, TeamMember


class FieldHelpTextsMixin:
    """Adds ``field_help_texts`` to the admin form, over the models' own."""

    field_help_texts: dict[str, str] = {}

    def get_form(self, request, obj=None, **kwargs):
        kwargs["help_texts"] = {**self.field_help_texts, **kwargs.get("help_texts", {})}
        return super().get_form(request, obj, **kwargs)


class TeamMemberInline(admin.TabularInline):
    model = TeamMember
    extra = 0
    autocomplete_fields = ["user"]
    fields = ["user", "role", "is_away", "max_open_cases", "last_assigned_at"]
    readonly_fields = ["last_assigned_at"]


@admin.register(Team)
class TeamAdmin(FieldHelpTextsMixin, admin.ModelAdmin):
    list_display = ["name", "assignment_strategy", "is_fallback", "agent_count"]
    list_filter = ["assignment_strategy", "is_fallback"]
    search_fields = ["name"]
    inlines = [TeamMemberInline]

    field_help_texts = {
        "assignment_strategy": (
            "Round-robin gives each new case to the available agent assigned "
            "least recently. Most spare capacity gives it to the agent furthest "
            "below their maximum open cases. Agents who are away, inactive or "
            "at their maximum get no new cases in either mode."
        ),
    }

    def get_queryset(self, request):
        agents = Count("members", filter=Q(members__role=TeamMember.Role.AGENT))
        return super().get_queryset(request).annotate(agent_count=agents)

    @admin.display(description="agents", ordering="agent_count")
    def agent_count(self, team: Team) -> int:
        return team.agent_count


@admin.register(CaseRule)
class CaseRuleAdmin(FieldHelpTextsMixin, admin.ModelAdmin):
    list_display = [
        "name",
        "position",
        "is_active",
        "kind",
        "score_min",
        "score_max",
        "sentiment_max",
        "priority",
    ]
    list_display_links = ["name"]
    list_editable = ["position", "is_active"]
    list_filter = ["kind", "is_active", "priority"]
    ordering = ["position", "id"]
    search_fields = ["name"]

    field_help_texts = {
        "position": (
            "Active rules are tried from the lowest position up; the first "
            "rule the feedback meets opens the case."
        ),
        "kind": "Feedback type the rule applies to.",
        "score_min": "Lowest score that opens a case, inclusive. Blank: no lower bound.",
        "score_max": "Highest score that opens a case, inclusive. Blank: no upper bound.",
        "priority": "Priority of the cases this rule opens.",
        "is_active": "Inactive rules are skipped.",
    }


@admin.register(RoutingRule)
class RoutingRuleAdmin(FieldHelpTextsMixin, admin.ModelAdmin):
    list_display = ["__str__", "position", "is_active", "topic", "touchpoint", "team"]
    list_editable = ["position", "is_active"]
    list_filter = ["team", "is_active", "topic"]
    list_select_related = ["topic", "team"]
    ordering = ["position", "id"]

    field_help_texts = {
        "position": (
            "Active rules are tried from the lowest position up; the first "
            "match picks the team. Cases no rule matches go to the fallback team."
        ),
        "topic": "Match cases on this topic. Blank: any topic.",
        "touchpoint": (
            "Match feedback from this touchpoint, for example website or app, "
            "ignoring case. Blank: any touchpoint."
        ),
        "team": "Team that receives the matching cases.",
    }


class CaseFeedbackInline(admin.TabularInline):
    model = CaseFeedback
    extra = 0
    can_delete = False
    fields = ["feedback_link", "attached_at"]
    readonly_fields = fields
    verbose_name = "attached feedback"
    verbose_name_plural = "attached feedback"

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("feedback")

    @admin.display(description="feedback")
    def feedback_link(self, link: CaseFeedback):
        return _feedback_link(link.feedback)


def _feedback_link(feedback):
    """Link to the feedback's admin page, or plain text if it has none."""
    try:
        url = reverse(
            f"admin:{feedback._meta.app_label}_{feedback._meta.model_name}_change",
            args=[feedback.pk],
        )
    except NoReverseMatch:
        return str(feedback)
    return format_html('<a href="{}">{}</a>', url, feedback)


@admin.register(Case)
class CaseAdmin(FieldHelpTextsMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "state",
        "priority",
        "team",
        "assignee",
        "topic",
        "customer",
        "opened_at",
        "rule",
    ]
    list_filter = ["state", "is_open", "priority", "team", "topic", "rule"]
    list_select_related = ["team", "assignee", "topic", "customer", "rule"]
    search_fields = ["customer__external_id", "customer__email", "customer__name"]
    date_hierarchy = "opened_at"
    ordering = ["-opened_at", "-id"]
    autocomplete_fields = ["assignee"]
    readonly_fields = [
        "is_open",
        "customer",
        "trigger_feedback_link",
        "topic",
        "dedup_key",
        "rule",
        "rule_reason",
        "routing_rule",
        "routing_reason",
        "assignment_reason",
        "opened_at",
        "updated_at",
    ]
    fieldsets = [
        (None, {"fields": ["state", "priority", "team", "assignee", "is_open"]}),
        ("Customer", {"fields": ["customer", "trigger_feedback_link", "topic"]}),
        (
            "Why this case exists",
            {
                "description": (
                    "Written when the case was opened: the case rule that matched "
                    "the feedback, the routing rule that picked the team, and how "
                    "the agent was chosen."
                ),
                "fields": [
                    "rule",
                    "rule_reason",
                    "routing_rule",
                    "routing_reason",
                    "assignment_reason",
                    "dedup_key",
                ],
            },
        ),
        ("Times", {"fields": ["opened_at", "updated_at"]}),
    ]
    inlines = [CaseFeedbackInline]

    field_help_texts = {
        "state": (
            "Resolved and closed cases stop being open: later unhappy feedback "
            "from the same customer on the same topic then opens a new case "
            "instead of attaching here."
        ),
    }

    def save_model(self, request, obj, form, change):
        # is_open drives the one-open-case-per-customer-and-topic rule, so it
        # follows the state picked here.
        obj.is_open = obj.state in Case.OPEN_STATES
        super().save_model(request, obj, form, change)

    def has_add_permission(self, request) -> bool:
        # Cases are opened by the case rules from feedback, never by hand.
        return False

    @admin.display(description="trigger feedback")
    def trigger_feedback_link(self, case: Case):
        return _feedback_link(case.trigger_feedback)
