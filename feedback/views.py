"""Workspace pages of the feedback app: the dashboard and the feedback explorer.

The dashboard is open to every signed-in user, as the metrics API is:
metrics are not scoped to teams. Its case figures (SLA compliance, recovery,
loop closure) and action verdicts count only the cases and actions the user
may see.

The explorer lists feedback rows with their comments. Admins and leads see
all feedback, because leads plan fixes across segments that no single team
owns. Agents see the feedback of customers who have a case in one of their
teams, which is what the case page already shows them as customer history.
"""

import csv
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, time, timedelta

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.functions import TruncMonth, TruncWeek
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from actions.selectors import team_figures
from actions.services import actions_visible_to
from cases.models import Case, TeamMember
from cases.permissions import cases_visible_to, user_is_admin, user_team_ids
from cases.views import query_string_without
from oscm import charts
from oscm.dates import filter_date_validators

from .metrics import METRIC_KINDS, Z_95, metric_summary_from_counts
from .models import Feedback, MetricRollup, Topic
from .selectors import metric_summary

DEFAULT_RANGE_DAYS = 182
TOP_TOPICS = 8
RECENT_VERDICTS = 20
EXPLORER_PAGE_SIZE = 50
# Rows the CSV export reads from the database at a time.
EXPORT_CHUNK_SIZE = 2000

KIND_TITLES = {
    "nps": gettext_lazy("NPS"),
    "csat": gettext_lazy("CSAT (top-2-box %)"),
    "ces": gettext_lazy("CES (mean, 7 = very easy)"),
    "rating": gettext_lazy("Star rating (top-2-box %)"),
}
# The range each score can take, which bounds the chart's axis.
KIND_RANGES = {"nps": (-100, 100), "csat": (0, 100), "ces": (1, 7), "rating": (0, 100)}
_TRUNCATE = {"week": TruncWeek, "month": TruncMonth}


def filter_date_field(label: str) -> forms.DateField:
    """Return an optional date filter within the bounds of oscm.dates."""
    return forms.DateField(
        required=False, label=label, validators=filter_date_validators()
    )


class DashboardFilterForm(forms.Form):
    since = filter_date_field(gettext_lazy("From"))
    until = filter_date_field(gettext_lazy("To"))
    by = forms.ChoiceField(
        choices=[("week", gettext_lazy("Week")), ("month", gettext_lazy("Month"))],
        required=False,
        label=gettext_lazy("Period"),
    )
    touchpoint = forms.CharField(
        required=False, max_length=50, label=gettext_lazy("Touchpoint")
    )
    topic = forms.ChoiceField(required=False, label=gettext_lazy("Topic"))
    source = forms.ChoiceField(required=False, label=gettext_lazy("Source"))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        topics = (
            Topic.objects.filter(is_active=True)
            .order_by("name")
            .values_list("slug", "name")
        )
        self.fields["topic"].choices = [("", _("Any")), *topics]
        self.fields["source"].choices = [("", _("Any")), *Feedback.Source.choices]

    def clean(self) -> dict:
        cleaned = super().clean()
        today = timezone.now().date()
        cleaned["until"] = cleaned.get("until") or today
        cleaned["since"] = cleaned.get("since") or cleaned["until"] - timedelta(
            days=DEFAULT_RANGE_DAYS
        )
        cleaned["by"] = cleaned.get("by") or "week"
        if cleaned["since"] > cleaned["until"]:
            raise forms.ValidationError(
                _("The start date is after the end date: swap them.")
            )
        return cleaned


def _chart(*, name: str, title: str, svg: str, columns: list, rows: list) -> dict:
    """Bundle a chart with the table of its numbers, the same rows the CSV has."""
    return {
        "name": name,
        "title": title,
        "svg": mark_safe(svg),
        "columns": columns,
        "rows": rows,
    }


