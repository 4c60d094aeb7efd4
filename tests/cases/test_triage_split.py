"""Triage moves imported feedback of other topics to the cases of its keys.

The bulk import keys every unhappy row of a customer on ``c<customer>:t0``
before the analysis, so one case collects all of them. Once the rows are
analysed, triage leaves each row on the case of its own key, as
``feedback_evaluate`` would have put it.
"""

import random

import pytest
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from cases.models import Case, CaseEvent, CaseFeedback, Priority, Team, TeamMember
from cases.services import feedback_evaluate
from cases.triage import AWAITING_FEEDBACK, case_triage_after_analysis
from feedback import bulk
from feedback.intake import validate_item
from feedback.models import Customer, Feedback
from feedback.services import feedback_analyze
from tests.threads import run_at_once

from .factories import FeedbackFactory, TeamMemberFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

DELIVERY = "The courier lost my parcel and the delivery was late"
PRICE = "Far too expensive, the price is outrageous"
PLAIN = "Not happy at all"

# One customer's unhappy NPS responses from the website, in import order. The
# first is the trigger of the case that the import opens for all four.
ROWS = [
    ("d1", "1", DELIVERY),
    ("p1", "2", PRICE),
    ("d2", "3", DELIVERY),
    ("p2", "0", PRICE),
]


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("the bulk import path runs on PostgreSQL only")


@pytest.fixture(autouse=True)
def _no_queued_analysis(monkeypatch):
    """Keep imported rows unanalysed until a test analyses them."""
    monkeypatch.setattr(bulk, "_queue_analysis", lambda ids: None)


def _store(rows) -> None:
    """Store (external id, customer, score, comment, touchpoint) rows as NPS
    responses through the bulk import, in one chunk."""
    now = timezone.now()
    items = [
        validate_item(
            {
                "external_id": external_id,
                "customer": customer,
                "score": score,
                "comment": comment,
                "touchpoint": touchpoint,
            },
            defaults={"kind": "nps", "source": "survey", "language": ""},
            now=now,
        )
        for external_id, customer, score, comment, touchpoint in rows
    ]
    bulk.feedback_store_chunk(inputs=items, now=now)


def _import(rows, *, customer: str = "c1", touchpoint: str = "website") -> dict[str, int]:
    """Store one customer's rows; return feedback ids by external id."""
    _store([(name, customer, score, text, touchpoint) for name, score, text in rows])
    return dict(
        Feedback.objects.filter(external_id__in=[row[0] for row in rows]).values_list(
            "external_id", "pk"
        )
    )


def _agents() -> None:
    for team in Team.objects.order_by("pk"):
        TeamMemberFactory(team=team, user=UserFactory(username=f"{team.name}-agent"))


def _open_cases(customer: str = "c1") -> dict[str, tuple]:
    """Open cases of the customer by topic slug ("none" without a topic):
    trigger, linked feedback and team."""
    external = dict(Feedback.objects.values_list("pk", "external_id"))
    cases = {}
    for case in Case.objects.filter(
        is_open=True, customer__external_id=customer
    ).select_related("topic", "team"):
        links = sorted(
            external[pk]
            for pk in CaseFeedback.objects.filter(case=case).values_list(
                "feedback_id", flat=True
            )
        )
        slug = case.topic.slug if case.topic else "none"
        cases[slug] = (external[case.trigger_feedback_id], links, case.team.name)
    return cases


def _key(slug: str | None, customer: str = "c1") -> str:
    customer_id = Customer.objects.get(external_id=customer).pk
    if slug is None:
        return f"c{customer_id}:t0"
    case = Case.objects.get(is_open=True, customer_id=customer_id, topic__slug=slug)
    return f"c{customer_id}:t{case.topic_id}"


SPLIT = {
    "delivery": ("d1", ["d1", "d2"], "Customer Service"),
    "price": ("p1", ["p1", "p2"], "Product"),
}


def test_split_opens_case_per_topic():
    ids = _import(ROWS)
    assert Case.objects.count() == 1

    feedback_analyze(feedback_ids=list(ids.values()))

    assert _open_cases() == SPLIT
    for case in Case.objects.filter(is_open=True):
        expected = f"c{case.customer_id}:t{case.topic_id}"
        assert case.dedup_key == expected


