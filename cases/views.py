"""Server-rendered workspace pages of the cases app: the agent inbox, the
case page with its workflow forms, and the lead board.

Views parse input, call one workflow service or selector, and render. Every
case query goes through cases_visible_to, so a case outside the user's teams
is a 404. A visible case that the user's role may not change gets the 403
that the workflow service raises; other DomainErrors come back as messages
on the page the form was on.
"""

from collections.abc import Callable
from datetime import datetime
from functools import wraps
from urllib.parse import urlencode, urlsplit, urlunsplit

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, TooManyFieldsSent
from django.core.paginator import Paginator
from django.db.models import F, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import SimpleLazyObject
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_POST

from feedback.models import Feedback, Topic
from oscm.errors import DomainError
from oscm.idempotency.web import one_time_submission

from . import workflow
from .filters import MAX_ID, CaseFilter
from .models import Case, CaseEvent, Priority, RootCause, Team, TeamMember
from .permissions import cases_visible_to, user_is_admin, user_leads_team, user_team_ids
from .selectors import case_list_for_team, team_agents_with_workload

# Model choice labels are plain English strings, so the pages translate
# them through these tables.
STATE_LABELS = {
    Case.State.NEW: gettext_lazy("New"),
    Case.State.ASSIGNED: gettext_lazy("Assigned"),
    Case.State.IN_PROGRESS: gettext_lazy("In progress"),
    Case.State.WAITING: gettext_lazy("Waiting on customer"),
    Case.State.RESOLVED: gettext_lazy("Resolved"),
    Case.State.CLOSED: gettext_lazy("Closed"),
}
PRIORITY_LABELS = {
    Priority.LOW: gettext_lazy("Low"),
    Priority.NORMAL: gettext_lazy("Normal"),
    Priority.HIGH: gettext_lazy("High"),
    Priority.URGENT: gettext_lazy("Urgent"),
}
EVENT_LABELS = {
    CaseEvent.Kind.OPENED: gettext_lazy("Opened"),
    CaseEvent.Kind.FEEDBACK_ATTACHED: gettext_lazy("Feedback attached"),
    CaseEvent.Kind.STATE_CHANGED: gettext_lazy("State changed"),
    CaseEvent.Kind.ASSIGNED: gettext_lazy("Assigned"),
    CaseEvent.Kind.PRIORITY_CHANGED: gettext_lazy("Priority changed"),
    CaseEvent.Kind.TEAM_CHANGED: gettext_lazy("Moved to another team"),
    CaseEvent.Kind.COMMENT: gettext_lazy("Comment"),
    CaseEvent.Kind.CONTACT: gettext_lazy("Customer contact attempt"),
    CaseEvent.Kind.MERGED: gettext_lazy("Merged"),
    CaseEvent.Kind.SLA_WARNING: gettext_lazy("SLA warning"),
    CaseEvent.Kind.SLA_BREACH: gettext_lazy("SLA breach"),
    CaseEvent.Kind.CUSTOMER_ERASED: gettext_lazy("Customer data erased"),
    CaseEvent.Kind.FEEDBACK_MOVED: gettext_lazy("Feedback moved to another case"),
    CaseEvent.Kind.TOPICS_MIXED: gettext_lazy("Feedback of other topics kept"),
}
CHANNEL_LABELS = {
    CaseEvent.Channel.EMAIL: gettext_lazy("Email"),
    CaseEvent.Channel.PHONE: gettext_lazy("Phone"),
    CaseEvent.Channel.CHAT: gettext_lazy("Chat"),
    CaseEvent.Channel.SMS: gettext_lazy("SMS"),
    CaseEvent.Channel.OTHER: gettext_lazy("Other"),
}
OUTCOME_LABELS = {
    CaseEvent.Outcome.REACHED: gettext_lazy("Reached the customer"),
    CaseEvent.Outcome.NO_ANSWER: gettext_lazy("No answer"),
    CaseEvent.Outcome.LEFT_MESSAGE: gettext_lazy("Left a message"),
    CaseEvent.Outcome.WRONG_CONTACT: gettext_lazy("Wrong contact details"),
}
VISIBILITY_LABELS = {
    CaseEvent.Visibility.INTERNAL: gettext_lazy("Internal note"),
    CaseEvent.Visibility.CUSTOMER: gettext_lazy("Reply to the customer"),
}
TRANSITION_LABELS = {
    Case.State.NEW: gettext_lazy("Reopen as new"),
    Case.State.ASSIGNED: gettext_lazy("Mark assigned"),
    Case.State.IN_PROGRESS: gettext_lazy("Start work"),
    Case.State.WAITING: gettext_lazy("Wait on customer"),
    Case.State.CLOSED: gettext_lazy("Close"),
}

