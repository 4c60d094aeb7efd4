import threading
import zoneinfo
from datetime import UTC, datetime, time, timedelta

import pytest
from django.db import connection

from cases.followups import (
    UNHAPPY_BANDS,
    case_follow_up_schedule,
    contact_policy_for,
    follow_up_dispatch,
    quiet_hours_end_after,
    survey_token_hash,
)
from cases.models import (
    Case,
    CaseFeedback,
    ContactPolicy,
    FollowUp,
    OutboxMessage,
    RootCause,
    Team,
)
from cases.workflow import case_transition
from oscm.errors import DomainError
from tests.cases.factories import CustomerFactory, FeedbackFactory, TeamFactory

pytestmark = pytest.mark.django_db

# A Monday, noon UTC: outside the default quiet hours (21:00-08:00) in UTC.
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
DUE = NOW + timedelta(days=3)


def make_resolved_case(
    *, kind="nps", score=3, customer=None, team=None, **customer_fields
):
    """Return a resolved case whose trigger is ``kind`` feedback with ``score``."""
    customer = customer if customer is not None else CustomerFactory(**customer_fields)
    trigger = FeedbackFactory(customer=customer, kind=kind, score=score)
    case = Case.objects.create(
        customer=customer,
        trigger_feedback=trigger,
        team=team or Team.objects.get(is_fallback=True),
        state=Case.State.RESOLVED,
        is_open=False,
        dedup_key=f"f{trigger.pk}",
        rule_reason="test trigger",
        routing_reason="test routing",
        resolved_at=NOW,
    )
    CaseFeedback.objects.create(case=case, feedback=trigger)
    return case


def make_open_case(*, customer):
    trigger = FeedbackFactory(customer=customer, kind="nps", score=2)
    return Case.objects.create(
        customer=customer,
        trigger_feedback=trigger,
        team=Team.objects.get(is_fallback=True),
        dedup_key=f"f{trigger.pk}",
        rule_reason="test trigger",
        routing_reason="test routing",
    )


@pytest.fixture
def deliver(django_capture_on_commit_callbacks, mailoutbox):
    """Run the dispatcher and deliver the emails it queued after commit."""

    def run(now=DUE):
        with django_capture_on_commit_callbacks(execute=True):
            return follow_up_dispatch(now=now)

    return run


# Unhappy bands


def test_unhappy_bands_match_seeded_case_rules():
    assert UNHAPPY_BANDS["nps"] == (0, 6)
    assert UNHAPPY_BANDS["csat"] == (1, 2)
    assert UNHAPPY_BANDS["ces"] == (1, 3)
    assert UNHAPPY_BANDS["rating"] == (1, 2)


# Scheduling


def test_schedule_creates_follow_up_after_delay():
    case = make_resolved_case(kind="csat", score=1)

    follow_up = case_follow_up_schedule(case=case, now=NOW)

    assert follow_up.state == FollowUp.State.SCHEDULED
    assert follow_up.kind == "csat"
    assert follow_up.customer_id == case.customer_id
    assert follow_up.due_at == NOW + timedelta(days=3)


def test_schedule_uses_team_delay():
    team = TeamFactory()
    ContactPolicy.objects.create(team=team, followup_delay_days=7)
    case = make_resolved_case(team=team)

    follow_up = case_follow_up_schedule(case=case, now=NOW)

    assert follow_up.due_at == NOW + timedelta(days=7)


def test_schedule_is_idempotent():
    case = make_resolved_case()

    first = case_follow_up_schedule(case=case, now=NOW)
    second = case_follow_up_schedule(case=case, now=NOW + timedelta(hours=1))

    assert second.pk == first.pk
    assert FollowUp.objects.filter(case=case).count() == 1


def test_schedule_skips_text_trigger():
    case = make_resolved_case(kind="text", score=None)

    assert case_follow_up_schedule(case=case, now=NOW) is None
    assert not FollowUp.objects.exists()