def test_split_opens_case_as_task_path():
    ids = _import(ROWS)

    feedback_analyze(feedback_ids=list(ids.values()))

    price = Case.objects.get(is_open=True, topic__slug="price")
    assert price.priority == Priority.HIGH
    assert price.rule.name == "NPS detractor 0-3"
    assert price.routing_reason.startswith("topic Price matched rule")
    assert price.sla_policy is not None
    assert price.events.filter(kind=CaseEvent.Kind.OPENED).count() == 1
    attached = price.events.filter(kind=CaseEvent.Kind.FEEDBACK_ATTACHED)
    assert list(attached.values_list("changes", flat=True)) == [
        {"feedback": [None, ids["p2"]]}
    ]


def test_split_records_move_on_source():
    ids = _import(ROWS)

    feedback_analyze(feedback_ids=list(ids.values()))

    source = Case.objects.get(trigger_feedback_id=ids["d1"])
    target = Case.objects.get(trigger_feedback_id=ids["p1"])
    event = CaseEvent.objects.get(case=source, kind=CaseEvent.Kind.FEEDBACK_MOVED)
    assert event.actor is None
    assert event.changes == {
        "feedback_ids": [ids["p1"], ids["p2"]],
        "case": [source.pk, target.pk],
        "dedup_key": [_key("delivery"), _key("price")],
    }
    assert event.body == (
        f"Feedback #{ids['p1']}, #{ids['p2']} moved to case #{target.pk}, the "
        "customer's open case for the topic Price. This case has the topic "
        "Delivery and got the feedback before the text analysis found its topic."
    )


def test_split_records_move_on_target():
    ids = _import(ROWS)

    feedback_analyze(feedback_ids=list(ids.values()))

    source = Case.objects.get(trigger_feedback_id=ids["d1"])
    target = Case.objects.get(trigger_feedback_id=ids["p1"])
    event = CaseEvent.objects.get(case=target, kind=CaseEvent.Kind.FEEDBACK_MOVED)
    assert event.actor is None
    assert event.changes["case"] == [source.pk, target.pk]
    assert event.body == (
        f"Feedback #{ids['p1']}, #{ids['p2']} moved here from case #{source.pk}, "
        "which got it before the text analysis found its topic."
    )


def test_split_leaves_no_comment():
    ids = _import(ROWS)

    feedback_analyze(feedback_ids=list(ids.values()))

    assert not CaseEvent.objects.filter(kind=CaseEvent.Kind.COMMENT).exists()


def test_split_names_missing_topic():
    ids = _import([("d1", "1", DELIVERY), ("n1", "2", PLAIN)])

    feedback_analyze(feedback_ids=list(ids.values()))

    source = Case.objects.get(trigger_feedback_id=ids["d1"])
    event = CaseEvent.objects.get(case=source, kind=CaseEvent.Kind.FEEDBACK_MOVED)
    assert "open case for feedback without a topic" in event.body
    assert event.changes["dedup_key"] == [_key("delivery"), _key(None)]


def test_split_move_shown_in_indonesian(client):
    _agents()
    ids = _import(ROWS)
    feedback_analyze(feedback_ids=list(ids.values()))
    case = Case.objects.get(trigger_feedback_id=ids["d1"])
    client.force_login(case.assignee)
    client.cookies["django_language"] = "id"

    response = client.get(reverse("cases_web:case", args=[case.pk]))

    assert response.status_code == 200
    assert "Umpan balik dipindah ke kasus lain" in response.content.decode()
    assert "feedback_ids" not in response.content.decode()


def test_split_attaches_to_open_case_of_key(topics):
    _import([("x", "9", "fine")])
    customer = Customer.objects.get(external_id="c1")
    earlier = FeedbackFactory(customer=customer, score=1, primary_topic=topics["price"])
    feedback_evaluate(feedback_ids=[earlier.pk])
    holder = Case.objects.get(trigger_feedback=earlier)
    ids = _import(ROWS)

    feedback_analyze(feedback_ids=list(ids.values()))

    holder.refresh_from_db()
    linked = set(holder.feedback.values_list("pk", flat=True))
    assert linked == {earlier.pk, ids["p1"], ids["p2"]}
    assert Case.objects.filter(is_open=True, customer=customer).count() == 2


