from datetime import timedelta

import pytest
from django.utils import timezone

from cases import workflow
from cases.models import Case, CaseEvent, CaseFeedback, FollowUp, Priority, TeamMember
from cases.services import feedback_evaluate
from cases.workflow import TRANSITIONS
from oscm.errors import DomainError

from .factories import (
    CaseFactory,
    CustomerFactory,
    FeedbackFactory,
    RootCauseFactory,
    TeamMemberFactory,
)
from .personas import make_personas

pytestmark = pytest.mark.django_db

State = Case.State


@pytest.fixture
def people():
    return make_personas()


def _case_in(state: str, *, people, assigned: bool = True, **fields) -> Case:
    now = timezone.now()
    fields.setdefault("assignee", people.agent_a if assigned else None)
    fields.setdefault("is_open", state in Case.OPEN_STATES)
    if state in (State.RESOLVED, State.CLOSED):
        fields.setdefault("resolved_at", now)
    if state == State.CLOSED:
        fields.setdefault("closed_at", now)
    if state == State.WAITING:
        fields.setdefault("sla_paused_at", now)
    return CaseFactory(team=people.team_a, state=state, **fields)


def _events(case: Case, kind: str) -> list[CaseEvent]:
    return list(CaseEvent.objects.filter(case=case, kind=kind))


# Transitions


def _allowed_pairs():
    for from_state, targets in TRANSITIONS.items():
        for to_state in targets:
            yield pytest.param(from_state, to_state, id=f"{from_state}->{to_state}")


@pytest.mark.parametrize(("from_state", "to_state"), list(_allowed_pairs()))
def test_transition_allowed(people, from_state, to_state):
    case = _case_in(from_state, people=people, assigned=to_state != State.NEW)
    extra = {}
    if to_state == State.RESOLVED:
        extra = {"root_cause": RootCauseFactory(), "resolution_note": "Refunded."}

    result = workflow.case_transition(
        case=case, actor=people.agent_a, to_state=to_state, **extra
    )

    result.refresh_from_db()
    assert result.state == to_state
    assert result.is_open == (to_state in Case.OPEN_STATES)
    (event,) = _events(case, CaseEvent.Kind.STATE_CHANGED)
    assert event.changes["state"] == [from_state, to_state]
    assert event.actor == people.agent_a


@pytest.mark.parametrize(
    ("from_state", "to_state"),
    [
        (State.NEW, State.CLOSED),
        (State.NEW, State.NEW),
        (State.ASSIGNED, State.CLOSED),
        (State.IN_PROGRESS, State.NEW),
        (State.IN_PROGRESS, State.ASSIGNED),
        (State.WAITING, State.ASSIGNED),
        (State.RESOLVED, State.WAITING),
        (State.RESOLVED, State.RESOLVED),
        (State.CLOSED, State.RESOLVED),
        (State.CLOSED, State.WAITING),
    ],
)
def test_transition_forbidden_409(people, from_state, to_state):
    case = _case_in(from_state, people=people)

    with pytest.raises(DomainError) as error:
        workflow.case_transition(case=case, actor=people.agent_a, to_state=to_state)

    allowed = ", ".join(TRANSITIONS[from_state])
    assert error.value.status == 409
    assert f"is {from_state} and cannot move to {to_state}" in error.value.message
    assert f"allowed next states: {allowed}" in error.value.message
    assert not _events(case, CaseEvent.Kind.STATE_CHANGED)


def test_transition_unknown_state_400(people):
    case = _case_in(State.ASSIGNED, people=people)

    with pytest.raises(DomainError) as error:
        workflow.case_transition(case=case, actor=people.agent_a, to_state="done")

    assert error.value.status == 400
    assert "'done' is not a case state" in error.value.message


def test_transition_needs_assignee(people):
    case = _case_in(State.NEW, people=people, assigned=False)

    with pytest.raises(DomainError) as error:
        workflow.case_transition(
            case=case, actor=people.agent_a, to_state=State.IN_PROGRESS
        )

    assert error.value.status == 409
    assert "has no assignee" in error.value.message


