from datetime import timedelta

import pytest
from django.utils import timezone

from cases.models import Case
from cases.services import EvaluationResult, feedback_sweep
from cases.tasks import feedback_sweep_task

from .factories import FeedbackFactory

pytestmark = pytest.mark.django_db


def received(seconds_ago: int):
    return timezone.now() - timedelta(seconds=seconds_ago)


def test_sweep_evaluates_feedback_past_grace(settings):
    settings.OSCM_SWEEP_GRACE_SECONDS = 30
    old = FeedbackFactory(score=1, received_at=received(31))
    fresh = FeedbackFactory(score=1, received_at=received(5))

    result = feedback_sweep()

    old.refresh_from_db()
    fresh.refresh_from_db()
    assert result == EvaluationResult(evaluated=1, cases_opened=1, attached=0)
    assert old.evaluated_at is not None
    assert fresh.evaluated_at is None
    assert Case.objects.get().trigger_feedback == old


def test_sweep_skips_evaluated_feedback():
    FeedbackFactory(score=1, received_at=received(600), evaluated_at=received(590))

    assert feedback_sweep() == EvaluationResult()
    assert not Case.objects.exists()


def test_sweep_works_in_batches():
    FeedbackFactory.create_batch(5, score=1, received_at=received(600))

    result = feedback_sweep(batch_size=2)

    assert result.evaluated == 5
    assert Case.objects.count() == 5


def test_sweep_passes_over_unanalysed_text():
    waiting = FeedbackFactory.create_batch(
        3,
        kind="text",
        score=None,
        comment="Slow",
        analyzed_at=None,
        received_at=received(600),
    )
    ready = FeedbackFactory(score=1, received_at=received(600))

    result = feedback_sweep(batch_size=2)

    assert result.evaluated == 1
    assert Case.objects.get().trigger_feedback == ready
    for row in waiting:
        row.refresh_from_db()
        assert row.evaluated_at is None


def test_sweep_task_runs_sweep():
    FeedbackFactory(score=1, received_at=received(600))

    feedback_sweep_task.delay()

    assert Case.objects.count() == 1