def test_schedule_skips_customer_without_email():
    case = make_resolved_case(email="")

    assert case_follow_up_schedule(case=case, now=NOW) is None


def test_schedule_skips_case_without_customer():
    case = make_resolved_case()
    Case.objects.filter(pk=case.pk).update(customer=None)
    case.refresh_from_db()

    assert case_follow_up_schedule(case=case, now=NOW) is None


def test_resolve_transition_schedules_follow_up(django_user_model):
    admin = django_user_model.objects.create_superuser(
        "admin", "admin@example.test", "x"
    )
    case = make_open_case(customer=CustomerFactory())

    case_transition(
        case=case,
        actor=admin,
        to_state=Case.State.RESOLVED,
        root_cause=RootCause.objects.first(),
        resolution_note="Refunded the order.",
    )

    follow_up = FollowUp.objects.get(case=case)
    case.refresh_from_db()
    assert follow_up.state == FollowUp.State.SCHEDULED
    assert follow_up.due_at == case.resolved_at + timedelta(days=3)


def test_rejected_resolve_schedules_nothing(django_user_model):
    admin = django_user_model.objects.create_superuser(
        "admin", "admin@example.test", "x"
    )
    case = make_open_case(customer=CustomerFactory())

    with pytest.raises(DomainError):
        case_transition(case=case, actor=admin, to_state=Case.State.RESOLVED)

    assert not FollowUp.objects.exists()


# Contact policy


def test_contact_policy_global_defaults():
    policy = contact_policy_for(team=None)

    assert policy.cooldown_days == 30
    assert policy.quiet_hours_start == time(21, 0)
    assert policy.quiet_hours_end == time(8, 0)
    assert policy.followup_delay_days == 3
    assert policy.followup_exempt_from_cooldown is True
    assert policy.reopen_when_still_unhappy is True
    assert policy.invitation_valid_days == 14


def test_contact_policy_precedence_survey_team_global():
    team = TeamFactory()
    ContactPolicy.objects.filter(team__isnull=True).update(
        cooldown_days=40, invitation_valid_days=10
    )
    ContactPolicy.objects.create(
        team=team, cooldown_days=20, followup_exempt_from_cooldown=False
    )

    team_policy = contact_policy_for(team=team)
    survey_policy = contact_policy_for(
        team=team, survey={"followup_exempt_from_cooldown": True}
    )

    assert team_policy.cooldown_days == 20
    assert team_policy.invitation_valid_days == 10
    assert team_policy.followup_exempt_from_cooldown is False
    assert survey_policy.followup_exempt_from_cooldown is True
    assert contact_policy_for(team=TeamFactory()).cooldown_days == 40


def test_contact_policy_blank_quiet_hours_mean_none():
    ContactPolicy.objects.filter(team__isnull=True).update(
        quiet_hours_start=None, followup_delay_days=None
    )

    policy = contact_policy_for(team=None)

    assert policy.quiet_hours_start is None
    assert policy.followup_delay_days == 3


def test_contact_policy_without_rows_uses_code_defaults():
    ContactPolicy.objects.all().delete()

    assert contact_policy_for(team=None).followup_delay_days == 3


# Dispatch


def test_dispatch_sends_follow_up_email(deliver, mailoutbox):
    case = make_resolved_case()
    follow_up = case_follow_up_schedule(case=case, now=NOW)

    result = deliver()

    follow_up.refresh_from_db()
    assert result.sent == 1
    assert follow_up.state == FollowUp.State.SENT
    assert follow_up.sent_at == DUE
    assert follow_up.expires_at == DUE + timedelta(days=14)
    assert len(follow_up.token_hash) == 64
    assert len(mailoutbox) == 1
    assert mailoutbox[0].to == [case.customer.email]