@pytest.mark.parametrize(
    ("with_root_cause", "note", "missing"),
    [
        (False, "Refunded.", "root_cause"),
        (True, "   ", "resolution_note"),
        (False, "", "root_cause and resolution_note"),
    ],
)
def test_resolve_requires_root_cause_and_note(people, with_root_cause, note, missing):
    case = _case_in(State.IN_PROGRESS, people=people)
    root_cause = RootCauseFactory() if with_root_cause else None

    with pytest.raises(DomainError) as error:
        workflow.case_transition(
            case=case,
            actor=people.agent_a,
            to_state=State.RESOLVED,
            root_cause=root_cause,
            resolution_note=note,
        )

    assert error.value.status == 400
    assert f"requires {missing}" in error.value.message
    case.refresh_from_db()
    assert case.state == State.IN_PROGRESS


def test_resolve_rejects_inactive_root_cause(people):
    case = _case_in(State.IN_PROGRESS, people=people)
    retired = RootCauseFactory(name="Retired cause", is_active=False)

    with pytest.raises(DomainError) as error:
        workflow.case_transition(
            case=case,
            actor=people.agent_a,
            to_state=State.RESOLVED,
            root_cause=retired,
            resolution_note="Fixed.",
        )

    assert error.value.status == 400
    assert "'Retired cause' is inactive" in error.value.message


def test_resolve_and_close_set_timestamps(people):
    case = _case_in(State.IN_PROGRESS, people=people)
    root_cause = RootCauseFactory()

    resolved = workflow.case_transition(
        case=case,
        actor=people.agent_a,
        to_state=State.RESOLVED,
        root_cause=root_cause,
        resolution_note="Sent a replacement.",
    )
    closed = workflow.case_transition(
        case=resolved, actor=people.agent_a, to_state=State.CLOSED
    )

    closed.refresh_from_db()
    assert closed.root_cause == root_cause
    assert closed.resolution_note == "Sent a replacement."
    assert closed.resolved_at is not None
    assert closed.closed_at is not None
    assert closed.closed_at >= closed.resolved_at
    assert not closed.is_open
    resolve_event = _events(case, CaseEvent.Kind.STATE_CHANGED)[0]
    assert resolve_event.changes["root_cause"] == [None, root_cause.pk]


def test_reopen_clears_resolution_times(people):
    case = _case_in(State.CLOSED, people=people)

    reopened = workflow.case_transition(
        case=case, actor=people.agent_a, to_state=State.IN_PROGRESS
    )

    reopened.refresh_from_db()
    assert reopened.is_open
    assert reopened.resolved_at is None
    assert reopened.closed_at is None


@pytest.mark.parametrize("from_state", [State.RESOLVED, State.CLOSED])
def test_reopen_clears_root_cause_and_note(people, from_state):
    root_cause = RootCauseFactory()
    case = _case_in(
        from_state, people=people, root_cause=root_cause, resolution_note="Refunded."
    )

    reopened = workflow.case_transition(
        case=case, actor=people.agent_a, to_state=State.IN_PROGRESS
    )

    reopened.refresh_from_db()
    assert reopened.root_cause is None
    assert reopened.resolution_note == ""
    (event,) = _events(case, CaseEvent.Kind.STATE_CHANGED)
    assert event.changes["root_cause"] == [root_cause.pk, None]
    assert event.changes["resolution_note"] == ["Refunded.", ""]


def test_reopen_unassigned_goes_to_new(people):
    case = _case_in(State.RESOLVED, people=people, assigned=False)

    reopened = workflow.case_transition(case=case, actor=people.agent_a, to_state=State.NEW)

    assert reopened.state == State.NEW
    assert reopened.is_open


