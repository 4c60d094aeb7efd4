"""Django admin for cases and for the rules, teams and SLA targets behind them.

Access follows the OSCM roles in ``cases.permissions``, not Django's per-model
permissions. Admins (superusers, and staff users in no team) see and configure
everything. Agents and leads with staff status see only their teams' cases,
and only leads get the assign and priority actions. A case outside the user's
teams returns 404, so its existence is not revealed.

State, priority and assignee are read-only on the case page: they change only
through the bulk actions, which call the services in ``cases.workflow`` so
every change is checked and written to the case timeline.
"""

import logging
from collections.abc import Callable
from functools import cache

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import Http404
from django.template import engines
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.timezone import localtime
from django.utils.translation import ngettext

from oscm.errors import DomainError

from .models import (
    BusinessCalendar,
    Case,
    CaseEvent,
    CaseFeedback,
    CaseRule,
    Holiday,
    Priority,
    RootCause,
    RoutingRule,
    SlaPolicy,
    Team,
    TeamMember,
)
from .permissions import cases_visible_to, user_is_admin, user_team_ids
from .selectors import team_agents_with_workload

logger = logging.getLogger(__name__)

# Shared by the intermediate pages of bulk actions here and in feedback.admin.
# Built from a string because the admin has no template directory of its own.
_ACTION_FORM_TEMPLATE = """{% extends "admin/base_site.html" %}
{% load admin_urls l10n %}
{% block breadcrumbs %}<div class="breadcrumbs">
<a href="{% url 'admin:index' %}">Home</a>
&rsaquo; <a href="{% url 'admin:app_list' app_label=opts.app_label %}">{{ opts.app_config.verbose_name }}</a>
&rsaquo; <a href="{% url opts|admin_urlname:'changelist' %}">{{ opts.verbose_name_plural|capfirst }}</a>
&rsaquo; {{ title }}</div>{% endblock %}
{% block content %}
<p>{{ intro }}</p>
<ul>{% for object in queryset %}<li>{{ object }}</li>{% endfor %}</ul>
<form method="post">{% csrf_token %}
<fieldset class="module aligned">{{ form.as_div }}</fieldset>
{% for object in queryset %}<input type="hidden" name="_selected_action" value="{{ object.pk|unlocalize }}">{% endfor %}
<input type="hidden" name="action" value="{{ action }}">
<input type="hidden" name="apply" value="1">
<div class="submit-row"><input type="submit" class="default" value="{{ submit_label }}">
<a href="{% url opts|admin_urlname:'changelist' %}" class="button cancel-link">Cancel</a></div>
</form>
{% endblock %}
"""


@cache
def _action_form_template():
    return engines["django"].from_string(_ACTION_FORM_TEMPLATE)


def render_action_form(
    request,
    model_admin: admin.ModelAdmin,
    *,
    queryset: QuerySet,
    form: forms.Form,
    title: str,
    intro: str,
    submit_label: str,
) -> TemplateResponse:
    """Render the page that collects a bulk action's input before it runs.

    The page posts back to the changelist with the same action, the listed
    objects and ``apply=1``; the action then validates ``form`` and runs.
    """
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": title,
        "intro": intro,
        "queryset": queryset,
        "form": form,
        "action": request.POST["action"],
        "submit_label": submit_label,
    }
    return TemplateResponse(request, _action_form_template(), context)


class AdminOnlyMixin:
    """Limits a model's admin pages to OSCM admins, for configuration models."""

    def has_module_permission(self, request) -> bool:
        return user_is_admin(request.user)

    def has_view_permission(self, request, obj=None) -> bool:
        return user_is_admin(request.user)

    def has_add_permission(self, request, *args) -> bool:
        return user_is_admin(request.user)

    def has_change_permission(self, request, obj=None) -> bool:
        return user_is_admin(request.user)

    def has_delete_permission(self, request, obj=None) -> bool:
        return user_is_admin(request.user)


class HiddenObjectNotFoundMixin:
    """Raise Http404 for an object outside ``get_queryset``.

    Django's admin redirects to the index with a message for a missing
    object; a real 404 tells nothing about objects the user may not see.
    """

    def _require_visible(self, request, object_id: str) -> None:
        if self.get_object(request, unquote(object_id)) is None:
            raise Http404(
                f"{self.opts.verbose_name.capitalize()} {object_id} not found."
            )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        self._require_visible(request, object_id)
        return super().change_view(request, object_id, form_url, extra_context)

    def history_view(self, request, object_id, extra_context=None):
        self._require_visible(request, object_id)
        return super().history_view(request, object_id, extra_context)

    def delete_view(self, request, object_id, extra_context=None):
        self._require_visible(request, object_id)
        return super().delete_view(request, object_id, extra_context)