def test_split_folds_then_moves_other_topics(topics):
    _import([("x", "9", "fine")])
    customer = Customer.objects.get(external_id="c1")
    earlier = FeedbackFactory(
        customer=customer, score=1, primary_topic=topics["delivery"], external_id="e1"
    )
    feedback_evaluate(feedback_ids=[earlier.pk])
    ids = _import(ROWS)

    feedback_analyze(feedback_ids=list(ids.values()))

    folded = Case.objects.get(trigger_feedback_id=ids["d1"])
    assert folded.merged_into.trigger_feedback_id == earlier.pk
    assert _open_cases() == {
        "delivery": ("e1", ["d1", "d2", "e1"], "Customer Service"),
        "price": ("p1", ["p1", "p2"], "Product"),
    }

def test_split_waits_for_the_other_rows():
    _agents()
    ids = _import(ROWS)

    feedback_analyze(feedback_ids=[ids["d1"]])

    case = Case.objects.get()
    assert case.topic.slug == "delivery"
    assert case.team.name == "Customer Service"
    assert case.assignee_id is None
    assert case.assignment_reason == AWAITING_FEEDBACK
    assert case.feedback.count() == 4


def test_split_assigns_case_once_complete():
    _agents()
    ids = _import(ROWS)
    feedback_analyze(feedback_ids=[ids["d1"]])

    feedback_analyze(feedback_ids=[ids["p1"], ids["d2"], ids["p2"]])

    for case in Case.objects.filter(is_open=True):
        assert case.state == Case.State.ASSIGNED
        assert case.assignee.username == f"{case.team.name}-agent"
    assert _open_cases() == SPLIT


def _take_case() -> Case:
    """Give the customer's one case to the agent of its team, as the agent
    taking it would."""
    case = Case.objects.get()
    agent = TeamMember.objects.get(team=case.team).user
    Case.objects.update(assignee=agent, state=Case.State.ASSIGNED)
    return Case.objects.get()


def _kept_topics_events():
    return CaseEvent.objects.filter(kind=CaseEvent.Kind.TOPICS_MIXED)


def test_split_keeps_rows_of_touched_case():
    _agents()
    ids = _import(ROWS)
    feedback_analyze(feedback_ids=[ids["d1"]])
    _take_case()

    feedback_analyze(feedback_ids=[ids["p1"], ids["d2"], ids["p2"]])

    assert _open_cases() == {
        "delivery": ("d1", ["d1", "d2", "p1", "p2"], "Customer Service")
    }


def test_kept_topics_on_touched_case(topics):
    _agents()
    ids = _import(ROWS)
    feedback_analyze(feedback_ids=[ids["d1"]])
    case = _take_case()

    feedback_analyze(feedback_ids=[ids["p1"], ids["d2"], ids["p2"]])

    event = _kept_topics_events().get()
    price = topics["price"].pk
    assert event.case_id == case.pk
    assert event.actor is None
    assert event.changes == {
        "feedback_ids": [ids["p1"], ids["p2"]],
        "feedback_topic_ids": {str(ids["p1"]): price, str(ids["p2"]): price},
    }
    assert event.body.startswith(
        f"Feedback #{ids['p1']} (Price), #{ids['p2']} (Price) is about other "
        "topics than this case (Delivery). It stays here because an agent "
        "already had the case when the text analysis finished"
    )
    assert "so handle it on this case." in event.body


def test_kept_topics_on_case_taken_early():
    _agents()
    ids = _import(ROWS)
    case = _take_case()

    feedback_analyze(feedback_ids=list(ids.values()))

    case.refresh_from_db()
    assert case.topic.slug == "delivery"
    assert _kept_topics_events().get().case_id == case.pk


def test_kept_topics_wait_for_analysis():
    _agents()
    ids = _import(ROWS)
    _take_case()

    feedback_analyze(feedback_ids=[ids["d1"], ids["p1"]])

    assert not _kept_topics_events().exists()


