from datetime import date, timedelta

import pytest
from django.core import mail
from django.utils import timezone

from actions.models import Action, ActionEvent
from actions.services import (
    action_create,
    action_link_cases,
    action_measure,
    action_measure_due,
    action_remind_overdue_all,
    action_resolve_cases,
    action_segment_counts,
    action_transition,
)
from cases.models import Case
from feedback.metrics import SCORE_RANGES
from feedback.models import Topic
from oscm.errors import DomainError

from .conftest import add_feedback, make_case

pytestmark = pytest.mark.django_db


def new_action(people, *, actor=None, cases=(), **fields) -> Action:
    return action_create(
        actor=actor or people.lead_a,
        title=fields.pop("title", "Switch courier"),
        team=people.team_a,
        owner=fields.pop("owner", people.agent_a),
        case_ids=[case.pk for case in cases],
        **fields,
    )


def test_create_links_cases_and_records_event(people):
    cases = [make_case(team=people.team_a), make_case(team=people.team_a)]
    action = new_action(people, cases=cases)
    assert set(action.cases.values_list("pk", flat=True)) == {case.pk for case in cases}
    assert action.metric_kind == "nps"
    assert action.created_by == people.lead_a
    event = ActionEvent.objects.get(action=action)
    assert event.kind == "created"
    assert event.changes["state"] == [None, "planned"]


def test_create_by_agent_forbidden(people):
    with pytest.raises(DomainError) as error:
        new_action(people, actor=people.agent_a)
    assert error.value.status == 403


def test_create_by_admin_allowed(people):
    action = new_action(people, actor=people.admin)
    assert action.team == people.team_a


def test_create_rejects_other_team_cases(people):
    own = make_case(team=people.team_a)
    other = make_case(team=people.team_b)
    with pytest.raises(DomainError) as error:
        new_action(people, cases=[own, other])
    assert error.value.details["case_ids"] == [other.pk]
    assert "not found" in error.value.message
    assert not Action.objects.exists()


def test_create_admin_names_cases_of_another_team(people):
    other = make_case(team=people.team_b)
    with pytest.raises(DomainError) as error:
        new_action(people, actor=people.admin, cases=[other])
    assert error.value.details["case_ids"] == [other.pk]
    assert "belong to another team" in error.value.message


def test_create_rejects_owner_outside_team(people):
    with pytest.raises(DomainError, match="not a member"):
        new_action(people, owner=people.agent_b)


def test_link_cases_skips_already_linked(people):
    first = make_case(team=people.team_a)
    action = new_action(people, cases=[first])
    second = make_case(team=people.team_a)
    linked = action_link_cases(action=action, actor=people.lead_a, case_ids=[first.pk, second.pk])
    assert linked == [second.pk]
    assert action.cases.count() == 2


def test_transition_path_stamps_times(people):
    action = new_action(people, window_days=7)
    action = action_transition(action=action, actor=people.agent_a, to_state="in_progress")
    assert action.started_at is not None
    action = action_transition(action=action, actor=people.lead_a, to_state="done")
    assert action.done_at is not None
    assert action.measure_due_at == action.done_at + timedelta(days=7)
    kinds = list(action.events.values_list("kind", flat=True))
    assert kinds == ["created", "state_changed", "state_changed"]


def test_transition_invalid_names_allowed(people):
    action = new_action(people)
    action_transition(action=action, actor=people.lead_a, to_state="done")
    with pytest.raises(DomainError) as error:
        action_transition(action=action, actor=people.lead_a, to_state="in_progress")
    assert error.value.status == 409
    assert "from done to in_progress" in error.value.message
    assert error.value.details["state"] == "done"


def test_transition_verified_only_by_measurement(people):
    action = new_action(people)
    action_transition(action=action, actor=people.lead_a, to_state="done")
    with pytest.raises(DomainError) as error:
        action_transition(action=action, actor=people.lead_a, to_state="verified")
    assert error.value.status == 409
    assert "only through its measurement" in error.value.message


def test_transition_by_other_agent_forbidden(people):
    action = new_action(people, owner=people.lead_a)
    with pytest.raises(DomainError) as error:
        action_transition(action=action, actor=people.agent_a, to_state="in_progress")
    assert error.value.status == 403