class RejectForbiddenActionsMixin:
    """Raise PermissionDenied (403) when a user posts an action their permissions hide.

    Django drops such an action with a "No action selected" message; a
    plain 403 makes the refusal explicit.
    """

    def changelist_view(self, request, extra_context=None):
        if request.method == "POST":
            name = request.POST.get("action")
            if name in (self.actions or []) and name not in self.get_actions(request):
                raise PermissionDenied(f"You may not run the action {name!r}.")
        return super().changelist_view(request, extra_context)


def request_team_ids(request, *, role: str | None = None) -> set[int]:
    """Return the ids of the requesting user's teams, queried once a request."""
    cache_name = f"_oscm_team_ids_{role or 'any'}"
    if not hasattr(request, cache_name):
        setattr(request, cache_name, user_team_ids(request.user, role=role))
    return getattr(request, cache_name)


def request_works_cases(request) -> bool:
    """Return whether the user is an admin, or an agent or lead of any team."""
    return user_is_admin(request.user) or bool(request_team_ids(request))


class FieldHelpTextsMixin:
    """Adds ``field_help_texts`` to the admin form, over the models' own."""

    field_help_texts: dict[str, str] = {}

    def get_form(self, request, obj=None, **kwargs):
        kwargs["help_texts"] = {**self.field_help_texts, **kwargs.get("help_texts", {})}
        return super().get_form(request, obj, **kwargs)


