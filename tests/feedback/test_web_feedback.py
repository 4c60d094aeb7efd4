"""Workspace pages of the feedback app: the dashboard, the explorer and the
server-side charts."""

import csv
import io
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from cases.models import TeamMember
from feedback.models import Feedback
from feedback.rollups import rollup_rebuild
from feedback.selectors import metric_summary
from oscm import charts
from tests.cases.factories import (
    CaseFactory,
    FeedbackFactory,
    TeamFactory,
    TeamMemberFactory,
    UserFactory,
)


@pytest.fixture
def scored_feedback(db):
    now = timezone.now()
    for index, score in enumerate([0, 3, 6, 7, 8, 9, 10, 10, 9, 2] * 3):
        FeedbackFactory(
            kind=Feedback.Kind.NPS, score=score, occurred_at=now - timedelta(days=index)
        )
    rollup_rebuild()


@pytest.fixture
def lead(db):
    return TeamMemberFactory(
        user=UserFactory(username="lead"), role=TeamMember.Role.LEAD
    ).user


def _csv_rows(response) -> list[list[str]]:
    body = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(body)))


def test_dashboard_renders_charts(client, lead, scored_feedback):
    client.force_login(lead)
    response = client.get(reverse("feedback_web:dashboard"))
    assert response.status_code == 200
    assert response.content.count(b"<svg") >= 4
    assert b'class="band"' in response.content


def test_dashboard_csv_matches_metric_summary(client, lead, scored_feedback):
    client.force_login(lead)
    today = timezone.now().date()
    since = today - timedelta(days=60)
    response = client.get(
        reverse("feedback_web:dashboard"),
        {
            "format": "csv",
            "chart": "nps",
            "since": since.isoformat(),
            "until": today.isoformat(),
        },
    )
    assert response.status_code == 200
    rows = _csv_rows(response)
    expected = metric_summary(kind="nps", by="week", since=since, until=today)[
        "periods"
    ]
    assert [row[0] for row in rows[1:]] == [period["period"] for period in expected]
    assert [int(row[1]) for row in rows[1:]] == [period["n"] for period in expected]
    assert [float(row[2]) for row in rows[1:]] == [
        period["score"] for period in expected
    ]


def test_dashboard_unknown_chart_is_400(client, lead):
    client.force_login(lead)
    response = client.get(
        reverse("feedback_web:dashboard"), {"format": "csv", "chart": "nope"}
    )
    assert response.status_code == 400


def test_dashboard_rejects_reversed_dates(client, lead):
    client.force_login(lead)
    response = client.get(
        reverse("feedback_web:dashboard"),
        {"since": "2026-02-01", "until": "2026-01-01"},
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    "dates",
    [
        {"until": "9999-12-31"},
        {"since": "9999-12-31", "until": "9999-12-31"},
        {"until": "0001-01-05"},
    ],
)
def test_dashboard_extreme_dates_are_400(client, lead, dates):
    client.force_login(lead)
    response = client.get(reverse("feedback_web:dashboard"), dates)
    assert response.status_code == 400


def test_dashboard_requires_login(client):
    response = client.get(reverse("feedback_web:dashboard"))
    assert response.status_code == 302


def test_explorer_lead_sees_all_feedback(client, lead):
    FeedbackFactory(comment="parcel late")
    client.force_login(lead)
    response = client.get(reverse("feedback_web:explorer"), {"q": "parcel"})
    assert response.status_code == 200
    assert b"parcel late" in response.content


def test_explorer_agent_sees_own_team_customers_only(client, db):
    team = TeamFactory()
    agent = TeamMemberFactory(team=team, user=UserFactory(username="agent")).user
    own = CaseFactory(
        team=team, trigger_feedback=FeedbackFactory(comment="own customer", score=1)
    )
    CaseFactory(trigger_feedback=FeedbackFactory(comment="other customer", score=1))
    client.force_login(agent)
    response = client.get(reverse("feedback_web:explorer"))
    assert b"own customer" in response.content
    assert b"other customer" not in response.content
    assert own.customer is not None


def test_explorer_csv_streams_and_escapes_formulas(client, lead):
    FeedbackFactory(comment='=HYPERLINK("x")')
    client.force_login(lead)
    response = client.get(reverse("feedback_web:explorer"), {"format": "csv"})
    assert response.streaming
    rows = _csv_rows(response)
    assert rows[0][0] == "id"
    assert rows[1][-1] == '\'=HYPERLINK("x")'


@pytest.mark.parametrize(
    "query",
    [
        {"kind": "nps", "score_max": "abc"},
        {"kind": "nps", "until": "9999-12-31"},
        {"kind": "nps", "since": "9999-12-31"},
    ],
)
def test_explorer_invalid_filter_lists_nothing(client, lead, query):
    FeedbackFactory(kind=Feedback.Kind.RATING, score=1, comment="rating row")
    client.force_login(lead)
    response = client.get(reverse("feedback_web:explorer"), query)
    assert response.status_code == 400
    assert b"rating row" not in response.content


def test_explorer_csv_with_invalid_filter_is_400(client, lead):
    FeedbackFactory(kind=Feedback.Kind.RATING, score=1, comment="rating row")
    client.force_login(lead)
    response = client.get(
        reverse("feedback_web:explorer"),
        {"kind": "nps", "score_max": "abc", "format": "csv"},
    )
    assert response.status_code == 400
    assert not response.streaming
    assert b"score_max" in response.content


def test_line_chart_draws_band_and_points():
    svg = charts.line_chart(
        title="NPS <test>",
        points=[
            charts.Point("w1", 10, 0, 20, 5),
            charts.Point("w2", None),
            charts.Point("w3", 30, 25, 35, 9),
        ],
    )
    assert "NPS &lt;test&gt;" in svg
    assert svg.count('class="band"') == 2
    assert svg.count("<circle") == 2


def test_line_chart_without_data():
    assert "no data" in charts.line_chart(title="empty", points=[])


def test_bar_chart_negative_bars_are_red():
    svg = charts.bar_chart(
        title="topics", bars=[charts.Bar("Delivery", -4.5), charts.Bar("Price", -1)]
    )
    assert svg.count(f'fill="{charts.BAD_COLOUR}"') == 2


def test_nice_ticks_cover_range():
    ticks = charts.nice_ticks(-13, 47)
    assert ticks[0] <= -13
    assert ticks[-1] >= 47