INBOX_PAGE_SIZES = (25, 50, 100)
TEAM_PAGE_SIZE = 50
# Latest feedback of the customer shown on the case page, as in the API.
CUSTOMER_FEEDBACK_LIMIT = 50
INBOX_SCOPES = {
    "default": gettext_lazy("Mine and unassigned"),
    "mine": gettext_lazy("Mine"),
    "unassigned": gettext_lazy("Unassigned"),
    "all": gettext_lazy("All of my teams"),
}
INBOX_SORTS = {
    "due": (
        gettext_lazy("Due soonest"),
        [F("resolution_due_at").asc(nulls_last=True), "pk"],
    ),
    "priority": (gettext_lazy("Priority"), ["-priority", "opened_at", "pk"]),
    "newest": (gettext_lazy("Newest"), ["-opened_at", "-pk"]),
    "oldest": (gettext_lazy("Oldest"), ["opened_at", "pk"]),
}
# States in which the workflow requires an assignee, as case_transition checks.
_STATES_WITH_ASSIGNEE = (
    Case.State.ASSIGNED,
    Case.State.IN_PROGRESS,
    Case.State.WAITING,
)


# Shared by the workspace views of every app


def workspace_context(request: HttpRequest) -> dict:
    """Add ``workspace_is_lead`` to every template, computed only when used."""

    def leads_any_team() -> bool:
        user = request.user
        if not user.is_authenticated:
            return False
        return user_is_admin(user) or bool(
            user_team_ids(user, role=TeamMember.Role.LEAD)
        )

    return {"workspace_is_lead": SimpleLazyObject(leads_any_team)}


def domain_errors_as_messages(
    view: Callable[..., HttpResponse],
) -> Callable[..., HttpResponse]:
    """Turn a DomainError from a POST view into a 404, a 403 or a message.

    404 stays a 404 so a hidden case is never revealed, 403 is the role
    check, and any other error is shown as a message on the page the form
    was on (the ``next`` field, else the Referer, else the inbox).
    """

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except DomainError as error:
            if error.status == 404:
                raise Http404(error.message) from None
            if error.status == 403:
                raise PermissionDenied(error.message) from None
            messages.error(request, error.message)
            return redirect(_back_url(request))

    return wrapper


def on_site_url(request: HttpRequest, target: str) -> str | None:
    """Return ``target`` when it leads to this site, else None.

    A ``next`` field or Referer that names another host (including the
    ``//host`` and ``/\\host`` forms that browsers read as one) would make
    the redirect an open redirect.
    """
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return None