def _day_bounds(since: date, until: date) -> tuple[datetime, datetime]:
    """Return the UTC datetimes of the inclusive day range, end exclusive."""
    start = datetime.combine(since, time.min, tzinfo=UTC)
    return start, datetime.combine(until + timedelta(days=1), time.min, tzinfo=UTC)


def _metric_charts(filters: dict) -> tuple[list[dict], dict[str, dict]]:
    """Return one chart per metric kind and the overall summary of each."""
    result, overall = [], {}
    for kind in METRIC_KINDS:
        summary = metric_summary(kind=kind, **filters)
        overall[kind] = summary
        points, rows = [], []
        for period in summary["periods"]:
            margin = period["margin"]
            score = period["score"]
            low = high = None
            if margin is not None and score is not None:
                # The interval cannot leave the scale, such as -100..100 for NPS.
                bottom, top = KIND_RANGES[kind]
                low = round(max(score - margin, bottom), 2)
                high = round(min(score + margin, top), 2)
            points.append(
                charts.Point(
                    label=period["period"],
                    value=score,
                    low=low,
                    high=high,
                    n=period["n"],
                )
            )
            rows.append([period["period"], period["n"], score, margin, low, high])
        title = str(KIND_TITLES[kind])
        result.append(
            {
                **_chart(
                    name=kind,
                    title=title,
                    svg=charts.line_chart(
                        title=title, points=points, y_range=KIND_RANGES[kind]
                    ),
                    columns=[
                        _("Period"),
                        "n",
                        _("Score"),
                        _("Margin (95%)"),
                        _("Low"),
                        _("High"),
                    ],
                    rows=rows,
                ),
                "summary": summary,
            }
        )
    return result, overall


def _topic_impact(*, kind: str, overall: dict, filters: dict) -> dict:
    """Rank topics by how far they pull the overall score down.

    A topic's impact is its gap to the overall score weighted by its share
    of responses: (topic score - overall score) * topic n / overall n, in
    the score's unit. The overall score would rise by about that much if
    the topic scored like the rest.
    """
    rollups = MetricRollup.objects.filter(kind=kind).exclude(topic_key=0)
    if filters.get("touchpoint"):
        rollups = rollups.filter(touchpoint=filters["touchpoint"])
    if filters.get("source"):
        rollups = rollups.filter(source=filters["source"])
    rollups = rollups.filter(day__gte=filters["since"], day__lte=filters["until"])
    counts: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for row in (
        rollups.values("topic_key", "score").annotate(total=Sum("count")).order_by()
    ):
        counts[row["topic_key"]][row["score"]] += row["total"]

    names = dict(Topic.objects.filter(pk__in=list(counts)).values_list("pk", "name"))
    ranked = []
    if overall["n"] and overall["score"] is not None:
        for topic_id, topic_counts in counts.items():
            summary = metric_summary_from_counts(kind=kind, counts=topic_counts)
            if not summary["n"] or summary["score"] is None:
                continue
            impact = (summary["score"] - overall["score"]) * summary["n"] / overall["n"]
            ranked.append(
                (round(impact, 2), names.get(topic_id, str(topic_id)), summary)
            )
    ranked.sort(key=lambda item: item[0])
    worst = [item for item in ranked if item[0] < 0][:TOP_TOPICS]
    title = _("Topics pulling %(metric)s down") % {"metric": KIND_TITLES[kind]}
    return _chart(
        name="topics",
        title=title,
        svg=charts.bar_chart(
            title=title,
            bars=[charts.Bar(label=name, value=impact) for impact, name, _s in worst],
        ),
        columns=[_("Topic"), "n", _("Score"), _("Overall score"), _("Impact")],
        rows=[
            [name, summary["n"], summary["score"], overall["score"], impact]
            for impact, name, summary in worst
        ],
    )


