import pytest

from cases.models import Case, RoutingRule, Team
from cases.seeds import DEFAULT_ROUTING_RULES
from cases.services import case_route, feedback_evaluate
from oscm.errors import DomainError

from .factories import FeedbackFactory

pytestmark = pytest.mark.django_db


def _open_case(**feedback_fields) -> Case:
    feedback = FeedbackFactory(score=0, **feedback_fields)
    feedback_evaluate(feedback_ids=[feedback.pk])
    return Case.objects.select_related("team", "routing_rule").get(
        trigger_feedback=feedback
    )


@pytest.mark.parametrize(
    ("position", "slug", "touchpoint", "team_name"), DEFAULT_ROUTING_RULES
)
def test_seeded_routing_rule(position, slug, touchpoint, team_name, topics):
    topic = topics[slug] if slug else None

    case = _open_case(primary_topic=topic, touchpoint=touchpoint)

    rule = RoutingRule.objects.get(position=position)
    condition = f"topic {topic.name}" if topic else f"touchpoint {touchpoint}"
    assert case.team.name == team_name
    assert case.routing_rule == rule
    assert case.routing_reason == f"{condition} matched rule #{rule.pk} -> {team_name}"


def test_routing_reason_wording(topics):
    case = _open_case(primary_topic=topics["delivery"])

    rule = RoutingRule.objects.get(position=50)
    assert (
        case.routing_reason
        == f"topic Delivery matched rule #{rule.pk} -> Customer Service"
    )


def test_topic_rule_wins_over_touchpoint(topics):
    case = _open_case(primary_topic=topics["price"], touchpoint="website")

    assert case.team.name == "Product"
    assert case.routing_rule.position == 40


def test_touchpoint_matches_without_case():
    case = _open_case(touchpoint="Website")

    assert case.team.name == "IT"


def test_unmatched_goes_to_fallback():
    case = _open_case(touchpoint="store")

    assert case.team.name == "Customer Service"
    assert case.routing_rule is None
    assert (
        case.routing_reason == "no routing rule matched; fallback team Customer Service"
    )


def test_inactive_routing_rule_skipped(topics):
    RoutingRule.objects.filter(position=10).update(is_active=False)

    case = _open_case(primary_topic=topics["website-app-bugs"])

    assert case.routing_rule is None
    assert case.team.name == "Customer Service"


def test_rule_with_topic_and_touchpoint_needs_both(topics, teams):
    rule = RoutingRule.objects.create(
        position=1, topic=topics["delivery"], touchpoint="app", team=teams["Product"]
    )

    both = _open_case(primary_topic=topics["delivery"], touchpoint="app")
    topic_only = _open_case(primary_topic=topics["delivery"], touchpoint="store")

    assert both.routing_rule == rule
    assert both.routing_reason == (
        f"topic Delivery and touchpoint app matched rule #{rule.pk} -> Product"
    )
    assert topic_only.routing_rule.position == 50


def test_no_fallback_team_raises():
    Team.objects.update(is_fallback=False)

    with pytest.raises(DomainError, match="fallback"):
        case_route(topic_id=None, touchpoint="store", rules=[], fallback_team=None)