def test_reopen_assigned_to_new_409(people):
    case = _case_in(State.RESOLVED, people=people)

    with pytest.raises(DomainError) as error:
        workflow.case_transition(case=case, actor=people.agent_a, to_state=State.NEW)

    assert error.value.status == 409
    assert "reopens to in_progress" in error.value.message


def test_reopen_conflict_suggests_merge(people):
    closed = _case_in(State.CLOSED, people=people, dedup_key="c1:t0")
    other = _case_in(State.IN_PROGRESS, people=people, dedup_key="c1:t0")

    with pytest.raises(DomainError) as error:
        workflow.case_transition(
            case=closed, actor=people.agent_a, to_state=State.IN_PROGRESS
        )

    assert error.value.status == 409
    assert f"case #{other.pk} is already open" in error.value.message
    assert f"Merge case #{closed.pk} into case #{other.pk}" in error.value.message
    assert error.value.details == {"open_case": other.pk}
    closed.refresh_from_db()
    assert closed.state == State.CLOSED


def test_reopen_conflict_merge_advice_works(people):
    customer = CustomerFactory()
    closed = _case_in(
        State.CLOSED,
        people=people,
        dedup_key="c1:t0",
        trigger_feedback=FeedbackFactory(customer=customer, score=1),
    )
    other = _case_in(
        State.IN_PROGRESS,
        people=people,
        dedup_key="c1:t0",
        trigger_feedback=FeedbackFactory(customer=customer, score=2),
    )
    with pytest.raises(DomainError) as error:
        workflow.case_transition(
            case=closed, actor=people.agent_a, to_state=State.IN_PROGRESS
        )
    into = Case.objects.get(pk=error.value.details["open_case"])

    merged = workflow.case_merge(case=closed, actor=people.lead_a, into=into)

    merged.refresh_from_db()
    assert merged.merged_into_id == other.pk
    assert merged.state == State.CLOSED


def test_merged_case_cannot_change_state(people):
    target = _case_in(State.IN_PROGRESS, people=people)
    merged = _case_in(State.CLOSED, people=people, merged_into=target)

    with pytest.raises(DomainError) as error:
        workflow.case_transition(
            case=merged, actor=people.agent_a, to_state=State.IN_PROGRESS
        )

    assert error.value.status == 409
    assert f"merged into case #{target.pk}" in error.value.message


# Waiting on the customer


def test_waiting_pauses_sla_clock(people):
    case = _case_in(State.IN_PROGRESS, people=people)

    waiting = workflow.case_transition(
        case=case, actor=people.agent_a, to_state=State.WAITING
    )

    waiting.refresh_from_db()
    assert waiting.state == State.WAITING
    assert waiting.sla_paused_at is not None


def test_customer_reply_resumes_waiting(people):
    due = timezone.now() + timedelta(hours=4)
    case = _case_in(
        State.WAITING,
        people=people,
        sla_paused_at=timezone.now() - timedelta(hours=1),
        resolution_due_at=due,
    )

    event = workflow.case_customer_replied(
        case=case, actor=people.agent_a, body="It works now, thanks."
    )

    case.refresh_from_db()
    assert case.state == State.IN_PROGRESS
    assert case.sla_paused_at is None
    assert case.resolution_due_at > due
    assert event.kind == CaseEvent.Kind.CONTACT
    assert event.outcome == CaseEvent.Outcome.REACHED
    assert event.changes == {"state": [State.WAITING, State.IN_PROGRESS]}


def test_customer_reply_keeps_other_states(people):
    case = _case_in(State.IN_PROGRESS, people=people)

    event = workflow.case_customer_replied(
        case=case, actor=people.agent_a, body="One more thing."
    )

    case.refresh_from_db()
    assert case.state == State.IN_PROGRESS
    assert event.changes == {}