def test_dispatch_leaves_follow_up_not_yet_due(deliver, mailoutbox):
    case_follow_up_schedule(case=make_resolved_case(), now=NOW)

    result = deliver(now=DUE - timedelta(minutes=1))

    assert result.sent == 0
    assert mailoutbox == []


def test_dispatch_twice_sends_one_email(deliver, mailoutbox):
    case_follow_up_schedule(case=make_resolved_case(), now=NOW)

    deliver()
    deliver()

    assert len(mailoutbox) == 1
    assert OutboxMessage.objects.count() == 1


def test_dispatch_skips_opted_out_customer(deliver, mailoutbox):
    case = make_resolved_case(is_opted_out=True)
    follow_up = case_follow_up_schedule(case=case, now=NOW)

    deliver()

    follow_up.refresh_from_db()
    assert follow_up.state == FollowUp.State.SKIPPED
    assert "opted out" in follow_up.skip_reason
    assert mailoutbox == []


def test_dispatch_postpones_while_other_case_open(deliver, mailoutbox):
    case = make_resolved_case()
    other = make_open_case(customer=case.customer)
    follow_up = case_follow_up_schedule(case=case, now=NOW)

    result = deliver()

    follow_up.refresh_from_db()
    assert result.postponed == 1
    assert follow_up.state == FollowUp.State.SCHEDULED
    assert follow_up.due_at == DUE + timedelta(days=1)
    assert follow_up.attempts == 1
    assert f"case #{other.pk}" in follow_up.skip_reason
    assert mailoutbox == []


def test_dispatch_sends_after_other_case_closes(deliver, mailoutbox):
    case = make_resolved_case()
    other = make_open_case(customer=case.customer)
    case_follow_up_schedule(case=case, now=NOW)
    deliver()
    Case.objects.filter(pk=other.pk).update(is_open=False, state=Case.State.RESOLVED)

    deliver(now=DUE + timedelta(days=1))

    assert len(mailoutbox) == 1


def test_dispatch_skips_after_max_postponements(deliver):
    case = make_resolved_case()
    make_open_case(customer=case.customer)
    follow_up = case_follow_up_schedule(case=case, now=NOW)
    FollowUp.objects.filter(pk=follow_up.pk).update(attempts=14)

    deliver()

    follow_up.refresh_from_db()
    assert follow_up.state == FollowUp.State.SKIPPED
    assert "stayed open" in follow_up.skip_reason


def test_dispatch_cancels_when_case_reopened(deliver, mailoutbox):
    case = make_resolved_case()
    follow_up = case_follow_up_schedule(case=case, now=NOW)
    Case.objects.filter(pk=case.pk).update(is_open=True, state=Case.State.IN_PROGRESS)

    deliver()

    follow_up.refresh_from_db()
    assert follow_up.state == FollowUp.State.CANCELLED
    assert mailoutbox == []


def _surveyed_recently(customer):
    earlier = make_resolved_case(customer=customer)
    FollowUp.objects.create(
        case=earlier,
        customer=customer,
        kind="nps",
        state=FollowUp.State.ANSWERED,
        due_at=DUE - timedelta(days=5),
        sent_at=DUE - timedelta(days=5),
    )


def test_dispatch_cooldown_without_exemption_skips(deliver, mailoutbox):
    ContactPolicy.objects.filter(team__isnull=True).update(
        followup_exempt_from_cooldown=False
    )
    case = make_resolved_case()
    _surveyed_recently(case.customer)
    follow_up = case_follow_up_schedule(case=case, now=NOW)

    deliver()

    follow_up.refresh_from_db()
    assert follow_up.state == FollowUp.State.SKIPPED
    assert "last 30 days" in follow_up.skip_reason
    assert mailoutbox == []


def test_dispatch_cooldown_with_exemption_sends(deliver, mailoutbox):
    case = make_resolved_case()
    _surveyed_recently(case.customer)
    follow_up = case_follow_up_schedule(case=case, now=NOW)

    deliver()

    follow_up.refresh_from_db()
    assert follow_up.state == FollowUp.State.SENT
    assert len(mailoutbox) == 1