def _sla_compliance(*, cases: QuerySet[Case], filters: dict) -> dict:
    """Chart the share of cases resolved by their resolution due time, per period."""
    start, end = _day_bounds(filters["since"], filters["until"])
    resolved = cases.filter(
        resolved_at__gte=start,
        resolved_at__lt=end,
        resolution_due_at__isnull=False,
        merged_into__isnull=True,
    )
    rows_by_period = (
        resolved.annotate(period=_TRUNCATE[filters["by"]]("resolved_at"))
        .values("period")
        .annotate(
            total=Count("pk"),
            within=Count("pk", filter=Q(resolved_at__lte=F("resolution_due_at"))),
        )
        .order_by("period")
    )
    points, rows = [], []
    for row in rows_by_period:
        label = row["period"].date().isoformat()
        share = row["within"] / row["total"] * 100
        margin = Z_95 * (share / 100 * (1 - share / 100) / row["total"]) ** 0.5 * 100
        low, high = max(share - margin, 0), min(share + margin, 100)
        points.append(
            charts.Point(
                label=label,
                value=round(share, 1),
                low=round(low, 1),
                high=round(high, 1),
                n=row["total"],
            )
        )
        rows.append(
            [label, row["total"], row["within"], round(share, 1), round(margin, 1)]
        )
    title = _("SLA compliance: cases resolved within the due time (%)")
    chart = _chart(
        name="sla",
        title=title,
        svg=charts.line_chart(title=title, points=points, y_range=(0, 100)),
        columns=[
            _("Period"),
            _("Resolved"),
            _("Within due time"),
            _("Share %"),
            _("Margin (95%)"),
        ],
        rows=rows,
    )
    total = sum(row[1] for row in rows)
    within = sum(row[2] for row in rows)
    chart["total"] = {
        "n": total,
        "within": within,
        "share": round(within / total * 100, 1) if total else None,
    }
    return chart


def _recovery_table(*, cases: QuerySet[Case], filters: dict) -> dict:
    start, end = _day_bounds(filters["since"], filters["until"])
    figures = team_figures(cases=cases, since=start, until=end, by="team")
    rows = []
    for group in [*figures["groups"], figures["total"]]:
        rows.append(
            [
                group["label"] if group["label"] != "all" else _("All teams"),
                group["recovery"]["recovered"],
                group["recovery"]["answered"],
                group["recovery"]["rate"],
                group["loop_closure"]["contacted_within_48h"],
                group["loop_closure"]["opened"],
                group["loop_closure"]["rate"],
                group["median_hours_to_first_contact"],
                group["median_hours_to_resolution"],
            ]
        )
    return {
        "name": "recovery",
        "title": _("Recovery and closing the loop"),
        "columns": [
            _("Team"),
            _("Recovered"),
            _("Answered follow-ups"),
            _("Recovery rate %"),
            _("Contacted within 48 h"),
            _("Opened"),
            _("Loop closed within 48 h %"),
            _("Median hours to first contact"),
            _("Median hours to resolution"),
        ],
        "rows": rows,
        "total": figures["total"],
    }


def _verdict_table(user) -> dict:
    actions = (
        actions_visible_to(user)
        .filter(measured_at__isnull=False)
        .select_related("team")
        .order_by("-measured_at", "-pk")[:RECENT_VERDICTS]
    )
    rows = []
    for action in actions:
        measurement = action.measurement or {}
        before = measurement.get("before") or {}
        after = measurement.get("after") or {}
        rows.append(
            [
                action.title,
                action.team.name,
                measurement.get("kind", action.metric_kind),
                before.get("score"),
                before.get("n"),
                after.get("score"),
                after.get("n"),
                measurement.get("difference"),
                measurement.get("p_value"),
                action.get_verdict_display(),
            ]
        )
    return {
        "name": "actions",
        "title": _("Before and after: verdicts of finished actions"),
        "columns": [
            _("Action"),
            _("Team"),
            _("Metric"),
            _("Before"),
            _("n before"),
            _("After"),
            _("n after"),
            _("Difference"),
            _("p-value"),
            _("Verdict"),
        ],
        "rows": rows,
    }


