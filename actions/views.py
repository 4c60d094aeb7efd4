"""Workspace pages of the actions app: the actions board and the form that
creates an action from cases selected on the lead board.

The board shows each measured action's numbers, and a lead marking an action
done may resolve its open cases in the same step.

Actions outside the user's teams are not listed and their forms return 404;
creating and moving actions follows the rights that actions.services checks.
"""

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from django.views.decorators.http import require_POST

from cases.models import Case, RootCause
from cases.permissions import cases_visible_to, user_leads_team
from cases.views import (
    active_team_members,
    annotate_case_display,
    domain_errors_as_messages,
    parse_ids,
    post_int,
)
from feedback.metrics import METRIC_KINDS
from feedback.models import Topic
from oscm.errors import DomainError
from oscm.idempotency.web import one_time_submission

from . import services
from .models import Action
from .selectors import action_list_for

# The board's columns; not effective sits beside verified because both are
# verdicts of a finished action.
BOARD_COLUMNS = (
    (gettext_lazy("Planned"), (Action.State.PLANNED,)),
    (gettext_lazy("In progress"), (Action.State.IN_PROGRESS,)),
    (gettext_lazy("Done"), (Action.State.DONE,)),
    (gettext_lazy("Verified"), (Action.State.VERIFIED, Action.State.NOT_EFFECTIVE)),
)
STATE_LABELS = {
    Action.State.PLANNED: gettext_lazy("Planned"),
    Action.State.IN_PROGRESS: gettext_lazy("In progress"),
    Action.State.DONE: gettext_lazy("Done"),
    Action.State.VERIFIED: gettext_lazy("Verified"),
    Action.State.NOT_EFFECTIVE: gettext_lazy("Not effective"),
}
VERDICT_LABELS = {
    Action.Verdict.IMPROVED: gettext_lazy("Improved"),
    Action.Verdict.NO_CHANGE: gettext_lazy("No significant change"),
    Action.Verdict.WORSE: gettext_lazy("Worse"),
    Action.Verdict.NOT_ENOUGH_DATA: gettext_lazy("Not enough data"),
}
TRANSITION_LABELS = {
    Action.State.IN_PROGRESS: gettext_lazy("Start"),
    Action.State.DONE: gettext_lazy("Mark done"),
}
# Actions shown per column; older ones stay reachable through the API.
COLUMN_LIMIT = 100


def _measurement_display(measurement: dict) -> dict | None:
    """Pick the numbers of a stored measurement that the board shows, or
    None for an action not measured yet."""
    if not measurement.get("before"):
        return None
    return {
        "sides": [
            (gettext_lazy("Before"), measurement["before"]),
            (gettext_lazy("After"), measurement["after"]),
        ],
        "difference": measurement.get("difference"),
        "difference_margin": measurement.get("difference_margin"),
        "p_value": measurement.get("p_value"),
        "test": measurement.get("test", ""),
        "reason": measurement.get("reason", ""),
    }


@login_required
def board(request: HttpRequest) -> HttpResponse:
    """Show the user's teams' actions in columns by state, with the numbers
    of each measurement."""
    actions = list(
        action_list_for(actions=services.actions_visible_to(request.user))
        .annotate(
            open_case_count=Count(
                "actioncase",
                filter=Q(actioncase__case__is_open=True),
                distinct=True,
            )
        )
        .order_by("due_date", "-created_at", "pk")
    )
    leads_team: dict[int, bool] = {}
    columns = []
    for title, states in BOARD_COLUMNS:
        cards = [action for action in actions if action.state in states][:COLUMN_LIMIT]
        for action in cards:
            if action.team_id not in leads_team:
                leads_team[action.team_id] = user_leads_team(
                    request.user, action.team_id
                )
            action.state_label = STATE_LABELS[action.state]
            action.verdict_label = VERDICT_LABELS.get(action.verdict, "")
            action.result = _measurement_display(action.measurement or {})
            allowed = services.action_allowed_states(action=action)
            action.transitions = [
                (state, TRANSITION_LABELS.get(state, STATE_LABELS[state]))
                for state in allowed
            ]
            action.can_resolve_cases = (
                Action.State.DONE in allowed
                and action.open_case_count > 0
                and leads_team[action.team_id]
            )
        columns.append({"title": title, "actions": cards})
    root_causes = RootCause.objects.filter(is_active=True).order_by("name")
    return render(
        request, "actions/board.html", {"columns": columns, "root_causes": root_causes}
    )


@login_required
@require_POST
@domain_errors_as_messages
@one_time_submission
def transition(request: HttpRequest, pk: int) -> HttpResponse:
    """Move the action to ``to_state``.

    With ``resolve_cases=1`` on a move to done, the action's open cases are
    resolved too, with the posted root cause and note, in one transaction.
    Only leads and admins may resolve them, so for anyone else the action
    stays as it was. Cases the case workflow rejects are listed as warnings.
    """
    action = get_object_or_404(services.actions_visible_to(request.user), pk=pk)
    to_state = request.POST.get("to_state", "")
    resolve_cases = (
        to_state == Action.State.DONE and request.POST.get("resolve_cases") == "1"
    )
    result = None
    if resolve_cases:
        root_cause, resolution_note = _resolution_input(request)
        with transaction.atomic():
            action = services.action_transition(
                action=action, actor=request.user, to_state=to_state
            )
            result = services.action_resolve_cases(
                action=action,
                actor=request.user,
                root_cause=root_cause,
                resolution_note=resolution_note,
            )
    else:
        services.action_transition(action=action, actor=request.user, to_state=to_state)
    messages.success(
        request,
        _("Action %(title)s is now %(state)s.")
        % {"title": action.title, "state": STATE_LABELS.get(to_state, to_state)},
    )
    if result is not None:
        _report_resolved_cases(request, result)
    return redirect("actions_web:board")