def test_dispatch_cooldown_over_sends(deliver, mailoutbox):
    ContactPolicy.objects.filter(team__isnull=True).update(
        followup_exempt_from_cooldown=False
    )
    case = make_resolved_case()
    _surveyed_recently(case.customer)
    FollowUp.objects.filter(state=FollowUp.State.ANSWERED).update(
        sent_at=DUE - timedelta(days=31)
    )
    case_follow_up_schedule(case=case, now=NOW)

    deliver()

    assert len(mailoutbox) == 1


def test_dispatch_quiet_hours_before_midnight_in_jakarta(deliver, mailoutbox):
    case = make_resolved_case(time_zone="Asia/Jakarta")
    follow_up = case_follow_up_schedule(case=case, now=NOW)
    # 15:30 UTC is 22:30 in Jakarta (UTC+7), inside 21:00-08:00.
    evening = datetime(2026, 3, 5, 15, 30, tzinfo=UTC)

    result = deliver(now=evening)

    follow_up.refresh_from_db()
    assert result.postponed == 1
    assert follow_up.state == FollowUp.State.SCHEDULED
    # 08:00 the next morning in Jakarta is 01:00 UTC.
    assert follow_up.due_at == datetime(2026, 3, 6, 1, 0, tzinfo=UTC)
    assert follow_up.attempts == 0
    assert mailoutbox == []


def test_dispatch_quiet_hours_after_midnight_in_jakarta(deliver, mailoutbox):
    case = make_resolved_case(time_zone="Asia/Jakarta")
    follow_up = case_follow_up_schedule(case=case, now=NOW)
    # 23:30 UTC on the 5th is 06:30 on the 6th in Jakarta.
    early = datetime(2026, 3, 5, 23, 30, tzinfo=UTC)

    deliver(now=early)
    follow_up.refresh_from_db()
    assert follow_up.due_at == datetime(2026, 3, 6, 1, 0, tzinfo=UTC)

    deliver(now=follow_up.due_at)
    follow_up.refresh_from_db()
    assert follow_up.state == FollowUp.State.SENT
    assert len(mailoutbox) == 1


def test_dispatch_quiet_hours_use_team_calendar_zone(deliver):
    case = make_resolved_case()
    calendar = case.team.calendar
    calendar.timezone = "Asia/Jakarta"
    calendar.save()
    follow_up = case_follow_up_schedule(case=case, now=NOW)

    deliver(now=datetime(2026, 3, 5, 15, 30, tzinfo=UTC))

    follow_up.refresh_from_db()
    assert follow_up.state == FollowUp.State.SCHEDULED


def test_quiet_hours_same_day_window():
    zone = zoneinfo.ZoneInfo("Europe/Berlin")
    lunch = datetime(2026, 3, 2, 11, 30, tzinfo=UTC)  # 12:30 in Berlin

    end = quiet_hours_end_after(moment=lunch, zone=zone, start=time(12), end=time(14))

    assert end == datetime(2026, 3, 2, 13, 0, tzinfo=UTC)


def test_quiet_hours_outside_window():
    zone = zoneinfo.ZoneInfo("Asia/Jakarta")

    end = quiet_hours_end_after(moment=NOW, zone=zone, start=time(21), end=time(8))

    assert end is None


def test_quiet_hours_end_in_daylight_saving_gap():
    zone = zoneinfo.ZoneInfo("America/New_York")
    # 01:30 local on 8 March 2026; clocks jump from 02:00 to 03:00.
    night = datetime(2026, 3, 8, 6, 30, tzinfo=UTC)

    end = quiet_hours_end_after(moment=night, zone=zone, start=time(1), end=time(2, 30))

    assert end == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)