def test_attached_feedback_resumes_waiting(people):
    customer = CustomerFactory()
    first = FeedbackFactory(customer=customer, kind="nps", score=1)
    feedback_evaluate(feedback_ids=[first.pk])
    case = Case.objects.get(trigger_feedback=first)
    TeamMemberFactory(team=case.team, user=people.agent_a)
    Case.objects.filter(pk=case.pk).update(
        state=State.WAITING, assignee=people.agent_a, sla_paused_at=timezone.now()
    )
    later = FeedbackFactory(customer=customer, kind="nps", score=2)

    feedback_evaluate(feedback_ids=[later.pk])

    case.refresh_from_db()
    assert case.state == State.IN_PROGRESS
    assert case.sla_paused_at is None
    (attached,) = _events(case, CaseEvent.Kind.FEEDBACK_ATTACHED)
    assert attached.changes == {"feedback": [None, later.pk]}
    (resumed,) = _events(case, CaseEvent.Kind.STATE_CHANGED)
    assert resumed.changes == {"state": [State.WAITING, State.IN_PROGRESS]}
    assert resumed.actor is None


def test_evaluation_records_opened_event():
    feedback = FeedbackFactory(kind="nps", score=0)

    feedback_evaluate(feedback_ids=[feedback.pk])

    case = Case.objects.get(trigger_feedback=feedback)
    (opened,) = _events(case, CaseEvent.Kind.OPENED)
    assert opened.changes["state"] == [None, case.state]
    assert opened.changes["team"] == [None, case.team_id]
    assert opened.body == case.rule_reason


def test_customer_reply_reopens_resolved_case(people):
    root_cause = RootCauseFactory()
    case = _case_in(
        State.RESOLVED,
        people=people,
        root_cause=root_cause,
        resolution_note="Refunded.",
    )

    event = workflow.case_customer_replied(
        case=case, actor=people.agent_a, body="The refund never arrived."
    )

    case.refresh_from_db()
    assert case.state == State.IN_PROGRESS
    assert case.is_open
    assert case.resolved_at is None
    assert case.root_cause is None
    assert case.resolution_note == ""
    assert event.changes["state"] == [State.RESOLVED, State.IN_PROGRESS]
    assert event.changes["root_cause"] == [root_cause.pk, None]


def test_customer_reply_reopens_unassigned_to_new(people):
    case = _case_in(State.RESOLVED, people=people, assigned=False)

    workflow.case_customer_replied(
        case=case, actor=people.agent_a, body="Still broken."
    )

    case.refresh_from_db()
    assert case.state == State.NEW


def test_customer_reply_reopen_conflict_409(people):
    case = _case_in(State.RESOLVED, people=people, dedup_key="c2:t0")
    other = _case_in(State.IN_PROGRESS, people=people, dedup_key="c2:t0")

    with pytest.raises(DomainError) as error:
        workflow.case_customer_replied(case=case, actor=people.agent_a, body="Hello?")

    assert error.value.status == 409
    assert error.value.details == {"open_case": other.pk}
    case.refresh_from_db()
    assert case.state == State.RESOLVED
    assert not _events(case, CaseEvent.Kind.CONTACT)


def _contact_on(case: Case, operation: str, actor) -> CaseEvent:
    if operation == "contact":
        return workflow.case_contact(
            case=case, actor=actor, channel="phone", outcome="reached"
        )
    if operation == "customer_reply":
        return workflow.case_customer_replied(case=case, actor=actor, body="Hi")
    return workflow.case_comment(
        case=case, actor=actor, body="We refunded you.", visibility="customer"
    )


@pytest.mark.parametrize(
    "operation", ["contact", "customer_reply", "reply_to_customer"]
)
def test_contact_on_closed_case_409(people, operation):
    case = _case_in(State.CLOSED, people=people)

    with pytest.raises(DomainError) as error:
        _contact_on(case, operation, people.agent_a)

    assert error.value.status == 409
    assert f"Case #{case.pk} is closed" in error.value.message
    assert error.value.details == {"state": State.CLOSED}
    case.refresh_from_db()
    assert case.first_response_at is None
    assert not CaseEvent.objects.filter(case=case).exists()