def test_transition_outside_team_not_found(people):
    action = new_action(people)
    with pytest.raises(DomainError) as error:
        action_transition(action=action, actor=people.lead_b, to_state="in_progress")
    assert error.value.status == 404


def test_resolve_cases_through_workflow(people, root_cause):
    open_case = make_case(team=people.team_a)
    closed = make_case(team=people.team_a, state=Case.State.CLOSED, is_open=False)
    action = new_action(people, cases=[open_case, closed])
    result = action_resolve_cases(
        action=action, actor=people.lead_a, root_cause=root_cause, resolution_note="New courier."
    )
    assert result == {"resolved": [open_case.pk], "skipped": []}
    open_case.refresh_from_db()
    assert open_case.state == Case.State.RESOLVED
    assert open_case.root_cause == root_cause
    assert open_case.events.filter(kind="state_changed").count() == 1
    assert action.events.filter(kind="cases_resolved").count() == 1


def test_resolve_cases_skips_rejected(people, root_cause):
    case = make_case(team=people.team_a)
    action = new_action(people, cases=[case])
    root_cause.is_active = False
    root_cause.save()
    result = action_resolve_cases(
        action=action, actor=people.lead_a, root_cause=root_cause, resolution_note="New courier."
    )
    assert result["resolved"] == []
    assert result["skipped"][0]["case_id"] == case.pk
    assert "inactive" in result["skipped"][0]["reason"]
    case.refresh_from_db()
    assert case.is_open


def test_segment_counts_filters_dimensions(db):
    topic = Topic.objects.get(slug="delivery")
    start = timezone.now() - timedelta(days=10)
    add_feedback(kind="nps", scores={9: 3, 2: 1}, start=start, span=timedelta(days=1), topic=topic, touchpoint="app")
    add_feedback(kind="nps", scores={9: 5}, start=start, span=timedelta(days=1), touchpoint="app")
    add_feedback(kind="nps", scores={0: 5}, start=start, span=timedelta(days=1), topic=topic, touchpoint="web")
    add_feedback(kind="csat", scores={5: 5}, start=start, span=timedelta(days=1), topic=topic, touchpoint="app")
    counts = action_segment_counts(
        kind="nps", topic_id=topic.pk, touchpoint="app", product="",
        since=start, until=start + timedelta(days=2),
    )
    assert counts == {2: 1, 9: 3}


def measured_action(people, *, before: dict, after: dict, kind: str = "nps", window: int = 14) -> Action:
    """A done action with ``before`` feedback in its before window and ``after`` in its after window."""
    topic = Topic.objects.get(slug="delivery")
    action = new_action(people, topic=topic, metric_kind=kind, window_days=window)
    done_at = timezone.now() - timedelta(days=window + 1)
    started_at = done_at - timedelta(days=3)
    Action.objects.filter(pk=action.pk).update(
        state="done", started_at=started_at, done_at=done_at,
        measure_due_at=done_at + timedelta(days=window),
    )
    span = timedelta(days=window) - timedelta(minutes=1)
    add_feedback(kind=kind, scores=before, start=started_at - timedelta(days=window), span=span, topic=topic)
    # Feedback during the work itself belongs to neither window.
    lowest = SCORE_RANGES[kind][0]
    add_feedback(kind=kind, scores={lowest: 50}, start=started_at, span=timedelta(days=2), topic=topic)
    add_feedback(kind=kind, scores=after, start=done_at, span=span, topic=topic)
    action.refresh_from_db()
    return action


def test_measure_improved_verifies(people, django_capture_on_commit_callbacks):
    action = measured_action(people, before={0: 40, 9: 40}, after={0: 10, 9: 70})
    action = action_measure(action=action, now=timezone.now())
    assert action.verdict == "improved"
    assert action.state == "verified"
    assert action.measurement["before"]["n"] == 80
    assert action.measurement["after"]["n"] == 80
    assert action.measurement["difference"] == 75.0
    assert action.measurement["segment"]["topic"] == "delivery"
    assert action.events.filter(kind="measured").count() == 1


def test_measure_no_change_not_effective(people):
    action = measured_action(people, before={0: 40, 9: 40}, after={0: 41, 9: 39})
    action = action_measure(action=action, now=timezone.now())
    assert action.verdict == "no_change"
    assert action.state == "not_effective"


