"""People, cases and feedback of the action tests.

Team A and team B each have a lead and an agent; ``admin`` is a superuser.
Cases are created directly, open and unassigned, on NPS feedback.
"""

import itertools
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest
from django.utils import timezone

from cases.models import Case, RootCause, TeamMember
from feedback.models import Feedback, FeedbackTopic, Topic
from tests.cases.factories import FeedbackFactory, TeamFactory, TeamMemberFactory, UserFactory


def make_case(*, team, score: int = 2, kind: str = Feedback.Kind.NPS, **fields) -> Case:
    feedback = FeedbackFactory(kind=kind, score=score, occurred_at=fields.pop("occurred_at", timezone.now()))
    return Case.objects.create(
        customer=feedback.customer,
        trigger_feedback=feedback,
        team=team,
        dedup_key=f"f{feedback.pk}",
        rule_reason="test rule",
        routing_reason="test routing",
        **fields,
    )


def member(team, username: str, role: str = TeamMember.Role.AGENT):
    return TeamMemberFactory(team=team, user=UserFactory(username=username), role=role).user


@pytest.fixture
def people(db) -> SimpleNamespace:
    team_a = TeamFactory(name="Team A")
    team_b = TeamFactory(name="Team B")
    return SimpleNamespace(
        team_a=team_a,
        team_b=team_b,
        lead_a=member(team_a, "lead_a", TeamMember.Role.LEAD),
        agent_a=member(team_a, "agent_a"),
        lead_b=member(team_b, "lead_b", TeamMember.Role.LEAD),
        agent_b=member(team_b, "agent_b"),
        admin=UserFactory(username="admin", is_superuser=True, is_staff=True),
    )


@pytest.fixture
def root_cause(db) -> RootCause:
    return RootCause.objects.create(name="Courier delays", is_active=True)


_external_ids = itertools.count()


def add_feedback(
    *, kind: str, scores: dict[int, int], start: datetime, span: timedelta, topic: Topic | None = None,
    touchpoint: str = "", product: str = "",
) -> None:
    """Store ``scores`` (score -> count) as feedback spread evenly over ``start`` .. ``start + span``."""
    total = sum(scores.values())
    step = span / max(total, 1)
    rows = []
    index = 0
    for score, count in scores.items():
        for _ in range(count):
            rows.append(
                Feedback(
                    kind=kind, score=score, source=Feedback.Source.SURVEY,
                    external_id=f"bulk-{next(_external_ids)}",
                    occurred_at=start + step * index, touchpoint=touchpoint, product=product,
                )
            )
            index += 1
    created = Feedback.objects.bulk_create(rows)
    if topic is not None:
        FeedbackTopic.objects.bulk_create([FeedbackTopic(feedback=row, topic=topic) for row in created])