class _Echo:
    """A file-like object whose write returns the line, for streaming CSV."""

    def write(self, value: str) -> str:
        return value


def _csv_safe(value: object) -> object:
    """Quote a cell that a spreadsheet would run as a formula."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv_response(
    *, filename: str, columns: list, rows: Iterable[list]
) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        yield writer.writerow([str(column) for column in columns])
        for row in rows:
            yield writer.writerow([_csv_safe(cell) for cell in row])

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """Show NPS, CSAT, CES and rating over time, the topics pulling them down,
    SLA compliance, recovery and the verdicts of finished actions.

    ``?format=csv&chart=NAME`` downloads the numbers of one chart.
    """
    form = DashboardFilterForm(request.GET or None)
    if request.GET and not form.is_valid():
        return render(
            request,
            "feedback/dashboard.html",
            {"form": form, "sections": []},
            status=400,
        )
    if not request.GET:
        form = DashboardFilterForm({})
        form.is_valid()
    data = form.cleaned_data
    filters = {
        "by": data["by"],
        "touchpoint": data["touchpoint"] or None,
        "topic": data["topic"] or None,
        "source": data["source"] or None,
        "since": data["since"],
        "until": data["until"],
    }
    metric_sections, overall = _metric_charts(filters)
    impact_kind = request.GET.get("impact_kind")
    if impact_kind not in METRIC_KINDS:
        impact_kind = max(METRIC_KINDS, key=lambda kind: overall[kind]["n"])
    cases = cases_visible_to(request.user)
    sections = [
        *metric_sections,
        _topic_impact(kind=impact_kind, overall=overall[impact_kind], filters=filters),
        _sla_compliance(cases=cases, filters=filters),
        _recovery_table(cases=cases, filters=filters),
        _verdict_table(request.user),
    ]
    if request.GET.get("format") == "csv":
        chart_name = request.GET.get("chart", "")
        section = next(
            (section for section in sections if section["name"] == chart_name), None
        )
        if section is None:
            names = ", ".join(section["name"] for section in sections)
            return HttpResponse(
                _("Chart %(chart)s not found: use one of %(names)s.")
                % {"chart": chart_name, "names": names},
                status=400,
                content_type="text/plain; charset=utf-8",
            )
        return _csv_response(
            filename=f"oscm-{chart_name}-{data['since']}-{data['until']}.csv",
            columns=section["columns"],
            rows=section["rows"],
        )
    return render(
        request,
        "feedback/dashboard.html",
        {
            "form": form,
            "sections": sections,
            "impact_kind": impact_kind,
            "kinds": [(kind, KIND_TITLES[kind]) for kind in METRIC_KINDS],
            "query": query_string_without(request, "format", "chart"),
        },
    )


# Explorer


class ExplorerFilterForm(forms.Form):
    q = forms.CharField(required=False, max_length=200, label=gettext_lazy("Text"))
    kind = forms.ChoiceField(required=False, label=gettext_lazy("Kind"))
    source = forms.ChoiceField(required=False, label=gettext_lazy("Source"))
    score_min = forms.IntegerField(required=False, label=gettext_lazy("Score from"))
    score_max = forms.IntegerField(required=False, label=gettext_lazy("Score to"))
    sentiment = forms.ChoiceField(required=False, label=gettext_lazy("Sentiment"))
    topic = forms.ChoiceField(required=False, label=gettext_lazy("Topic"))
    touchpoint = forms.CharField(
        required=False, max_length=50, label=gettext_lazy("Touchpoint")
    )
    customer = forms.CharField(
        required=False, max_length=200, label=gettext_lazy("Customer id")
    )
    since = filter_date_field(gettext_lazy("From"))
    until = filter_date_field(gettext_lazy("To"))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        any_choice = ("", _("Any"))
        self.fields["kind"].choices = [any_choice, *Feedback.Kind.choices]
        self.fields["source"].choices = [any_choice, *Feedback.Source.choices]
        self.fields["sentiment"].choices = [
            any_choice,
            *Feedback.SentimentLabel.choices,
        ]
        topics = Topic.objects.order_by("name").values_list("slug", "name")
        self.fields["topic"].choices = [any_choice, *topics]


def feedback_visible_to(user) -> QuerySet[Feedback]:
    """Filter feedback as the module docstring describes: all for admins and leads,
    the feedback of their teams' case customers for agents."""
    if user_is_admin(user) or user_team_ids(user, role=TeamMember.Role.LEAD):
        return Feedback.objects.all()
    customers = (
        cases_visible_to(user).filter(customer__isnull=False).values("customer_id")
    )
    return Feedback.objects.filter(customer_id__in=customers)