@pytest.mark.parametrize(
    "operation", ["contact", "customer_reply", "reply_to_customer"]
)
def test_contact_on_merged_case_409(people, operation):
    target = _case_in(State.IN_PROGRESS, people=people)
    merged = _case_in(State.CLOSED, people=people, merged_into=target)

    with pytest.raises(DomainError) as error:
        _contact_on(merged, operation, people.agent_a)

    assert error.value.status == 409
    assert f"merged into case #{target.pk}" in error.value.message
    assert not CaseEvent.objects.filter(case=merged).exists()


def test_internal_note_on_closed_case_allowed(people):
    case = _case_in(State.CLOSED, people=people)

    event = workflow.case_comment(
        case=case,
        actor=people.agent_a,
        body="Customer called again.",
        visibility="internal",
    )

    assert event.kind == CaseEvent.Kind.COMMENT


@pytest.mark.parametrize("operation", ["contact", "reply_to_customer"])
def test_contact_on_resolved_sets_no_first_response(people, operation):
    case = _case_in(State.RESOLVED, people=people)

    event = _contact_on(case, operation, people.agent_a)

    case.refresh_from_db()
    assert case.state == State.RESOLVED
    assert case.first_response_at is None
    assert event.changes == {}


# First response


def test_first_response_set_once(people):
    case = _case_in(State.ASSIGNED, people=people)

    workflow.case_contact(
        case=case, actor=people.agent_a, channel="phone", outcome="no_answer"
    )
    case.refresh_from_db()
    first = case.first_response_at
    workflow.case_comment(
        case=case, actor=people.agent_a, body="Sorry about that.", visibility="customer"
    )
    case.refresh_from_db()

    assert first is not None
    assert case.first_response_at == first


def test_reply_to_customer_sets_first_response(people):
    case = _case_in(State.ASSIGNED, people=people)

    event = workflow.case_comment(
        case=case, actor=people.agent_a, body="We are on it.", visibility="customer"
    )

    case.refresh_from_db()
    assert case.first_response_at == event.created_at
    assert event.changes == {"first_response_at": [None, event.created_at.isoformat()]}


def test_internal_note_is_no_first_response(people):
    case = _case_in(State.ASSIGNED, people=people)

    workflow.case_comment(
        case=case, actor=people.agent_a, body="Checking logs.", visibility="internal"
    )

    case.refresh_from_db()
    assert case.first_response_at is None


@pytest.mark.parametrize(
    ("channel", "outcome", "message"),
    [
        ("pigeon", "reached", "'pigeon' is not a valid channel"),
        ("phone", "maybe", "'maybe' is not a valid outcome"),
    ],
)
def test_contact_rejects_unknown_choice(people, channel, outcome, message):
    case = _case_in(State.ASSIGNED, people=people)

    with pytest.raises(DomainError) as error:
        workflow.case_contact(
            case=case, actor=people.agent_a, channel=channel, outcome=outcome
        )

    assert error.value.status == 400
    assert message in error.value.message


# Timeline


def test_each_action_appends_event(people):
    case = _case_in(State.NEW, people=people, assigned=False)
    other_team_lead = TeamMemberFactory(
        team=people.team_b, user=people.lead_a, role=TeamMember.Role.LEAD
    ).user

    workflow.case_assign_to(case=case, actor=people.lead_a, assignee=people.agent_a)
    workflow.case_change_priority(case=case, actor=people.lead_a, priority=Priority.URGENT)
    workflow.case_comment(case=case, actor=people.agent_a, body="Note", visibility="internal")
    workflow.case_contact(case=case, actor=people.agent_a, channel="email", outcome="reached")
    workflow.case_transition(case=case, actor=people.agent_a, to_state=State.IN_PROGRESS)
    workflow.case_move_team(
        case=case, actor=other_team_lead, team=people.team_b, reason="Billing issue"
    )

    kinds = list(
        CaseEvent.objects.filter(case=case).order_by("pk").values_list("kind", flat=True)
    )
    assert kinds == [
        CaseEvent.Kind.ASSIGNED,
        CaseEvent.Kind.PRIORITY_CHANGED,
        CaseEvent.Kind.COMMENT,
        CaseEvent.Kind.CONTACT,
        CaseEvent.Kind.STATE_CHANGED,
        CaseEvent.Kind.TEAM_CHANGED,
    ]
    priority_event = _events(case, CaseEvent.Kind.PRIORITY_CHANGED)[0]
    assert priority_event.changes == {"priority": [Priority.NORMAL, Priority.URGENT]}