def test_measure_worse_not_effective(people):
    action = measured_action(people, before={6: 10, 7: 60}, after={1: 60, 2: 10}, kind="ces")
    action = action_measure(action=action, now=timezone.now())
    assert action.verdict == "worse"
    assert action.state == "not_effective"


def test_measure_not_enough_data_stays_done(people):
    action = measured_action(people, before={0: 10, 9: 10}, after={9: 60})
    action = action_measure(action=action, now=timezone.now())
    assert action.verdict == "not_enough_data"
    assert action.state == "done"
    assert action.measured_at is not None
    assert "at least 30" in action.measurement["reason"]


def test_measure_before_window_end_rejected(people):
    action = new_action(people)
    action = action_transition(action=action, actor=people.lead_a, to_state="done")
    with pytest.raises(DomainError) as error:
        action_measure(action=action, now=timezone.now())
    assert error.value.status == 409


def test_measure_two_group_by_queries(people, django_assert_num_queries):
    action = measured_action(people, before={0: 40, 9: 40}, after={0: 10, 9: 70})
    # Savepoint and release, lock, topic slug, 2 segment counts, save, event,
    # team name and webhook endpoints.
    with django_assert_num_queries(10) as captured:
        action_measure(action=action, now=timezone.now())
    grouped = [query for query in captured.captured_queries if "GROUP BY" in query["sql"]]
    assert len(grouped) == 2


def test_measure_due_task_idempotent(people):
    action = measured_action(people, before={0: 40, 9: 40}, after={0: 10, 9: 70})
    now = timezone.now()
    assert action_measure_due(now=now) == [action.pk]
    assert action_measure_due(now=now) == []
    assert ActionEvent.objects.filter(action=action, kind="measured").count() == 1


def test_measure_due_skips_not_yet_due(people):
    action = new_action(people)
    action_transition(action=action, actor=people.lead_a, to_state="done")
    assert action_measure_due(now=timezone.now()) == []


def test_measure_due_ignores_early_measure_due_at(people, caplog):
    action = new_action(people)
    action = action_transition(action=action, actor=people.lead_a, to_state="done")
    window_end = action.done_at + timedelta(days=action.window_days)
    Action.objects.filter(pk=action.pk).update(
        measure_due_at=timezone.now() - timedelta(days=1)
    )

    with caplog.at_level("INFO", logger="actions.services"):
        first = action_measure_due(now=timezone.now())
        second = action_measure_due(now=timezone.now())

    assert first == []
    assert second == []
    action.refresh_from_db()
    assert action.measure_due_at == window_end
    assert action.measured_at is None
    assert action.state == "done"
    assert [record for record in caplog.records if record.levelname == "ERROR"] == []
    warnings = [record for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1
    assert str(action.pk) in warnings[0].getMessage()


def test_measure_due_measures_once_window_ends(people):
    action = measured_action(people, before={0: 40, 9: 40}, after={0: 10, 9: 70})
    # A hand-edited due time earlier than the window's end changes nothing
    # once the window has ended.
    Action.objects.filter(pk=action.pk).update(
        measure_due_at=action.done_at + timedelta(days=1)
    )

    assert action_measure_due(now=timezone.now()) == [action.pk]
    action.refresh_from_db()
    assert action.verdict == "improved"


def test_overdue_reminder_once_a_day(people, django_capture_on_commit_callbacks):
    people.lead_a.email = "lead_a@example.test"
    people.lead_a.save()
    action = new_action(people, due_date=date.today() - timedelta(days=2))
    today = timezone.now().date()
    with django_capture_on_commit_callbacks(execute=True):
        assert action_remind_overdue_all(today=today) == [action.pk]
        assert action_remind_overdue_all(today=today) == []
    assert len(mail.outbox) == 1
    assert sorted(mail.outbox[0].to) == ["agent_a@example.test", "lead_a@example.test"]
    assert "2 days ago" in mail.outbox[0].body
    with django_capture_on_commit_callbacks(execute=True):
        assert action_remind_overdue_all(today=today + timedelta(days=1)) == [action.pk]
    assert len(mail.outbox) == 2


def test_overdue_reminder_skips_done(people):
    action = new_action(people, due_date=date.today() - timedelta(days=2))
    action_transition(action=action, actor=people.lead_a, to_state="done")
    assert action_remind_overdue_all(today=timezone.now().date()) == []