def _explorer_queryset(user, data: dict) -> QuerySet[Feedback]:
    feedback = feedback_visible_to(user)
    if data.get("q"):
        feedback = feedback.filter(comment__icontains=data["q"])
    for field in ("kind", "source", "touchpoint"):
        if data.get(field):
            feedback = feedback.filter(**{field: data[field]})
    if data.get("sentiment"):
        feedback = feedback.filter(sentiment_label=data["sentiment"])
    if data.get("score_min") is not None:
        feedback = feedback.filter(score__gte=data["score_min"])
    if data.get("score_max") is not None:
        feedback = feedback.filter(score__lte=data["score_max"])
    if data.get("topic"):
        feedback = feedback.filter(topics__slug=data["topic"])
    if data.get("customer"):
        feedback = feedback.filter(customer__external_id=data["customer"])
    if data.get("since"):
        feedback = feedback.filter(
            occurred_at__gte=_day_bounds(data["since"], data["since"])[0]
        )
    if data.get("until"):
        feedback = feedback.filter(
            occurred_at__lt=_day_bounds(data["until"], data["until"])[1]
        )
    return feedback.order_by("-occurred_at", "-pk")


def _export_rows(feedback: QuerySet[Feedback]) -> Iterator[list]:
    rows = feedback.select_related("customer").prefetch_related("topics")
    for item in rows.iterator(chunk_size=EXPORT_CHUNK_SIZE):
        yield [
            item.pk,
            item.occurred_at.isoformat(),
            item.kind,
            item.score,
            item.source,
            item.touchpoint,
            item.product,
            item.customer.external_id if item.customer else "",
            item.sentiment,
            item.sentiment_label,
            " ".join(topic.slug for topic in item.topics.all()),
            item.comment,
        ]


@login_required
def explorer(request: HttpRequest) -> HttpResponse:
    """Search and filter the feedback the user may see; ``?format=csv``
    streams every matching row."""
    form = ExplorerFilterForm(request.GET)
    is_valid = form.is_valid()
    # An invalid filter lists and exports nothing, because dropping it would
    # show rows the user filtered out.
    if is_valid:
        feedback = _explorer_queryset(request.user, form.cleaned_data)
    else:
        feedback = Feedback.objects.none()
    if request.GET.get("format") == "csv" and not is_valid:
        return HttpResponse(
            _("Invalid filters, so nothing was exported: fix them and try again.")
            + "\n"
            + form.errors.as_text(),
            status=400,
            content_type="text/plain; charset=utf-8",
        )
    if request.GET.get("format") == "csv":
        return _csv_response(
            filename="oscm-feedback.csv",
            columns=[
                "id",
                "occurred_at",
                "kind",
                "score",
                "source",
                "touchpoint",
                "product",
                "customer",
                "sentiment",
                "sentiment_label",
                "topics",
                "comment",
            ],
            rows=_export_rows(feedback),
        )
    page = Paginator(
        feedback.select_related("customer").prefetch_related("topics"),
        EXPLORER_PAGE_SIZE,
    ).get_page(request.GET.get("page"))
    return render(
        request,
        "feedback/explorer.html",
        {
            "form": form,
            "page": page,
            "query": query_string_without(request, "page", "format"),
        },
        status=200 if is_valid else 400,
    )