def test_kept_topics_list_every_batch():
    _agents()
    ids = _import(ROWS)
    _take_case()
    feedback_analyze(feedback_ids=[ids["d1"], ids["p1"]])

    feedback_analyze(feedback_ids=[ids["d2"], ids["p2"]])

    event = _kept_topics_events().get()
    assert event.changes["feedback_ids"] == [ids["p1"], ids["p2"]]


def test_kept_topics_recorded_once():
    _agents()
    ids = _import(ROWS)
    _take_case()
    feedback_analyze(feedback_ids=list(ids.values()))

    with transaction.atomic():
        result = case_triage_after_analysis(feedback_ids=list(ids.values()))

    assert result.topics_mixed == 0
    assert _kept_topics_events().count() == 1


def test_kept_topics_skip_one_topic():
    _agents()
    ids = _import([("d1", "1", DELIVERY), ("d2", "3", DELIVERY)])
    _take_case()

    feedback_analyze(feedback_ids=list(ids.values()))

    assert not _kept_topics_events().exists()


def test_kept_topics_skip_untouched_case():
    _agents()
    ids = _import(ROWS)

    feedback_analyze(feedback_ids=list(ids.values()))

    assert not _kept_topics_events().exists()


def test_kept_topics_shown_on_page(client):
    _agents()
    ids = _import(ROWS)
    case = _take_case()
    feedback_analyze(feedback_ids=list(ids.values()))
    client.force_login(case.assignee)

    response = client.get(reverse("cases_web:case", args=[case.pk]))

    content = response.content.decode()
    assert "Feedback of other topics kept" in content
    assert f"Feedback #{ids['p1']} (Price)" in content


@pytest.mark.parametrize(
    "batches",
    [
        pytest.param([["d1"], ["p1", "d2", "p2"]], id="trigger-first"),
        pytest.param([["p1", "d2", "p2"], ["d1"]], id="trigger-last"),
        pytest.param([["p2"], ["d2"], ["d1"], ["p1"]], id="one-by-one"),
        pytest.param([["p2", "d1"], ["p1", "d2"]], id="mixed"),
    ],
)
def test_split_same_whatever_order(batches):
    _agents()
    ids = _import(ROWS)

    for batch in batches:
        feedback_analyze(feedback_ids=[ids[name] for name in batch])

    assert _open_cases() == SPLIT
    assert not Case.objects.filter(is_open=True, assignee__isnull=True).exists()


def test_split_without_topic_moves_to_t0_case():
    ids = _import([("d1", "1", DELIVERY), ("n1", "2", PLAIN), ("n2", "1", PLAIN)])

    feedback_analyze(feedback_ids=list(ids.values()))

    assert _open_cases() == {
        "delivery": ("d1", ["d1"], "Customer Service"),
        "none": ("n1", ["n1", "n2"], "IT"),
    }
    case = Case.objects.get(trigger_feedback_id=ids["n1"])
    assert case.dedup_key == _key(None)


def test_split_rerun_changes_nothing():
    _agents()
    ids = _import(ROWS)
    feedback_analyze(feedback_ids=list(ids.values()))
    cases = list(Case.objects.order_by("pk").values())
    links = list(CaseFeedback.objects.order_by("pk").values())
    events = CaseEvent.objects.count()

    with transaction.atomic():
        result = case_triage_after_analysis(feedback_ids=list(ids.values()))

    assert result.feedback_moved == 0
    assert list(Case.objects.order_by("pk").values()) == cases
    assert list(CaseFeedback.objects.order_by("pk").values()) == links
    assert CaseEvent.objects.count() == events


def test_split_rerun_without_agents_changes_nothing():
    ids = _import(ROWS)
    feedback_analyze(feedback_ids=list(ids.values()))
    cases = list(Case.objects.order_by("pk").values())

    with transaction.atomic():
        case_triage_after_analysis(feedback_ids=[ids["p1"], ids["d2"], ids["p2"]])

    assert list(Case.objects.order_by("pk").values()) == cases


