"""Evaluations racing on PostgreSQL, each thread in its own connection."""

import os
import threading
import time

import pytest
from django.db import connection, transaction

from cases.models import Case, CaseFeedback
from cases.services import EvaluationResult, feedback_evaluate
from feedback.models import Feedback
from tests.threads import run_at_once

from .factories import CustomerFactory, FeedbackFactory

REQUIRE_SERVICES = os.environ.get("OSCM_REQUIRE_SERVICES") == "1"

pytestmark = pytest.mark.django_db(transaction=True)


def _evaluate_in_threads(id_lists: list[list[int]]) -> list[EvaluationResult]:
    return run_at_once(lambda ids: feedback_evaluate(feedback_ids=ids), id_lists)


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        if REQUIRE_SERVICES:
            pytest.fail(
                "OSCM_REQUIRE_SERVICES=1 but the tests do not run on PostgreSQL"
            )
        pytest.skip("row locking races need PostgreSQL; SQLite writes one at a time")


def test_overlapping_batches_count_once(topics):
    rows = [
        FeedbackFactory(score=1, primary_topic=topics["delivery"]) for _ in range(300)
    ]
    ids = [row.pk for row in rows]

    results = _evaluate_in_threads([ids, ids[100:] + ids[:100], list(reversed(ids))])

    assert sum(result.evaluated for result in results) == 300
    assert sum(result.cases_opened for result in results) == 300
    assert Case.objects.count() == 300
    assert CaseFeedback.objects.count() == 300
    assert not Feedback.objects.filter(evaluated_at__isnull=True).exists()


def test_same_customer_racing_opens_one_case(topics):
    customer = CustomerFactory()
    rows = [
        FeedbackFactory(customer=customer, score=1, primary_topic=topics["price"])
        for _ in range(8)
    ]

    results = _evaluate_in_threads([[row.pk] for row in rows])

    case = Case.objects.get()
    assert sum(result.cases_opened for result in results) == 1
    assert sum(result.attached for result in results) == 7
    assert case.feedback.count() == 8


def _wait_for_lock_wait(timeout: float = 20) -> None:
    """Return once another session of this database waits on a lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                "current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return
        time.sleep(0.05)
    pytest.fail(f"no session waited on a lock within {timeout} s")


def test_key_opened_by_uncommitted_batch_attaches(topics, caplog):
    """A batch that finds no open case while another batch's new case for
    the same key is uncommitted waits for it, then attaches to it."""
    customer = CustomerFactory()
    first, second = (
        FeedbackFactory(customer=customer, score=score, primary_topic=topics["price"])
        for score in (1, 2)
    )
    release = threading.Event()
    results: dict[str, EvaluationResult | BaseException] = {}

    def hold_first_open() -> None:
        try:
            with transaction.atomic():
                results["first"] = feedback_evaluate(feedback_ids=[first.pk])
                release.wait(timeout=30)
        except BaseException as error:  # re-raised in the test thread below
            results["first"] = error
        finally:
            connection.close()

    def evaluate_second() -> None:
        try:
            results["second"] = feedback_evaluate(feedback_ids=[second.pk])
        except BaseException as error:  # re-raised in the test thread below
            results["second"] = error
        finally:
            connection.close()

    holder = threading.Thread(target=hold_first_open)
    holder.start()
    deadline = time.monotonic() + 20
    while "first" not in results and time.monotonic() < deadline:
        time.sleep(0.05)
    racer = threading.Thread(target=evaluate_second)
    racer.start()
    _wait_for_lock_wait()
    release.set()
    holder.join(timeout=30)
    racer.join(timeout=30)

    for result in results.values():
        if isinstance(result, BaseException):
            raise result
    case = Case.objects.get()
    assert results["first"] == EvaluationResult(evaluated=1, cases_opened=1, attached=0)
    assert results["second"] == EvaluationResult(
        evaluated=1, cases_opened=0, attached=1
    )
    assert set(case.feedback.all()) == {first, second}
    assert "opened concurrently" in caplog.text


def test_attach_skips_case_closed_after_lookup(topics, monkeypatch):
    """A case that an agent closed between the look-up and the lock gets no
    feedback: the new feedback opens a case of its own."""
    from cases import selectors

    customer = CustomerFactory()
    first, second = (
        FeedbackFactory(customer=customer, score=score, primary_topic=topics["price"])
        for score in (1, 2)
    )
    feedback_evaluate(feedback_ids=[first.pk])
    closed = Case.objects.get()
    stale = {closed.dedup_key: closed.pk}
    Case.objects.filter(pk=closed.pk).update(is_open=False, state=Case.State.CLOSED)
    monkeypatch.setattr(selectors, "case_open_ids_by_dedup_key", lambda dedup_keys: stale)

    result = feedback_evaluate(feedback_ids=[second.pk])

    assert result == EvaluationResult(evaluated=1, cases_opened=1, attached=0)
    assert list(closed.feedback.all()) == [first]
    opened = Case.objects.get(is_open=True)
    assert list(opened.feedback.all()) == [second]


def test_attach_holds_case_until_commit(topics):
    """An agent cannot close a case while a batch attaching feedback to it
    is uncommitted."""
    from django.db import OperationalError

    customer = CustomerFactory()
    first, second = (
        FeedbackFactory(customer=customer, score=score, primary_topic=topics["price"])
        for score in (1, 2)
    )
    feedback_evaluate(feedback_ids=[first.pk])
    case = Case.objects.get()
    attached = threading.Event()
    release = threading.Event()
    results: dict[str, EvaluationResult | BaseException] = {}

    def attach_and_wait() -> None:
        try:
            with transaction.atomic():
                results["batch"] = feedback_evaluate(feedback_ids=[second.pk])
                attached.set()
                release.wait(timeout=30)
        except BaseException as error:  # re-raised in the test thread below
            results["batch"] = error
            attached.set()
        finally:
            connection.close()

    holder = threading.Thread(target=attach_and_wait)
    holder.start()
    assert attached.wait(timeout=30)
    try:
        with pytest.raises(OperationalError, match="lock timeout"):
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL lock_timeout = '300ms'")
                Case.objects.select_for_update().get(pk=case.pk)
    finally:
        release.set()
        holder.join(timeout=30)

    if isinstance(results["batch"], BaseException):
        raise results["batch"]
    assert results["batch"] == EvaluationResult(evaluated=1, cases_opened=0, attached=1)
    assert set(case.feedback.all()) == {first, second}
