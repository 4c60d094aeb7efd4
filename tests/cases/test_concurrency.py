"""Evaluations racing on PostgreSQL, each thread in its own connection."""

import os
import threading

import pytest
from django.db import connection

from cases.models import Case, CaseFeedback
from cases.services import EvaluationResult, feedback_evaluate
from feedback.models import Feedback

from .factories import CustomerFactory, FeedbackFactory

REQUIRE_SERVICES = os.environ.get("OSCM_REQUIRE_SERVICES") == "1"

pytestmark = pytest.mark.django_db(transaction=True)


def _evaluate_in_threads(id_lists: list[list[int]]) -> list[EvaluationResult]:
    results: list[EvaluationResult | BaseException] = [None] * len(id_lists)
    barrier = threading.Barrier(len(id_lists))

    def run(index: int, ids: list[int]) -> None:
        try:
            barrier.wait()
            results[index] = feedback_evaluate(feedback_ids=ids)
        except BaseException as error:  # re-raised in the test thread below
            results[index] = error
        finally:
            connection.close()

    threads = [
        threading.Thread(target=run, args=(index, ids))
        for index, ids in enumerate(id_lists)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


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