def test_dispatch_failure_does_not_block_others(deliver, mailoutbox, monkeypatch):
    from cases import followups

    broken = case_follow_up_schedule(case=make_resolved_case(), now=NOW)
    case_follow_up_schedule(case=make_resolved_case(), now=NOW)
    render = followups.follow_up_email_payload

    def payload_or_fail(follow_up, *, token):
        if follow_up.pk == broken.pk:
            raise ValueError("template error")
        return render(follow_up, token=token)

    monkeypatch.setattr(followups, "follow_up_email_payload", payload_or_fail)

    result = deliver()

    broken.refresh_from_db()
    assert result.failed == 1
    assert result.sent == 1
    assert broken.state == FollowUp.State.SCHEDULED
    assert broken.token_hash is None
    assert len(mailoutbox) == 1


def test_dispatch_expires_old_sent_follow_ups():
    case = make_resolved_case()
    follow_up = FollowUp.objects.create(
        case=case,
        customer=case.customer,
        kind="nps",
        state=FollowUp.State.SENT,
        due_at=NOW,
        sent_at=NOW,
        expires_at=NOW + timedelta(days=14),
        token_hash=survey_token_hash("old"),
    )

    result = follow_up_dispatch(now=NOW + timedelta(days=15))

    follow_up.refresh_from_db()
    assert result.expired == 1
    assert follow_up.state == FollowUp.State.EXPIRED


def test_dispatch_batch_mixes_send_skip_postpone(
    django_capture_on_commit_callbacks, mailoutbox
):
    sent = case_follow_up_schedule(case=make_resolved_case(), now=NOW)
    opted_out = case_follow_up_schedule(
        case=make_resolved_case(is_opted_out=True), now=NOW
    )
    busy_case = make_resolved_case()
    other = make_open_case(customer=busy_case.customer)
    postponed = case_follow_up_schedule(case=busy_case, now=NOW)
    reopened_case = make_resolved_case()
    reopened = case_follow_up_schedule(case=reopened_case, now=NOW)
    Case.objects.filter(pk=reopened_case.pk).update(is_open=True)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        result = follow_up_dispatch(now=DUE)

    for follow_up in (sent, opted_out, postponed, reopened):
        follow_up.refresh_from_db()
    assert (result.sent, result.skipped, result.postponed) == (1, 1, 1)
    assert result.cancelled == 1
    assert sent.state == FollowUp.State.SENT
    assert opted_out.state == FollowUp.State.SKIPPED
    assert postponed.state == FollowUp.State.SCHEDULED
    assert postponed.due_at == DUE + timedelta(days=1)
    assert f"case #{other.pk}" in postponed.skip_reason
    assert reopened.state == FollowUp.State.CANCELLED
    assert len(callbacks) == 1
    assert [email.to for email in mailoutbox] == [[sent.customer.email]]


def test_dispatch_batch_same_customer_surveyed_once(deliver, mailoutbox):
    first = make_resolved_case()
    second = make_resolved_case(customer=first.customer)
    ContactPolicy.objects.filter(team__isnull=True).update(
        followup_exempt_from_cooldown=False
    )
    case_follow_up_schedule(case=first, now=NOW)
    case_follow_up_schedule(case=second, now=NOW)

    result = deliver()

    assert result.sent == 1
    assert result.skipped == 1
    assert len(mailoutbox) == 1


def test_dispatch_batch_queries_do_not_grow(django_capture_on_commit_callbacks):
    def dispatch_counting(count):
        FollowUp.objects.update(state=FollowUp.State.CANCELLED)
        for _ in range(count):
            case_follow_up_schedule(case=make_resolved_case(), now=NOW)
        with (
            django_capture_on_commit_callbacks() as callbacks,
            connection.execute_wrapper(counter),
        ):
            follow_up_dispatch(now=DUE)
        return callbacks

    queries = []

    def counter(execute, sql, params, many, context):
        queries.append(sql)
        return execute(sql, params, many, context)

    dispatch_counting(2)
    small = len(queries)
    queries.clear()
    callbacks = dispatch_counting(12)

    assert len(queries) == small
    assert len(callbacks) == 1