def test_events_are_append_only(people):
    case = _case_in(State.ASSIGNED, people=people)
    event = workflow.case_comment(
        case=case, actor=people.agent_a, body="First note", visibility="internal"
    )

    event.body = "Edited note"
    with pytest.raises(ValueError, match="append-only"):
        event.save()
    with pytest.raises(ValueError, match="append-only"):
        event.delete()
    assert CaseEvent.objects.get(pk=event.pk).body == "First note"


# Assignment and roles


def test_lead_assigns_agent(people):
    case = _case_in(State.NEW, people=people, assigned=False)

    assigned = workflow.case_assign_to(
        case=case, actor=people.lead_a, assignee=people.agent_a
    )

    assert assigned.assignee == people.agent_a
    assert assigned.state == State.ASSIGNED
    (event,) = _events(case, CaseEvent.Kind.ASSIGNED)
    assert event.changes == {
        "assignee": [None, people.agent_a.pk],
        "state": [State.NEW, State.ASSIGNED],
    }


def test_agent_takes_unassigned_case(people):
    case = _case_in(State.NEW, people=people, assigned=False)

    assigned = workflow.case_assign_to(
        case=case, actor=people.agent_a, assignee=people.agent_a
    )

    assert assigned.assignee == people.agent_a


def test_agent_cannot_assign_others_403(people):
    colleague = TeamMemberFactory(team=people.team_a).user
    case = _case_in(State.NEW, people=people, assigned=False)

    with pytest.raises(DomainError) as error:
        workflow.case_assign_to(case=case, actor=people.agent_a, assignee=colleague)

    assert error.value.status == 403
    assert "Only a lead of team Team A" in error.value.message


def test_agent_retaking_own_case_is_noop(people):
    case = _case_in(State.IN_PROGRESS, people=people)

    result = workflow.case_assign_to(
        case=case, actor=people.agent_a, assignee=people.agent_a
    )

    assert result.assignee_id == people.agent_a.pk
    assert result.state == State.IN_PROGRESS
    assert not _events(case, CaseEvent.Kind.ASSIGNED)


def test_agent_cannot_take_assigned_case_409(people):
    colleague = TeamMemberFactory(team=people.team_a).user
    case = _case_in(State.ASSIGNED, people=people, assignee=colleague)

    with pytest.raises(DomainError) as error:
        workflow.case_assign_to(case=case, actor=people.agent_a, assignee=people.agent_a)

    assert error.value.status == 409
    assert f"already taken by {colleague.username}" in error.value.message


def test_other_team_agent_gets_404(people):
    case = _case_in(State.ASSIGNED, people=people)

    with pytest.raises(DomainError) as error:
        workflow.case_comment(
            case=case, actor=people.agent_b, body="Hello", visibility="internal"
        )

    assert error.value.status == 404
    assert not CaseEvent.objects.filter(case=case).exists()


def test_assignee_outside_team_400(people):
    case = _case_in(State.NEW, people=people, assigned=False)

    with pytest.raises(DomainError) as error:
        workflow.case_assign_to(case=case, actor=people.lead_a, assignee=people.agent_b)

    assert error.value.status == 400
    assert "agent_b is not an active agent or lead of team Team A" in error.value.message