def test_split_concurrent_halves():
    _agents()
    customers = [f"c{number}" for number in range(6)]
    ids = {}
    for customer in customers:
        rows = [(f"{customer}-{name}", score, text) for name, score, text in ROWS]
        ids.update(_import(rows, customer=customer))
    # Each customer's trigger and second delivery row in one half, the price
    # rows in the other, so both workers touch every case.
    first = [pk for name, pk in ids.items() if name.endswith(("d1", "d2"))]
    second = [pk for name, pk in ids.items() if name.endswith(("p1", "p2"))]

    run_at_once(lambda half: feedback_analyze(feedback_ids=half), [first, second])

    for customer in customers:
        assert _open_cases(customer) == {
            "delivery": (f"{customer}-d1", [f"{customer}-d1", f"{customer}-d2"], "Customer Service"),
            "price": (f"{customer}-p1", [f"{customer}-p1", f"{customer}-p2"], "Product"),
        }, customer


def _equivalence_rows() -> list[tuple[str, str, str, str, str]]:
    """NPS responses of eight customers over several touchpoints, about
    delivery, price or nothing found; (external id, customer, score,
    comment, touchpoint)."""
    comments = [DELIVERY, PRICE, PLAIN, "Great service, thanks", DELIVERY, PRICE]
    touchpoints = ["website", "app", "store", "delivery", "product"]
    return [
        (
            f"r{number}",
            f"c{number % 8}",
            str(number * 7 % 11),
            comments[number * 5 % len(comments)],
            touchpoints[number % len(touchpoints)],
        )
        for number in range(160)
    ]


def _cases_by_key() -> dict[str, tuple]:
    """Open cases by key, with customers and topics as external ids and
    slugs: trigger, linked feedback, team, priority, rule reason and SLA
    policy."""
    external = dict(Feedback.objects.values_list("pk", "external_id"))
    customers = dict(Customer.objects.values_list("pk", "external_id"))
    snapshot = {}
    for case in Case.objects.filter(is_open=True).select_related(
        "team", "topic", "sla_policy"
    ):
        key = (
            f"f-{external[case.trigger_feedback_id]}"
            if case.customer_id is None
            else f"{customers[case.customer_id]}:{case.topic.slug if case.topic else 0}"
        )
        links = sorted(
            external[pk]
            for pk in CaseFeedback.objects.filter(case=case).values_list(
                "feedback_id", flat=True
            )
        )
        snapshot[key] = (
            external[case.trigger_feedback_id],
            links,
            case.team.name,
            case.priority,
            case.rule_reason,
            case.sla_policy.name if case.sla_policy else None,
        )
    return snapshot


def test_split_matches_task_path():
    """The import, analysed in shuffled batches, ends with the cases that
    ``feedback_evaluate`` opens for the analysed rows: per key the same
    trigger, feedback, team, priority, rule reason and SLA policy. The
    agents may differ, because the two paths assign in another order. So
    may the routing reason: triage keeps the touchpoint's rule and reason
    when the topic leads to the same team.

    Equality holds only while no case is touched before its feedback is
    all analysed. A case that an agent took earlier keeps feedback of
    other keys, and an import that attaches rows to a case that already
    has its agent leaves them there.
    """
    _agents()
    rows = _equivalence_rows()
    for start in range(0, len(rows), 40):
        _store(rows[start : start + 40])
    ids = list(Feedback.objects.values_list("pk", flat=True))
    random.Random(7).shuffle(ids)
    for start in range(0, len(ids), 13):
        feedback_analyze(feedback_ids=ids[start : start + 13])
    by_import = _cases_by_key()
    assert not Case.objects.filter(is_open=False, merged_into__isnull=True).exists()

    CaseEvent.objects.all().delete()
    CaseFeedback.objects.all().delete()
    Case.objects.all().delete()
    Feedback.objects.update(evaluated_at=None)
    TeamMember.objects.update(last_assigned_at=None)
    ordered = sorted(ids)
    for start in range(0, len(ordered), 40):
        feedback_evaluate(feedback_ids=ordered[start : start + 40])
    by_task = _cases_by_key()

    assert len(by_import) > 8, "customers should have cases of several topics"
    assert by_import.keys() == by_task.keys()
    for key, case in by_task.items():
        assert by_import[key] == case, key