def _format_minutes(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    if not hours:
        return f"{rest} min"
    return f"{hours} h {rest} min" if rest else f"{hours} h"


# Configuration: teams, calendars, rules, SLA policies, root causes


class TeamMemberInline(admin.TabularInline):
    model = TeamMember
    extra = 0
    # A plain select, because the user autocomplete would need view rights
    # on the auth.User admin, which staff admins without a team lack.
    fields = ["user", "role", "is_away", "max_open_cases", "last_assigned_at"]
    readonly_fields = ["last_assigned_at"]
    verbose_name = "member"
    verbose_name_plural = (
        "members (leads also assign cases and change priority; only agents "
        "receive new cases automatically)"
    )

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "user":
            kwargs["queryset"] = (
                get_user_model().objects.filter(is_active=True).order_by("username")
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(Team)
class TeamAdmin(AdminOnlyMixin, FieldHelpTextsMixin, admin.ModelAdmin):
    list_display = [
        "name",
        "assignment_strategy",
        "is_fallback",
        "calendar",
        "agent_count",
        "lead_count",
        "away_count",
    ]
    list_filter = ["assignment_strategy", "is_fallback", "calendar"]
    list_select_related = ["calendar"]
    search_fields = ["name"]
    ordering = ["name"]
    fieldsets = [
        (None, {"fields": ["name", "is_fallback"]}),
        (
            "Assignment and working hours",
            {"fields": ["assignment_strategy", "calendar"]},
        ),
    ]
    inlines = [TeamMemberInline]

    field_help_texts = {
        "assignment_strategy": (
            "Round-robin gives each new case to the available agent assigned "
            "least recently. Most spare capacity gives it to the agent furthest "
            "below their maximum open cases. Agents who are away, inactive or "
            "at their maximum get no new cases in either mode."
        ),
        "is_fallback": (
            "Receives every case that no routing rule matches. Exactly one team "
            "should have this set."
        ),
    }

    def get_queryset(self, request):
        members = TeamMember.Role
        return (
            super()
            .get_queryset(request)
            .annotate(
                agent_count=Count("members", filter=Q(members__role=members.AGENT)),
                lead_count=Count("members", filter=Q(members__role=members.LEAD)),
                away_count=Count("members", filter=Q(members__is_away=True)),
            )
        )

    @admin.display(description="agents", ordering="agent_count")
    def agent_count(self, team: Team) -> int:
        return team.agent_count

    @admin.display(description="leads", ordering="lead_count")
    def lead_count(self, team: Team) -> int:
        return team.lead_count

    @admin.display(description="away", ordering="away_count")
    def away_count(self, team: Team) -> int:
        return team.away_count


class HolidayInline(admin.TabularInline):
    model = Holiday
    extra = 1
    fields = ["date", "name"]
    verbose_name_plural = "holidays (no SLA time counts on these dates)"


_WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


@admin.register(BusinessCalendar)
class BusinessCalendarAdmin(AdminOnlyMixin, admin.ModelAdmin):
    list_display = [
        "name",
        "timezone",
        "working_days",
        "day_start",
        "day_end",
        "team_list",
    ]
    search_fields = ["name", "timezone"]
    ordering = ["name"]
    fieldsets = [
        (None, {"fields": ["name", "timezone"]}),
        (
            "Working hours",
            {
                "description": (
                    "SLA targets count only minutes inside these hours on working "
                    "days, in the calendar's time zone."
                ),
                "fields": ["workdays", "day_start", "day_end"],
            },
        ),
    ]
    inlines = [HolidayInline]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("team_set")

    @admin.display(description="working days")
    def working_days(self, calendar: BusinessCalendar) -> str:
        try:
            days = [
                _WEEKDAYS[int(day)]
                for day in calendar.workdays.split(",")
                if day.strip()
            ]
        except (ValueError, IndexError):
            return calendar.workdays
        return ", ".join(days)

    @admin.display(description="teams")
    def team_list(self, calendar: BusinessCalendar) -> str:
        return ", ".join(team.name for team in calendar.team_set.all()) or "-"


@admin.register(CaseRule)
class CaseRuleAdmin(AdminOnlyMixin, FieldHelpTextsMixin, admin.ModelAdmin):
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
class RoutingRuleAdmin(AdminOnlyMixin, FieldHelpTextsMixin, admin.ModelAdmin):
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


@admin.register(SlaPolicy)
class SlaPolicyAdmin(AdminOnlyMixin, FieldHelpTextsMixin, admin.ModelAdmin):
    list_display = [
        "name",
        "position",
        "is_active",
        "team",
        "priority",
        "topic",
        "first_response_target",
        "resolution_target",
        "is_fallback",
    ]
    list_display_links = ["name"]
    list_editable = ["position", "is_active"]
    list_filter = ["is_active", "is_fallback", "team", "priority", "topic"]
    list_select_related = ["team", "topic"]
    ordering = ["position", "id"]
    search_fields = ["name"]
    fieldsets = [
        (None, {"fields": ["name", "position", "is_active", "is_fallback"]}),
        (
            "Which cases",
            {
                "description": (
                    "The policy applies to a case when every condition set here "
                    "holds. A blank condition matches any case."
                ),
                "fields": ["team", "priority", "topic"],
            },
        ),
        (
            "Targets",
            {
                "description": (
                    "Business minutes count only inside the working hours of "
                    "the team's calendar; 480 is one 8-hour working day."
                ),
                "fields": ["first_response_minutes", "resolution_minutes"],
            },
        ),
    ]

    field_help_texts = {
        "position": (
            "Active policies are tried from the lowest position up; the first "
            "one whose conditions all hold sets the case's due times."
        ),
        "is_active": "Inactive policies are skipped.",
        "is_fallback": (
            "Applies when no other active policy matches. Only one policy can "
            "be the fallback."
        ),
        "team": "Apply only to cases of this team. Blank: any team.",
        "priority": "Apply only to cases of this priority. Blank: any priority.",
        "topic": "Apply only to cases on this topic. Blank: any topic.",
    }

    @admin.display(description="first response", ordering="first_response_minutes")
    def first_response_target(self, policy: SlaPolicy) -> str:
        return _format_minutes(policy.first_response_minutes)

    @admin.display(description="resolution", ordering="resolution_minutes")
    def resolution_target(self, policy: SlaPolicy) -> str:
        return _format_minutes(policy.resolution_minutes)


@admin.register(RootCause)
class RootCauseAdmin(AdminOnlyMixin, FieldHelpTextsMixin, admin.ModelAdmin):
    list_display = ["name", "description", "is_active", "case_count"]
    list_editable = ["is_active"]
    list_filter = ["is_active"]
    search_fields = ["name", "description"]
    ordering = ["name"]

    field_help_texts = {
        "name": "Shown to agents when they resolve a case, and in root-cause reports.",
        "description": "When to pick this root cause, in one sentence.",
        "is_active": (
            "Inactive root causes cannot be picked for new resolutions but stay "
            "on the cases already resolved with them."
        ),
    }

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(case_count=Count("case"))

    @admin.display(description="cases", ordering="case_count")
    def case_count(self, root_cause: RootCause) -> int:
        return root_cause.case_count


# Cases


class _CaseInlineMixin:
    """Read-only inline of a case page, which is scoped to the user's teams."""

    extra = 0
    can_delete = False

    def has_view_permission(self, request, obj=None) -> bool:
        return True

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class CaseFeedbackInline(_CaseInlineMixin, admin.TabularInline):
    model = CaseFeedback
    fields = ["feedback_link", "attached_at"]
    readonly_fields = fields
    verbose_name = "attached feedback"
    verbose_name_plural = "attached feedback"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("feedback")

    @admin.display(description="feedback")
    def feedback_link(self, link: CaseFeedback):
        return _feedback_link(link.feedback)


class CaseEventInline(_CaseInlineMixin, admin.TabularInline):
    model = CaseEvent
    fields = [
        "created_at",
        "kind",
        "actor",
        "change_list",
        "body",
        "visibility",
        "channel",
        "outcome",
    ]
    readonly_fields = fields
    ordering = ["created_at", "id"]
    verbose_name = "timeline entry"
    verbose_name_plural = "timeline"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("actor")

    @admin.display(description="changes")
    def change_list(self, event: CaseEvent):
        if not event.changes:
            return "-"
        rows = []
        for field, values in event.changes.items():
            old, new = (
                values
                if isinstance(values, list) and len(values) == 2
                else (None, values)
            )
            rows.append(
                (field, "-" if old is None else old, "-" if new is None else new)
            )
        return format_html_join(mark_safe("<br>"), "{}: {} → {}", rows)


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


class AssignForm(forms.Form):
    assignee = forms.TypedChoiceField(
        coerce=int,
        label="Agent",
        help_text=(
            "Agents of the selected cases' teams, with their open cases. A case "
            "can only go to a member of its own team."
        ),
    )

    def __init__(self, *args, cases: QuerySet[Case], **kwargs):
        super().__init__(*args, **kwargs)
        team_ids = set(cases.values_list("team_id", flat=True))
        choices = []
        for team_id, members in sorted(
            team_agents_with_workload(team_ids=team_ids).items()
        ):
            for member in members:
                user = member.user
                away = ", away" if member.is_away else ""
                label = (
                    f"{user.get_full_name() or user.get_username()} ({member.team}: "
                    f"{member.open_case_count} of {member.max_open_cases} open{away})"
                )
                choices.append((user.pk, label))
        self.fields["assignee"].choices = choices


class PriorityForm(forms.Form):
    priority = forms.TypedChoiceField(
        coerce=int, choices=Priority.choices, label="New priority"
    )


@admin.register(Case)
class CaseAdmin(
    HiddenObjectNotFoundMixin, RejectForbiddenActionsMixin, admin.ModelAdmin
):
    list_display = [
        "id",
        "state",
        "priority",
        "team",
        "assignee",
        "topic",
        "customer",
        "sla_due",
        "is_breached",
        "opened_at",
    ]
    list_filter = [
        "state",
        "priority",
        ("team", admin.RelatedOnlyFieldListFilter),
        ("assignee", admin.RelatedOnlyFieldListFilter),
        "topic",
        "is_breached",
        "is_open",
        "root_cause",
    ]
    list_select_related = ["team", "assignee", "topic", "customer"]
    search_fields = [
        "customer__external_id",
        "customer__email",
        "customer__name",
        "events__body",
    ]
    search_help_text = (
        "Search by the customer's external id, name or email, or by words in "
        "the case's comments and contact notes."
    )
    date_hierarchy = "opened_at"
    ordering = ["-opened_at", "-id"]
    actions = ["assign_to_agent", "change_priority", "close_cases"]
    fieldsets = [
        (
            None,
            {
                "description": (
                    "State, priority and assignee change through the actions of "
                    "the case list, which record every change in the timeline."
                ),
                "fields": ["state", "priority", "team", "assignee", "is_open"],
            },
        ),
        ("Customer", {"fields": ["customer", "trigger_feedback_link", "topic"]}),
        (
            "SLA",
            {
                "fields": [
                    "sla_policy",
                    "first_response_due_at",
                    "first_response_at",
                    "resolution_due_at",
                    "sla_paused_at",
                    "is_breached",
                    "first_response_breached_at",
                    "resolution_breached_at",
                ]
            },
        ),
        ("Resolution", {"fields": ["root_cause", "resolution_note", "merged_into"]}),
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
        ("Times", {"fields": ["opened_at", "updated_at", "resolved_at", "closed_at"]}),
    ]
    readonly_fields = ["trigger_feedback_link"]
    inlines = [CaseFeedbackInline, CaseEventInline]

    # Case pages are view-only for everyone, so no form bypasses the workflow
    # services: has_change_permission returns False.

    def has_module_permission(self, request) -> bool:
        return request_works_cases(request)

    def has_view_permission(self, request, obj=None) -> bool:
        return request_works_cases(request)

    def has_add_permission(self, request) -> bool:
        # Cases are opened by the case rules from feedback, never by hand.
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_work_permission(self, request) -> bool:
        return request_works_cases(request)

    def has_lead_permission(self, request) -> bool:
        if user_is_admin(request.user):
            return True
        return bool(request_team_ids(request, role=TeamMember.Role.LEAD))

    def get_queryset(self, request):
        return cases_visible_to(request.user, super().get_queryset(request))

    @admin.display(description="SLA due", ordering="resolution_due_at")
    def sla_due(self, case: Case):
        due = []
        if (
            case.is_open
            and case.first_response_at is None
            and case.first_response_due_at
        ):
            due.append(("first response", case.first_response_due_at))
        if case.resolution_due_at:
            due.append(("resolution", case.resolution_due_at))
        if not due:
            return "-"
        rows = (
            (label, date_format(localtime(at), "SHORT_DATETIME_FORMAT"))
            for label, at in due
        )
        return format_html_join(mark_safe("<br>"), "{}: {}", rows)

    @admin.display(description="trigger feedback")
    def trigger_feedback_link(self, case: Case):
        return _feedback_link(case.trigger_feedback)

    def _apply_each(
        self, request, queryset, *, done_message: Callable[[int], str], change
    ) -> None:
        """Call ``change(case)`` on every case, reporting each DomainError and going on.

        ``done_message`` gets the count of changed cases and returns the
        success message, so it can pick the singular or plural form.
        """
        done = 0
        for case in queryset.select_related("team").order_by("pk"):
            try:
                change(case)
            except DomainError as error:
                logger.info(
                    "Admin action rejected on case %s: %s",
                    case.pk,
                    error.message,
                    extra={"case_id": case.pk, "actor_id": request.user.pk},
                )
                self.message_user(request, f"{case}: {error.message}", messages.ERROR)
            else:
                done += 1
        if done:
            self.message_user(request, done_message(done), messages.SUCCESS)

    @admin.action(description="Assign selected cases to an agent", permissions=["lead"])
    def assign_to_agent(self, request, queryset):
        from .workflow import case_assign_to

        form = AssignForm(
            request.POST if "apply" in request.POST else None, cases=queryset
        )
        if not form.is_valid():
            return render_action_form(
                request,
                self,
                queryset=queryset,
                form=form,
                title="Assign cases to an agent",
                intro="The selected cases will be assigned to the agent you pick:",
                submit_label="Assign",
            )
        assignee = get_user_model().objects.get(pk=form.cleaned_data["assignee"])
        self._apply_each(
            request,
            queryset,
            done_message=lambda count: ngettext(
                "%(count)d case assigned to %(agent)s.",
                "%(count)d cases assigned to %(agent)s.",
                count,
            )
            % {"count": count, "agent": assignee.get_username()},
            change=lambda case: case_assign_to(
                case=case, actor=request.user, assignee=assignee
            ),
        )
        return None

    @admin.action(
        description="Change the priority of selected cases", permissions=["lead"]
    )
    def change_priority(self, request, queryset):
        from .workflow import case_change_priority

        form = PriorityForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return render_action_form(
                request,
                self,
                queryset=queryset,
                form=form,
                title="Change the priority of cases",
                intro="The selected cases will get the priority you pick:",
                submit_label="Change priority",
            )
        priority = form.cleaned_data["priority"]
        self._apply_each(
            request,
            queryset,
            done_message=lambda count: ngettext(
                "%(count)d case set to priority %(priority)s.",
                "%(count)d cases set to priority %(priority)s.",
                count,
            )
            % {"count": count, "priority": Priority(priority).label},
            change=lambda case: case_change_priority(
                case=case, actor=request.user, priority=priority
            ),
        )
        return None

    @admin.action(description="Close selected resolved cases", permissions=["work"])
    def close_cases(self, request, queryset):
        from .workflow import case_transition

        self._apply_each(
            request,
            queryset,
            done_message=lambda count: ngettext(
                "%(count)d case closed.", "%(count)d cases closed.", count
            )
            % {"count": count},
            change=lambda case: case_transition(
                case=case, actor=request.user, to_state=Case.State.CLOSED
            ),
        )
