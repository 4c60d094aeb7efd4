"""Run the periodic tasks of ``CELERY_BEAT_SCHEDULE`` in this process.

For installs without a Celery broker: ``make run`` starts this beside the web
server. With a broker, run ``celery beat`` and workers instead.
"""

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from celery.schedules import crontab
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)


@dataclass
class PeriodicTask:
    entry: str
    task_name: str
    interval_seconds: float
    function: Callable[..., object]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    next_run_at: float = 0.0
    # Set for crontab entries, which run at wall-clock times instead of
    # every ``interval_seconds``.
    cron: crontab | None = None

    def seconds_to_next_cron_run(self) -> float:
        return self.cron.remaining_estimate(datetime.now(UTC)).total_seconds()


def periodic_tasks_from_schedule(schedule: dict) -> list[PeriodicTask]:
    """Build the runnable entries of a beat schedule.

    Schedules in seconds (a number or a timedelta) and crontab schedules are
    supported; other kinds are logged and skipped. Raises
    CommandError when a task cannot be imported or an interval is not
    positive, because the scheduler would otherwise run without it.
    """
    tasks = []
    for entry, options in schedule.items():
        interval = options["schedule"]
        cron = interval if isinstance(interval, crontab) else None
        if cron is not None:
            interval = 0.0
        if isinstance(interval, timedelta):
            interval = interval.total_seconds()
        if not isinstance(interval, (int, float)):
            logger.warning(
                "Skipping periodic task %s: run_scheduler supports schedules in seconds "
                "only, got %r; run celery beat for it",
                entry,
                interval,
                extra={"schedule_entry": entry},
            )
            continue
        if interval <= 0 and cron is None:
            raise CommandError(
                f"Periodic task {entry!r} has interval {interval}: use seconds > 0."
            )
        try:
            function = import_string(options["task"])
        except ImportError as error:
            raise CommandError(
                f"Periodic task {entry!r} names {options['task']!r}, which cannot be "
                f"imported: {error}"
            ) from error
        tasks.append(
            PeriodicTask(
                entry=entry,
                task_name=options["task"],
                interval_seconds=float(interval),
                function=function,
                args=tuple(options.get("args", ())),
                kwargs=dict(options.get("kwargs", {})),
                cron=cron,
            )
        )
    return tasks


class Scheduler:
    """Runs each periodic task when due, one at a time, on a monotonic clock.

    Every interval task runs once at start, as celery beat does for an entry
    with no recorded last run, then every ``interval_seconds`` after its
    previous start. A crontab task first runs at its next wall-clock time.
    An exception in one run is logged and the schedule goes on.
    """

    def __init__(
        self, tasks: list[PeriodicTask], clock: Callable[[], float] = time.monotonic
    ):
        self.tasks = tasks
        self.clock = clock
        start = clock()
        for task in tasks:
            task.next_run_at = start
            if task.cron is not None:
                task.next_run_at = start + task.seconds_to_next_cron_run()

    def run_all(self) -> None:
        """Run every task once now, crontab ones included."""
        for task in self.tasks:
            self._run(task)

    def run_due(self) -> float:
        """Run every task that is due; return the seconds until the next one."""
        for task in self.tasks:
            if self.clock() >= task.next_run_at:
                started = self.clock()
                self._run(task)
                if task.cron is not None:
                    # Past the due minute, so the estimate points at the next one.
                    task.next_run_at = self.clock() + max(task.seconds_to_next_cron_run(), 60.0)
                else:
                    task.next_run_at = started + task.interval_seconds
        return max(min(task.next_run_at for task in self.tasks) - self.clock(), 0.0)

    def _run(self, task: PeriodicTask) -> None:
        close_old_connections()
        started = time.monotonic()
        try:
            task.function(*task.args, **task.kwargs)
        except Exception:
            logger.exception(
                "Periodic task %s failed; it runs again at its next scheduled time",
                task.entry,
                extra={"schedule_entry": task.entry, "task": task.task_name},
            )
        else:
            logger.info(
                "Ran periodic task %s in %.2f s",
                task.entry,
                time.monotonic() - started,
                extra={"schedule_entry": task.entry, "task": task.task_name},
            )
        finally:
            close_old_connections()


class Command(BaseCommand):
    help = (
        "Run the periodic tasks of CELERY_BEAT_SCHEDULE in this process on their "
        "intervals, for installs without a Celery broker. Stops on SIGINT or SIGTERM."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--once",
            action="store_true",
            help="Run every periodic task once, then exit.",
        )

    def handle(self, *args, once: bool = False, **options):
        tasks = periodic_tasks_from_schedule(settings.CELERY_BEAT_SCHEDULE)
        if not tasks:
            raise CommandError(
                "CELERY_BEAT_SCHEDULE has no entry with an interval or a crontab."
            )
        scheduler = Scheduler(tasks)
        if once:
            scheduler.run_all()
            return

        stop = threading.Event()

        def request_stop(signum, frame):
            logger.info("Scheduler received %s, stopping", signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        logger.info(
            "Scheduler started with %d periodic tasks",
            len(tasks),
            extra={"schedule_entries": [task.entry for task in tasks]},
        )
        while not stop.is_set():
            stop.wait(scheduler.run_due())
        logger.info("Scheduler stopped")