def test_unassign_returns_to_new(people):
    case = _case_in(State.WAITING, people=people)

    unassigned = workflow.case_assign_to(case=case, actor=people.lead_a, assignee=None)

    unassigned.refresh_from_db()
    assert unassigned.assignee is None
    assert unassigned.state == State.NEW
    assert unassigned.sla_paused_at is None


def test_agent_cannot_change_priority_403(people):
    case = _case_in(State.ASSIGNED, people=people)

    with pytest.raises(DomainError) as error:
        workflow.case_change_priority(case=case, actor=people.agent_a, priority=4)

    assert error.value.status == 403


def test_priority_rejects_unknown_value(people):
    case = _case_in(State.ASSIGNED, people=people)

    with pytest.raises(DomainError) as error:
        workflow.case_change_priority(case=case, actor=people.lead_a, priority=9)

    assert error.value.status == 400
    assert "'9' is not a priority" in error.value.message


# Move


def test_move_requires_reason(people):
    case = _case_in(State.ASSIGNED, people=people)

    with pytest.raises(DomainError) as error:
        workflow.case_move_team(case=case, actor=people.lead_a, team=people.team_b, reason=" ")

    assert error.value.status == 400
    assert "requires a reason" in error.value.message


def test_move_clears_assignee(people):
    case = _case_in(State.IN_PROGRESS, people=people)

    moved = workflow.case_move_team(
        case=case, actor=people.lead_a, team=people.team_b, reason="Payment bug"
    )

    moved.refresh_from_db()
    assert moved.team == people.team_b
    assert moved.assignee is None
    assert moved.state == State.NEW
    assert "Payment bug" in moved.routing_reason
    (event,) = _events(case, CaseEvent.Kind.TEAM_CHANGED)
    assert event.changes == {
        "team": [people.team_a.pk, people.team_b.pk],
        "assignee": [people.agent_a.pk, None],
        "state": [State.IN_PROGRESS, State.NEW],
    }
    assert event.body == "Payment bug"


def test_agent_cannot_move_403(people):
    case = _case_in(State.ASSIGNED, people=people)

    with pytest.raises(DomainError) as error:
        workflow.case_move_team(
            case=case, actor=people.agent_a, team=people.team_b, reason="Not ours"
        )

    assert error.value.status == 403


# Merge


def _same_customer_cases(people) -> tuple[Case, Case]:
    customer = CustomerFactory()
    source = _case_in(
        State.IN_PROGRESS,
        people=people,
        trigger_feedback=FeedbackFactory(customer=customer, score=1),
    )
    target = _case_in(
        State.ASSIGNED,
        people=people,
        trigger_feedback=FeedbackFactory(customer=customer, score=2),
    )
    return source, target


def test_merge_moves_feedback_and_closes_source(people):
    source, target = _same_customer_cases(people)
    extra = FeedbackFactory(customer=source.customer, score=3)
    CaseFeedback.objects.create(case=source, feedback=extra)
    CaseFeedback.objects.create(case=target, feedback=extra)

    merged = workflow.case_merge(case=source, actor=people.lead_a, into=target)

    merged.refresh_from_db()
    assert merged.merged_into == target
    assert merged.state == State.CLOSED
    assert not merged.is_open
    assert not CaseFeedback.objects.filter(case=source).exists()
    target_feedback = set(
        CaseFeedback.objects.filter(case=target).values_list("feedback_id", flat=True)
    )
    assert target_feedback == {
        source.trigger_feedback_id,
        target.trigger_feedback_id,
        extra.pk,
    }
    (source_event,) = _events(source, CaseEvent.Kind.MERGED)
    assert source_event.changes["merged_into"] == [None, target.pk]
    (target_event,) = _events(target, CaseEvent.Kind.MERGED)
    assert target_event.changes == {"merged_cases": [[], [source.pk]]}


def test_merge_needs_same_customer(people):
    source = _case_in(State.ASSIGNED, people=people)
    target = _case_in(State.ASSIGNED, people=people)

    with pytest.raises(DomainError) as error:
        workflow.case_merge(case=source, actor=people.lead_a, into=target)

    assert error.value.status == 400
    assert "different customers" in error.value.message