def _resolution_input(request: HttpRequest) -> tuple[RootCause, str]:
    root_cause_id = post_int(request, "root_cause")
    root_cause = RootCause.objects.filter(pk=root_cause_id, is_active=True).first()
    if root_cause is None:
        raise DomainError(
            _("Root cause %(id)s not found or inactive: pick an active one.")
            % {"id": root_cause_id}
        )
    resolution_note = request.POST.get("resolution_note", "").strip()
    if not resolution_note:
        raise DomainError(
            _("The resolution note is empty: say what was done for the customers.")
        )
    return root_cause, resolution_note


def _report_resolved_cases(request: HttpRequest, result: dict) -> None:
    if result["resolved"]:
        count = len(result["resolved"])
        messages.success(
            request,
            ngettext(
                "%(count)d open case resolved.", "%(count)d open cases resolved.", count
            )
            % {"count": count},
        )
    for row in result["skipped"]:
        messages.warning(
            request,
            _("Case #%(id)s not resolved: %(reason)s")
            % {"id": row["case_id"], "reason": row["reason"]},
        )


class ActionForm(forms.Form):
    title = forms.CharField(max_length=200, label=gettext_lazy("Title"))
    description = forms.CharField(
        required=False, widget=forms.Textarea, label=gettext_lazy("Description")
    )
    owner = forms.TypedChoiceField(coerce=int, label=gettext_lazy("Owner"))
    due_date = forms.DateField(
        required=False,
        label=gettext_lazy("Due date"),
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    topic = forms.ModelChoiceField(
        queryset=Topic.objects.filter(is_active=True).order_by("name"),
        required=False,
        label=gettext_lazy("Topic"),
    )
    touchpoint = forms.CharField(
        required=False, max_length=50, label=gettext_lazy("Touchpoint")
    )
    product = forms.CharField(
        required=False, max_length=200, label=gettext_lazy("Product")
    )
    metric_kind = forms.ChoiceField(
        required=False,
        choices=[
            ("", gettext_lazy("The kind most cases opened on")),
            *[(kind, kind) for kind in METRIC_KINDS],
        ],
        label=gettext_lazy("Metric to compare"),
    )
    window_days = forms.IntegerField(
        required=False, min_value=1, max_value=365, label=gettext_lazy("Window in days")
    )

    def __init__(self, *args, members, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["owner"].choices = [
            (member.user_id, member.user.get_username()) for member in members
        ]


def _selected_cases(request: HttpRequest, values: list[str]) -> list[Case]:
    ids = sorted(set(parse_ids(values)))
    if not ids:
        raise DomainError(_("No cases selected: tick cases on the team board first."))
    cases = list(
        cases_visible_to(request.user, Case.objects.filter(pk__in=ids))
        .select_related("team", "customer", "topic", "assignee")
        .order_by("pk")
    )
    if len(cases) != len(ids):
        raise Http404(_("Some of the selected cases were not found."))
    return cases


@login_required
@domain_errors_as_messages
@one_time_submission
def new(request: HttpRequest) -> HttpResponse:
    """Create an action for the cases selected on the lead board.

    GET shows the form for the ``case`` ids in the query string; POST calls
    actions.services.action_create, which checks that the user leads the
    cases' team and that every case belongs to it.
    """
    source = request.POST if request.method == "POST" else request.GET
    cases = _selected_cases(request, source.getlist("case"))
    team = cases[0].team
    if any(case.team_id != team.pk for case in cases):
        raise DomainError(
            _("The selected cases belong to different teams: pick cases of one team.")
        )
    if not user_leads_team(request.user, team.pk):
        raise PermissionDenied(
            _("Only leads of the team and admins may create actions.")
        )
    members = active_team_members(team.pk)
    initial = {"owner": request.user.pk, "topic": cases[0].topic_id}
    form = ActionForm(
        request.POST if request.method == "POST" else None,
        members=members,
        initial=initial,
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        action = services.action_create(
            actor=request.user,
            team=team,
            owner=get_user_model().objects.get(pk=data["owner"]),
            title=data["title"],
            description=data["description"],
            due_date=data["due_date"],
            topic=data["topic"],
            touchpoint=data["touchpoint"],
            product=data["product"],
            metric_kind=data["metric_kind"],
            window_days=data["window_days"],
            case_ids=[case.pk for case in cases],
        )
        messages.success(
            request,
            ngettext(
                "Action %(title)s created with %(count)d case.",
                "Action %(title)s created with %(count)d cases.",
                len(cases),
            )
            % {"title": action.title, "count": len(cases)},
        )
        return redirect(reverse("actions_web:board"))
    now = timezone.now()
    for case in cases:
        annotate_case_display(case, now=now)
    return render(
        request,
        "actions/new.html",
        {"form": form, "cases": cases, "team": team},
        status=400 if form.is_bound else 200,
    )