def _back_url(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.headers.get("Referer", "")
    return _local_url(request, target)


def _local_url(request: HttpRequest, target: str) -> str:
    if on_site_url(request, target) is None:
        return reverse("cases_web:inbox")
    # A Referer is an absolute URL, so only its path and query are kept.
    parts = urlsplit(target)
    return urlunsplit(("", "", parts.path or "/", parts.query, parts.fragment))


def post_int(request: HttpRequest, name: str, *, required: bool = True) -> int | None:
    """Read an integer form field, raising DomainError when it is invalid."""
    value = request.POST.get(name, "").strip()
    if not value and not required:
        return None
    try:
        return int(value)
    except ValueError:
        raise DomainError(
            _("%(field)s is missing or not a number: pick a value and submit again.")
            % {"field": name}
        ) from None


def parse_ids(values: list[str]) -> list[int]:
    """Return the values that are ids (ASCII digits from 1 to MAX_ID), in
    order, and skip the others."""
    ids = []
    for value in values:
        if value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_ID:
            ids.append(int(value))
    return ids


def format_duration(seconds: float) -> str:
    """Format a span as days, hours and minutes, largest unit first."""
    minutes = int(abs(seconds) // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return _("%(days)dd %(hours)dh") % {"days": days, "hours": hours}
    if hours:
        return _("%(hours)dh %(minutes)dm") % {"hours": hours, "minutes": minutes}
    return _("%(minutes)dm") % {"minutes": minutes}


def annotate_case_display(case: Case, *, now: datetime) -> Case:
    """Set the translated labels and the SLA countdown on a case, in memory.

    The countdown runs to the first-response due time until the first
    contact, then to the resolution due time. A paused clock (waiting on
    the customer) shows as paused.
    """
    case.state_label = STATE_LABELS.get(case.state, case.state)
    case.priority_label = PRIORITY_LABELS.get(case.priority, case.priority)
    case.sla_kind = case.sla_text = ""
    case.sla_breached = case.is_breached
    case.sla_due_at = None
    if not case.is_open:
        return case
    if case.first_response_at is None and case.first_response_due_at is not None:
        case.sla_kind, case.sla_due_at = _("first response"), case.first_response_due_at
    elif case.resolution_due_at is not None:
        case.sla_kind, case.sla_due_at = _("resolution"), case.resolution_due_at
    if case.sla_due_at is None:
        return case
    if case.sla_paused_at is not None:
        case.sla_text = _("paused")
        return case
    seconds_left = (case.sla_due_at - now).total_seconds()
    if seconds_left < 0:
        case.sla_breached = True
        case.sla_text = _("overdue by %(time)s") % {
            "time": format_duration(seconds_left)
        }
    else:
        case.sla_text = _("%(time)s left") % {"time": format_duration(seconds_left)}
    return case


def _page_size(request: HttpRequest) -> int:
    try:
        size = int(request.GET.get("page_size", INBOX_PAGE_SIZES[0]))
    except ValueError:
        return INBOX_PAGE_SIZES[0]
    return size if size in INBOX_PAGE_SIZES else INBOX_PAGE_SIZES[0]


def query_string_without(request: HttpRequest, *names: str) -> str:
    """Return the request's query string without the given parameters, for
    paging and download links that add their own."""
    query = request.GET.copy()
    for name in names:
        query.pop(name, None)
    return query.urlencode()


def active_team_members(team_id: int) -> list[TeamMember]:
    return list(
        TeamMember.objects.filter(team_id=team_id, user__is_active=True)
        .select_related("user")
        .order_by("user__username")
    )


# Inbox


def _inbox_queryset(
    request: HttpRequest,
) -> tuple[QuerySet[Case], CaseFilter, str, str]:
    user = request.user
    cases = Case.objects.select_related("team", "assignee", "customer", "topic")
    scope = request.GET.get("scope", "default")
    if scope == "mine":
        cases = cases.filter(assignee_id=user.pk)
    elif scope == "unassigned":
        cases = cases.filter(assignee__isnull=True)
    elif scope != "all":
        scope = "default"
        cases = cases.filter(Q(assignee_id=user.pk) | Q(assignee__isnull=True))
    # Without a state filter the inbox lists open cases only.
    if not request.GET.getlist("state"):
        cases = cases.filter(is_open=True)
    # Team ids as constants let PostgreSQL read a team's cases in the
    # order of an index (case_team_opened, case_team_priority_opened) and
    # stop at the page size, for one more query.
    visible = cases_visible_to(user, cases, inline_team_ids=True)
    filterset = CaseFilter(request.GET, queryset=visible)
    sort = request.GET.get("sort", "due")
    if sort not in INBOX_SORTS:
        sort = "due"
    return filterset.qs.order_by(*INBOX_SORTS[sort][1]), filterset, scope, sort


@login_required
def inbox(request: HttpRequest) -> HttpResponse:
    """List the user's cases and their teams' unassigned cases.

    Costs a fixed number of queries whatever the page size: the user's
    team ids, one count, one page with its related rows, and the topics of
    the filter.
    """
    cases, filterset, scope, sort = _inbox_queryset(request)
    page = Paginator(cases, _page_size(request)).get_page(request.GET.get("page"))
    now = timezone.now()
    for case in page.object_list:
        annotate_case_display(case, now=now)
    return render(
        request,
        "cases/inbox.html",
        {
            "page": page,
            "filter_form": filterset.form,
            "scope": scope,
            "scopes": INBOX_SCOPES.items(),
            "sort": sort,
            "sorts": [(key, label) for key, (label, _order) in INBOX_SORTS.items()],
            "states": STATE_LABELS.items(),
            "selected_states": request.GET.getlist("state"),
            "priorities": PRIORITY_LABELS.items(),
            "selected_priorities": request.GET.getlist("priority"),
            "topics": Topic.objects.filter(is_active=True).order_by("name"),
            "selected_topic": request.GET.get("topic", ""),
            "breached": request.GET.get("breached", ""),
            "page_size": page.paginator.per_page,
            "page_sizes": INBOX_PAGE_SIZES,
            "query": query_string_without(request, "page"),
        },
    )


# Case page


def _visible_case(
    request: HttpRequest, pk: int, queryset: QuerySet[Case] | None = None
) -> Case:
    return get_object_or_404(cases_visible_to(request.user, queryset), pk=pk)


def _possible_transitions(case: Case) -> list[str]:
    """Return the next states of the transition table that the case can take
    now; resolving has its own form because it needs a root cause."""
    states = []
    for state in workflow.case_allowed_states(case=case):
        if state == Case.State.RESOLVED:
            continue
        if state in _STATES_WITH_ASSIGNEE and case.assignee_id is None:
            continue
        if state == Case.State.NEW and case.assignee_id is not None:
            continue
        states.append(state)
    return states


# Change fields that store a plain list, not an [old, new] pair. The event
# body already names their values.
_LIST_CHANGES = frozenset({"feedback_ids"})


def _change_pairs(event: CaseEvent) -> list[tuple[str, object, object]]:
    return [
        (field, values[0], values[1])
        for field, values in event.changes.items()
        if isinstance(values, list) and len(values) == 2 and field not in _LIST_CHANGES
    ]


def _change_value_names(events: list[CaseEvent]) -> dict[str, dict]:
    """Map each change field that stores an id or a code to the names of its
    values, with one query per kind of id the events contain."""
    ids: dict[str, set[int]] = {"team": set(), "assignee": set(), "root_cause": set()}
    for event in events:
        for field, old, new in _change_pairs(event):
            if field in ids:
                ids[field].update(
                    value for value in (old, new) if isinstance(value, int)
                )
    names: dict[str, dict] = {"state": STATE_LABELS, "priority": PRIORITY_LABELS}
    if ids["team"]:
        teams = Team.objects.filter(pk__in=ids["team"])
        names["team"] = dict(teams.values_list("pk", "name"))
    if ids["assignee"]:
        users = get_user_model().objects.filter(pk__in=ids["assignee"])
        names["assignee"] = {user.pk: user.get_username() for user in users}
    if ids["root_cause"]:
        root_causes = RootCause.objects.filter(pk__in=ids["root_cause"])
        names["root_cause"] = dict(root_causes.values_list("pk", "name"))
    return names


def _describe_events(events: list[CaseEvent]) -> list[CaseEvent]:
    """Set the translated labels and the change rows of timeline events, with
    names in place of the ids and codes that the changes store."""
    names = _change_value_names(events)

    def shown(field: str, value: object) -> object:
        field_names = names.get(field)
        if field_names is None or not isinstance(value, int | str):
            return value
        return str(field_names.get(value, value))

    for event in events:
        event.kind_label = EVENT_LABELS.get(event.kind, event.kind)
        event.channel_label = CHANNEL_LABELS.get(event.channel, event.channel)
        event.outcome_label = OUTCOME_LABELS.get(event.outcome, event.outcome)
        event.visibility_label = VISIBILITY_LABELS.get(
            event.visibility, event.visibility
        )
        event.change_rows = [
            (field, shown(field, old), shown(field, new))
            for field, old, new in _change_pairs(event)
        ]
    return events


def _customer_history(request: HttpRequest, case: Case) -> tuple[list, list]:
    if case.customer_id is None:
        return [], []
    feedback = list(
        Feedback.objects.filter(customer_id=case.customer_id)
        .prefetch_related("topics")
        .order_by("-occurred_at", "-pk")[:CUSTOMER_FEEDBACK_LIMIT]
    )
    other_cases = list(
        cases_visible_to(
            request.user, Case.objects.filter(customer_id=case.customer_id)
        )
        .select_related("team", "topic")
        .order_by("-opened_at", "-pk")
    )
    now = timezone.now()
    return feedback, [annotate_case_display(other, now=now) for other in other_cases]


@login_required
def case_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Show a case with its trigger feedback, timeline, customer history and
    the workflow forms the user may use.

    The lead tools post to this page with an ``operation`` field (move or
    merge), which hands the request to case_move or case_merge.
    """
    if request.method == "POST":
        return _case_page_operation(request, pk)
    case = _visible_case(
        request,
        pk,
        Case.objects.select_related(
            "team",
            "assignee",
            "customer",
            "topic",
            "root_cause",
            "trigger_feedback",
            "sla_policy",
        ).prefetch_related("trigger_feedback__topics"),
    )
    annotate_case_display(case, now=timezone.now())
    is_lead = user_leads_team(request.user, case.team_id)
    feedback, other_cases = _customer_history(request, case)
    events = _describe_events(list(case.events.select_related("actor")))
    members = []
    if is_lead and case.is_open:
        members = active_team_members(case.team_id)
    transitions = [
        (state, TRANSITION_LABELS.get(state, STATE_LABELS[state]))
        for state in _possible_transitions(case)
    ]
    move_teams = []
    if is_lead and case.is_open:
        move_teams = list(Team.objects.exclude(pk=case.team_id).order_by("name"))
    return render(
        request,
        "cases/case_detail.html",
        {
            "case": case,
            "trigger": case.trigger_feedback,
            "is_lead": is_lead,
            "can_take": case.is_open and case.assignee_id is None,
            "can_resolve": Case.State.RESOLVED
            in workflow.case_allowed_states(case=case),
            "transitions": transitions,
            "members": members,
            "move_teams": move_teams,
            "can_merge": is_lead and case.merged_into_id is None,
            "merge_targets": [
                other for other in other_cases if other.is_open and other.pk != case.pk
            ],
            "root_causes": RootCause.objects.filter(is_active=True).order_by("name"),
            "events": events,
            "customer_feedback": feedback,
            "customer_cases": other_cases,
            "follow_ups": list(case.follow_ups.order_by("-created_at", "-pk")),
            "priorities": PRIORITY_LABELS.items(),
            "channels": CHANNEL_LABELS.items(),
            "outcomes": OUTCOME_LABELS.items(),
            "visibilities": VISIBILITY_LABELS.items(),
        },
    )


def _case_action(
    operation: Callable[[HttpRequest, Case], str],
) -> Callable[..., HttpResponse]:
    """Wrap a workflow form handler: POST only, signed in, visible case,
    DomainError handling, a success message and a redirect to the case."""

    @login_required
    @require_POST
    @domain_errors_as_messages
    @one_time_submission
    @wraps(operation)
    def view(request: HttpRequest, pk: int) -> HttpResponse:
        case = _visible_case(request, pk)
        messages.success(request, operation(request, case))
        next_url = on_site_url(request, request.POST.get("next", ""))
        return redirect(next_url or reverse("cases_web:case", args=[case.pk]))

    return view


@_case_action
def case_transition(request: HttpRequest, case: Case) -> str:
    to_state = request.POST.get("to_state", "")
    workflow.case_transition(case=case, actor=request.user, to_state=to_state)
    return _("Case #%(id)s is now %(state)s.") % {
        "id": case.pk,
        "state": STATE_LABELS.get(to_state, to_state),
    }


@_case_action
def case_resolve(request: HttpRequest, case: Case) -> str:
    root_cause_id = post_int(request, "root_cause", required=False)
    root_cause = (
        RootCause.objects.filter(pk=root_cause_id).first() if root_cause_id else None
    )
    workflow.case_transition(
        case=case,
        actor=request.user,
        to_state=Case.State.RESOLVED,
        root_cause=root_cause,
        resolution_note=request.POST.get("resolution_note", ""),
    )
    return _("Case #%(id)s is resolved.") % {"id": case.pk}


@_case_action
def case_take(request: HttpRequest, case: Case) -> str:
    workflow.case_take(case=case, actor=request.user)
    return _("Case #%(id)s is assigned to you.") % {"id": case.pk}


@login_required
@require_POST
@domain_errors_as_messages
def case_move(request: HttpRequest, pk: int) -> HttpResponse:
    """Move the case to another team with a reason; leads and admins only.

    Goes back to the case page when the user still sees the case, else to
    the team board, because a lead may move a case out of their teams.
    """
    case = _visible_case(request, pk)
    team_id = post_int(request, "team")
    team = Team.objects.filter(pk=team_id).first()
    if team is None:
        raise DomainError(
            _("Team %(id)s not found: pick a team from the list.") % {"id": team_id}
        )
    workflow.case_move_team(
        case=case, actor=request.user, team=team, reason=request.POST.get("reason", "")
    )
    messages.success(
        request,
        _("Case #%(id)s is moved to team %(team)s.")
        % {"id": case.pk, "team": team.name},
    )
    if cases_visible_to(request.user, Case.objects.filter(pk=case.pk)).exists():
        return redirect("cases_web:case", pk=case.pk)
    return redirect("cases_web:team")


@login_required
@require_POST
@domain_errors_as_messages
def case_merge(request: HttpRequest, pk: int) -> HttpResponse:
    """Merge the case into another open case of the same customer and show
    that case; leads of both teams and admins only."""
    case = _visible_case(request, pk)
    into_id = post_int(request, "into")
    into = cases_visible_to(request.user, Case.objects.filter(pk=into_id)).first()
    if into is None:
        raise DomainError(
            _(
                "Case #%(id)s not found: enter the number of an open case of the "
                "same customer."
            )
            % {"id": into_id}
        )
    workflow.case_merge(case=case, actor=request.user, into=into)
    messages.success(
        request,
        _("Case #%(id)s is merged into case #%(into)s.")
        % {"id": case.pk, "into": into.pk},
    )
    return redirect("cases_web:case", pk=into.pk)


# The lead tools that post to the case page, by their ``operation`` field.
CASE_PAGE_OPERATIONS = {"move": case_move, "merge": case_merge}


@domain_errors_as_messages
@one_time_submission
def _case_page_operation(request: HttpRequest, pk: int) -> HttpResponse:
    _visible_case(request, pk)
    operation = request.POST.get("operation", "")
    view = CASE_PAGE_OPERATIONS.get(operation)
    if view is None:
        raise DomainError(
            _(
                "'%(operation)s' is not an operation of the case page: use move or merge."
            )
            % {"operation": operation}
        )
    return view(request, pk)


def _assignee(request: HttpRequest) -> object | None:
    assignee_id = post_int(request, "assignee", required=False)
    if assignee_id is None:
        return None
    assignee = get_user_model().objects.filter(pk=assignee_id).first()
    if assignee is None:
        raise DomainError(
            _("User %(id)s not found: pick a member of the team.") % {"id": assignee_id}
        )
    return assignee


@_case_action
def case_assign(request: HttpRequest, case: Case) -> str:
    assignee = _assignee(request)
    workflow.case_assign_to(case=case, actor=request.user, assignee=assignee)
    if assignee is None:
        return _("Case #%(id)s is unassigned.") % {"id": case.pk}
    return _("Case #%(id)s is assigned to %(user)s.") % {
        "id": case.pk,
        "user": assignee.get_username(),
    }


@_case_action
def case_priority(request: HttpRequest, case: Case) -> str:
    priority = post_int(request, "priority")
    workflow.case_change_priority(case=case, actor=request.user, priority=priority)
    return _("The priority of case #%(id)s is now %(priority)s.") % {
        "id": case.pk,
        "priority": PRIORITY_LABELS.get(priority, priority),
    }


@_case_action
def case_comment(request: HttpRequest, case: Case) -> str:
    workflow.case_comment(
        case=case,
        actor=request.user,
        body=request.POST.get("body", ""),
        visibility=request.POST.get("visibility", CaseEvent.Visibility.INTERNAL),
    )
    return _("Comment added.")


@_case_action
def case_contact(request: HttpRequest, case: Case) -> str:
    workflow.case_contact(
        case=case,
        actor=request.user,
        channel=request.POST.get("channel", ""),
        outcome=request.POST.get("outcome", ""),
        body=request.POST.get("body", ""),
    )
    return _("Contact attempt logged.")


@_case_action
def case_customer_reply(request: HttpRequest, case: Case) -> str:
    workflow.case_customer_replied(
        case=case,
        actor=request.user,
        body=request.POST.get("body", ""),
        channel=request.POST.get("channel", ""),
    )
    return _("The customer's reply is recorded.")


# Lead board


def _led_teams(user) -> QuerySet[Team]:
    if user_is_admin(user):
        return Team.objects.order_by("name")
    return Team.objects.filter(
        pk__in=user_team_ids(user, role=TeamMember.Role.LEAD)
    ).order_by("name")


@login_required
def team_board(request: HttpRequest) -> HttpResponse:
    """Show a lead the team queue, each agent's workload and the breaches.

    Only leads (of the chosen team) and admins see it; others get 403.
    """
    teams = list(_led_teams(request.user))
    if not teams:
        raise PermissionDenied(_("Only team leads and admins see the team board."))
    team = next(
        (team for team in teams if str(team.pk) == request.GET.get("team")), teams[0]
    )

    queue = case_list_for_team(team=team)
    only_breached = request.GET.get("breached") == "true"
    if only_breached:
        queue = queue.filter(is_breached=True)
    page = Paginator(queue, TEAM_PAGE_SIZE).get_page(request.GET.get("page"))
    now = timezone.now()
    for case in page.object_list:
        annotate_case_display(case, now=now)
    agents = team_agents_with_workload(team_ids=[team.pk]).get(team.pk, [])
    for agent in agents:
        agent.is_full = agent.open_case_count >= agent.max_open_cases
    members = active_team_members(team.pk)
    return render(
        request,
        "cases/team_board.html",
        {
            "teams": teams,
            "team": team,
            "page": page,
            "agents": agents,
            "members": members,
            "only_breached": only_breached,
            "breached_count": case_list_for_team(team=team)
            .filter(is_breached=True)
            .count(),
            "unassigned_count": case_list_for_team(team=team)
            .filter(assignee__isnull=True)
            .count(),
            "query": query_string_without(request, "page"),
        },
    )


def _bulk_max_cases() -> int | None:
    """Return how many cases one bulk form may send, or None for no limit.

    Django rejects a body with more fields than DATA_UPLOAD_MAX_NUMBER_FIELDS;
    the form's other fields (CSRF token, next, assignee, operation and
    submission token) take their share of that limit.
    """
    max_fields = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
    return None if max_fields is None else max_fields - 5


def _too_many_cases_message() -> str:
    return _(
        "Too many cases selected: a bulk change takes at most %(max)d cases. "
        "Select fewer cases and submit again."
    ) % {"max": _bulk_max_cases()}


@csrf_exempt
@login_required
def team_bulk(request: HttpRequest) -> HttpResponse:
    """Reassign the selected cases, or open the action form for them.

    The CSRF middleware reads the body before any view, and a body with too
    many fields made it return Django's bare 400 page. So this view is exempt
    from the middleware, turns that error into a message, and runs the same
    CSRF check itself (csrf_protect) before it changes anything.
    """
    try:
        # The first read parses the body and raises past the field limit.
        request.POST.getlist("case")
    except TooManyFieldsSent:
        messages.error(request, _too_many_cases_message())
        return redirect(_local_url(request, request.headers.get("Referer", "")))
    return _team_bulk(request)


@csrf_protect
@require_POST
@domain_errors_as_messages
@one_time_submission
def _team_bulk(request: HttpRequest) -> HttpResponse:
    if not _led_teams(request.user).exists():
        raise PermissionDenied(_("Only team leads and admins reassign cases."))
    case_ids = parse_ids(request.POST.getlist("case"))
    if not case_ids:
        raise DomainError(_("No cases selected: tick the cases first."))
    max_cases = _bulk_max_cases()
    if max_cases is not None and len(case_ids) > max_cases:
        raise DomainError(_too_many_cases_message())
    if request.POST.get("operation") == "action":
        query = urlencode([("case", pk) for pk in case_ids])
        return redirect(f"{reverse('actions_web:new')}?{query}")

    assignee = _assignee(request)
    cases = cases_visible_to(
        request.user, Case.objects.filter(pk__in=case_ids)
    ).order_by("pk")
    done = 0
    for case in cases:
        try:
            workflow.case_assign_to(case=case, actor=request.user, assignee=assignee)
            done += 1
        except DomainError as error:
            messages.error(request, error.message)
    if done:
        messages.success(
            request,
            ngettext(
                "%(count)d case reassigned.", "%(count)d cases reassigned.", done
            )
            % {"count": done},
        )
    return redirect(_back_url(request))
