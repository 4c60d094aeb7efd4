import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from celery.schedules import crontab
from django.core.management.base import CommandError

from cases.management.commands.run_scheduler import (
    PeriodicTask,
    Scheduler,
    periodic_tasks_from_schedule,
)

PROJECT_DIR = Path(__file__).resolve().parents[2]


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def recording_task(entry: str, interval: float, calls: list[tuple[str, float]], clock):
    return PeriodicTask(
        entry=entry,
        task_name=f"test.{entry}",
        interval_seconds=interval,
        function=lambda: calls.append((entry, clock.now)),
    )


# The scheduler closes stale database connections around each run.
@pytest.mark.django_db
def test_scheduler_runs_each_task_on_interval():
    clock = FakeClock()
    calls: list[tuple[str, float]] = []
    scheduler = Scheduler(
        [
            recording_task("fast", 10, calls, clock),
            recording_task("slow", 25, calls, clock),
        ],
        clock=clock,
    )

    waits = []
    for now in (0, 5, 10, 20, 25, 30):
        clock.now = now
        waits.append(scheduler.run_due())

    assert calls == [
        ("fast", 0),
        ("slow", 0),
        ("fast", 10),
        ("fast", 20),
        ("slow", 25),
        ("fast", 30),
    ]
    assert waits == [10, 5, 10, 5, 5, 10]


@pytest.mark.django_db
def test_scheduler_survives_failing_task(caplog):
    clock = FakeClock()
    calls: list[tuple[str, float]] = []

    def fail():
        raise RuntimeError("database is down")

    broken = PeriodicTask(
        entry="broken", task_name="test.broken", interval_seconds=5, function=fail
    )
    scheduler = Scheduler(
        [broken, recording_task("fine", 5, calls, clock)], clock=clock
    )

    scheduler.run_due()
    clock.now = 5
    scheduler.run_due()

    assert calls == [("fine", 0), ("fine", 5)]
    failures = [record for record in caplog.records if record.levelname == "ERROR"]
    assert len(failures) == 2
    assert failures[0].schedule_entry == "broken"


def test_schedule_accepts_seconds_and_timedelta():
    tasks = periodic_tasks_from_schedule(
        {
            "number": {"task": "cases.tasks.feedback_sweep_task", "schedule": 60},
            "delta": {
                "task": "cases.tasks.feedback_sweep_task",
                "schedule": timedelta(minutes=2),
            },
        }
    )

    assert [task.interval_seconds for task in tasks] == [60.0, 120.0]


def test_schedule_keeps_crontab():
    tasks = periodic_tasks_from_schedule(
        {
            "nightly": {
                "task": "cases.tasks.feedback_sweep_task",
                "schedule": crontab(hour=3),
            }
        }
    )

    assert [task.cron for task in tasks] == [crontab(hour=3)]


def test_schedule_rejects_unknown_task():
    with pytest.raises(CommandError, match="cannot be imported"):
        periodic_tasks_from_schedule(
            {"typo": {"task": "cases.tasks.missing", "schedule": 5}}
        )


def test_configured_schedule_has_sweep(settings):
    tasks = periodic_tasks_from_schedule(settings.CELERY_BEAT_SCHEDULE)

    names = [task.task_name for task in tasks]
    assert "cases.tasks.feedback_sweep_task" in names
    assert len(names) == len(settings.CELERY_BEAT_SCHEDULE)


def test_command_stops_on_sigterm(tmp_path):
    """A real process: the sweep fails on a database with no tables, the
    scheduler logs it, keeps running, and exits 0 on SIGTERM."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}",
        "CELERY_BROKER_URL": "",
        "OSCM_SWEEP_SECONDS": "1",
        "LOG_LEVEL": "INFO",
    }
    log_path = tmp_path / "scheduler.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "run_scheduler"],
            cwd=PROJECT_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while log_path.read_text().count("failed; it runs again") < 2:
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    output = log_path.read_text()
    assert returncode == 0, output
    assert "Scheduler received SIGTERM, stopping" in output
    assert "Scheduler stopped" in output


@pytest.mark.django_db
def test_scheduler_runs_crontab_at_wall_clock_time():
    from celery.schedules import crontab

    from cases.management.commands.run_scheduler import PeriodicTask, Scheduler

    calls = []
    now = [1000.0]
    task = PeriodicTask(
        entry="daily", task_name="daily", interval_seconds=0.0,
        function=lambda: calls.append(1), cron=crontab(hour=7, minute=0),
    )
    scheduler = Scheduler([task], clock=lambda: now[0])
    wait = task.next_run_at - now[0]

    assert 0 < wait <= 24 * 3600
    scheduler.run_due()
    assert calls == []
    now[0] = task.next_run_at
    scheduler.run_due()
    assert calls == [1]
    assert task.next_run_at - now[0] >= 60


@pytest.mark.django_db
def test_scheduler_run_all_includes_crontab():
    from celery.schedules import crontab

    from cases.management.commands.run_scheduler import PeriodicTask, Scheduler

    calls = []
    task = PeriodicTask(
        entry="daily", task_name="daily", interval_seconds=0.0,
        function=lambda: calls.append(1), cron=crontab(hour=7, minute=0),
    )
    Scheduler([task]).run_all()
    assert calls == [1]
