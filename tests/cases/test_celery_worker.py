"""Evaluation through a real broker and a real Celery worker process."""

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection
from django.utils import timezone

from cases.models import Case
from cases.tasks import feedback_evaluate_task, feedback_sweep_task
from oscm.celery import app as celery_app

from .factories import FeedbackFactory

PROJECT_DIR = Path(__file__).resolve().parents[2]
CELERY = Path(sys.executable).with_name("celery")
REQUIRE_SERVICES = os.environ.get("OSCM_REQUIRE_SERVICES") == "1"
WAIT_SECONDS = 30

pytestmark = [
    pytest.mark.celery_worker,
    pytest.mark.django_db(transaction=True),
]


def _skip_or_fail(reason: str):
    if REQUIRE_SERVICES:
        pytest.fail(f"OSCM_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


def _test_database_url() -> str:
    """Build a URL for the test database pytest-django created."""
    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = db["HOST"] or "127.0.0.1"
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgres://{credentials}@{host}{port}/{quote(db['NAME'], safe='')}"


@pytest.fixture
def worker(tmp_path):
    """A Celery worker process on the test database; stopped after the test."""
    # Settings fall back to an in-memory broker, so read the variable itself.
    if not os.environ.get("CELERY_BROKER_URL"):
        _skip_or_fail("CELERY_BROKER_URL is not set: point it at a Redis database")
    if connection.vendor != "postgresql":
        _skip_or_fail(
            f"the worker test needs PostgreSQL, the tests run on {connection.vendor}: "
            "a second process cannot see an in-memory SQLite test database"
        )
    celery_app.control.purge()

    env = {**os.environ, "DATABASE_URL": _test_database_url(), "LOG_LEVEL": "INFO"}
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                str(CELERY),
                "-A",
                "oscm",
                "worker",
                "--pool",
                "solo",
                "-Q",
                "celery",
                "--concurrency",
                "1",
                "-l",
                "info",
                "-n",
                f"oscm-test-{os.getpid()}@%h",
            ],
            cwd=PROJECT_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    yield process, log_path

    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_for_case(feedback, task_id: str, process, log_path) -> Case:
    """Poll until the worker logs that it received the task and the case is
    stored. The task's own success line is not logged: the settings keep
    celery.app.trace at WARNING."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        done = f"[{task_id}] received" in log_path.read_text()
        case = Case.objects.filter(trigger_feedback=feedback).first()
        if done and case is not None:
            return case
        assert process.poll() is None, f"worker exited early:\n{log_path.read_text()}"
        time.sleep(0.3)
    pytest.fail(f"no case within {WAIT_SECONDS} s; worker log:\n{log_path.read_text()}")


def test_worker_evaluates_queued_feedback(worker):
    process, log_path = worker
    celery_app.conf.task_always_eager = False
    feedback = FeedbackFactory(kind="nps", score=1)

    result = feedback_evaluate_task.delay([feedback.pk])

    case = _wait_for_case(feedback, result.id, process, log_path)
    feedback.refresh_from_db()
    assert case.rule.name == "NPS detractor 0-3"
    assert case.team.name == "Customer Service"
    assert feedback.evaluated_at is not None


def test_worker_runs_sweep(worker):
    process, log_path = worker
    celery_app.conf.task_always_eager = False
    forgotten = FeedbackFactory(
        kind="csat", score=1, received_at=timezone.now() - timedelta(minutes=10)
    )

    result = feedback_sweep_task.delay()

    case = _wait_for_case(forgotten, result.id, process, log_path)
    assert case.rule.name == "CSAT very dissatisfied (1)"