def test_dispatch_batch_task_twice_sends_once(deliver, mailoutbox):
    from cases.tasks import outbox_deliver_batch_task

    for _ in range(3):
        case_follow_up_schedule(case=make_resolved_case(), now=NOW)
    deliver()
    message_ids = list(OutboxMessage.objects.values_list("pk", flat=True))

    outbox_deliver_batch_task.delay(message_ids)

    assert len(mailoutbox) == 3
    assert OutboxMessage.objects.filter(state=OutboxMessage.State.SENT).count() == 3


# Emails


def test_email_english_with_nps_links(deliver, mailoutbox, settings):
    settings.OSCM_BASE_URL = "https://feedback.example.test"
    case_follow_up_schedule(case=make_resolved_case(language="en"), now=NOW)

    deliver()

    email = mailoutbox[0]
    html, mimetype = email.alternatives[0]
    assert email.subject == "How did we do?"
    assert "recommend us" in email.body
    assert mimetype == "text/html"
    for score in range(11):
        assert f"?score={score}" in email.body
        assert f'?score={score}"' in html
    assert "https://feedback.example.test/s/" in email.body
    assert "https://feedback.example.test/s/unsubscribe/" in email.body


def test_email_indonesian(deliver, mailoutbox):
    case_follow_up_schedule(case=make_resolved_case(language="id"), now=NOW)

    deliver()

    email = mailoutbox[0]
    html, _ = email.alternatives[0]
    assert email.subject == "Bagaimana layanan kami?"
    assert "merekomendasikan" in email.body
    assert "Sangat tidak mungkin" in html
    assert "Berhenti berlangganan" in html


def test_email_ces_scale_with_labels(deliver, mailoutbox):
    case_follow_up_schedule(case=make_resolved_case(kind="ces", score=2), now=NOW)

    deliver()

    body = mailoutbox[0].body
    assert "?score=1" in body
    assert "?score=7" in body
    assert "?score=0" not in body
    assert "?score=8" not in body
    assert "Very difficult" in body
    assert "Very easy" in body


def test_email_has_list_unsubscribe_headers(deliver, mailoutbox):
    case_follow_up_schedule(case=make_resolved_case(), now=NOW)

    deliver()

    message = mailoutbox[0].message()
    assert message["List-Unsubscribe"].startswith(
        "<http://127.0.0.1:8000/s/unsubscribe/"
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_outbox_payload_drops_token_after_send(deliver):
    case_follow_up_schedule(case=make_resolved_case(), now=NOW)

    deliver()

    message = OutboxMessage.objects.get()
    assert message.state == OutboxMessage.State.SENT
    assert message.dedup_key.startswith("follow-up:")
    assert "text" not in message.payload
    assert "html" not in message.payload


# Races on PostgreSQL, each thread in its own connection


def _run_in_threads(function, count):
    errors = []
    barrier = threading.Barrier(count)

    def run():
        try:
            barrier.wait()
            function()
        except Exception as error:  # noqa: BLE001 - re-raised in the test thread
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]


@pytest.mark.django_db(transaction=True)
def test_concurrent_dispatch_sends_each_once(mailoutbox):
    if connection.vendor != "postgresql":
        pytest.skip("row locking races need PostgreSQL; SQLite writes one at a time")
    for _ in range(20):
        case_follow_up_schedule(case=make_resolved_case(), now=NOW)

    _run_in_threads(lambda: follow_up_dispatch(now=DUE), count=4)

    assert FollowUp.objects.filter(state=FollowUp.State.SENT).count() == 20
    assert OutboxMessage.objects.filter(state=OutboxMessage.State.SENT).count() == 20
    assert len(mailoutbox) == 20