def test_merge_into_closed_case_409(people):
    source, target = _same_customer_cases(people)
    Case.objects.filter(pk=target.pk).update(state=State.CLOSED, is_open=False)

    with pytest.raises(DomainError) as error:
        workflow.case_merge(case=source, actor=people.lead_a, into=target)

    assert error.value.status == 409
    assert "merge into an open case" in error.value.message


def test_agent_cannot_merge_403(people):
    source, target = _same_customer_cases(people)

    with pytest.raises(DomainError) as error:
        workflow.case_merge(case=source, actor=people.agent_a, into=target)

    assert error.value.status == 403


def test_merge_releases_dedup_key(people):
    source, target = _same_customer_cases(people)
    Case.objects.filter(pk=source.pk).update(dedup_key="c9:t0")

    workflow.case_merge(case=source, actor=people.lead_a, into=target)

    assert Case.objects.filter(dedup_key="c9:t0", is_open=True).count() == 0


@pytest.mark.parametrize("source_state", [State.RESOLVED, State.CLOSED])
def test_merge_finished_case_into_open_case(people, source_state):
    source, target = _same_customer_cases(people)
    resolved_at = timezone.now() - timedelta(days=2)
    closed_at = resolved_at if source_state == State.CLOSED else None
    Case.objects.filter(pk=source.pk).update(
        state=source_state, is_open=False, resolved_at=resolved_at, closed_at=closed_at
    )

    merged = workflow.case_merge(case=source, actor=people.lead_a, into=target)

    merged.refresh_from_db()
    assert merged.merged_into == target
    assert merged.state == State.CLOSED
    assert not merged.is_open
    assert merged.resolved_at == resolved_at
    if source_state == State.CLOSED:
        assert merged.closed_at == closed_at
    else:
        assert merged.closed_at > resolved_at
    target_feedback = set(
        CaseFeedback.objects.filter(case=target).values_list("feedback_id", flat=True)
    )
    assert source.trigger_feedback_id in target_feedback
    assert not CaseFeedback.objects.filter(case=source).exists()
    (source_event,) = _events(source, CaseEvent.Kind.MERGED)
    assert source_event.changes["merged_into"] == [None, target.pk]
    if source_state == State.CLOSED:
        assert "state" not in source_event.changes
    else:
        assert source_event.changes["state"] == [State.RESOLVED, State.CLOSED]
    (target_event,) = _events(target, CaseEvent.Kind.MERGED)
    assert target_event.changes == {"merged_cases": [[], [source.pk]]}


def test_merge_resolved_case_cancels_follow_up(people):
    source, target = _same_customer_cases(people)
    Case.objects.filter(pk=source.pk).update(
        state=State.RESOLVED, is_open=False, resolved_at=timezone.now()
    )
    follow_up = FollowUp.objects.create(
        case=source,
        customer=source.customer,
        kind="nps",
        due_at=timezone.now() + timedelta(days=3),
    )

    workflow.case_merge(case=source, actor=people.lead_a, into=target)

    follow_up.refresh_from_db()
    assert follow_up.state == FollowUp.State.CANCELLED
    assert follow_up.skip_reason == f"the case was merged into case #{target.pk}"
    (source_event,) = _events(source, CaseEvent.Kind.MERGED)
    assert source_event.changes["follow_ups_cancelled"] == [0, 1]


def test_merge_already_merged_case_409(people):
    source, target = _same_customer_cases(people)
    workflow.case_merge(case=source, actor=people.lead_a, into=target)
    third = _case_in(
        State.IN_PROGRESS,
        people=people,
        trigger_feedback=FeedbackFactory(customer=source.customer, score=0),
    )

    with pytest.raises(DomainError) as error:
        workflow.case_merge(case=source, actor=people.lead_a, into=third)

    assert error.value.status == 409
    assert f"already merged into case #{target.pk}" in error.value.message
