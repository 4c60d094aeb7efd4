from datetime import date, timedelta

import pytest
from django.core import mail
from django.utils import timezone

from actions.tasks import action_measure_due_task, action_overdue_remind_task, lead_digest_task
from actions.services import action_create

from .conftest import make_case

pytestmark = pytest.mark.django_db


def test_lead_digest_lists_team_cases(people, django_capture_on_commit_callbacks):
    people.lead_a.email = "lead_a@example.test"
    people.lead_a.save()
    people.lead_b.email = ""
    people.lead_b.save()
    case = make_case(team=people.team_a)
    make_case(team=people.team_b)
    action_create(
        actor=people.lead_a, title="Switch courier", team=people.team_a, owner=people.agent_a,
        due_date=date.today() + timedelta(days=2), case_ids=[case.pk],
    )
    with django_capture_on_commit_callbacks(execute=True):
        lead_digest_task()
    (message,) = mail.outbox
    assert message.to == ["lead_a@example.test"]
    assert "New cases in the last 24 hours: 1" in message.body
    assert f"#{case.pk} Team A" in message.body
    assert "Switch courier" in message.body


def test_lead_digest_sent_once_a_day(people, django_capture_on_commit_callbacks):
    people.lead_a.email = "lead_a@example.test"
    people.lead_a.save()
    make_case(team=people.team_a)

    with django_capture_on_commit_callbacks(execute=True):
        lead_digest_task()
    with django_capture_on_commit_callbacks(execute=True):
        lead_digest_task()

    recipients = [message.to for message in mail.outbox]
    assert recipients.count(["lead_a@example.test"]) == 1


def test_beat_tasks_run_without_work(db):
    action_measure_due_task()
    action_overdue_remind_task()
    assert mail.outbox == []


def test_beat_entries_present(settings):
    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {
        "actions.tasks.action_measure_due_task",
        "actions.tasks.action_overdue_remind_task",
        "actions.tasks.lead_digest_task",
    } <= tasks
