"""Time follow-up survey dispatch, in process and through two Celery workers.

Creates a database of its own (``oscm_bench_followups`` on 127.0.0.1:5432 as
user postgres by default), migrates it, bulk-creates resolved cases whose
customers have email addresses (half English, half Indonesian) with one due
follow-up each, and drops the database at the end unless ``--keep`` is
given. The global contact policy gets no quiet hours, so the result does not
depend on the time of day the benchmark runs.

Two runs over the same follow-ups, reset to scheduled in between:

1. in process: ``follow_up_dispatch`` called until nothing is due, with
   Celery eager, so each email is delivered right after its commit;
2. workers: ``--workers`` Celery worker processes (solo pool) on the Redis
   database in ``--broker-url``. The script queues ``--dispatch-tasks``
   ``follow_up_dispatch_task`` messages, as beat does once per interval, and
   the workers deliver the outbox messages those runs queue.

Every worker sends to Django's locmem backend, which keeps messages in the
worker's own memory, so the script counts outbox rows in state sent. The
rate is follow-ups divided by the time from queueing the first task to the
``sent_at`` of the last row.

    .venv/bin/python bench/follow_up_dispatch_bench.py
    .venv/bin/python bench/follow_up_dispatch_bench.py --follow-ups 2000 --keep
"""

import argparse
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from benchdb import REPOSITORY, create_database, drop_database, machine_summary

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/oscm_bench_followups"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/11"
CELERY = Path(sys.executable).with_name("celery")
TARGET_PER_SECOND = 500
WAIT_SECONDS = 600


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--follow-ups", type=int, default=10_000, help="Due follow-ups to create."
    )
    parser.add_argument(
        "--database-url",
        default=DEFAULT_URL,
        help="PostgreSQL database to create, use and drop.",
    )
    parser.add_argument(
        "--broker-url",
        default=DEFAULT_BROKER_URL,
        help="Redis database for the workers' queue; it is purged before and after the run.",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="Celery worker processes."
    )
    parser.add_argument(
        "--dispatch-tasks",
        type=int,
        default=1,
        help="follow_up_dispatch_task messages to queue; 1 is one beat interval.",
    )
    parser.add_argument(
        "--keep", action="store_true", help="Keep the database afterwards."
    )
    return parser.parse_args()


def setup_django(url: str) -> None:
    """Create the database, configure Django with eager Celery and migrate."""
    create_database(url)
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = "oscm.settings"
    os.environ["EMAIL_BACKEND"] = "django.core.mail.backends.locmem.EmailBackend"
    # One info line per email would flood the output and cost time.
    os.environ["LOG_LEVEL"] = "WARNING"
    # This process runs tasks in-process; the workers get the broker.
    os.environ.pop("CELERY_BROKER_URL", None)
    sys.path.insert(0, str(REPOSITORY))

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def make_follow_ups(count: int) -> None:
    """Bulk-create ``count`` resolved cases, each with one due follow-up."""
    from django.utils import timezone

    from cases.models import Case, ContactPolicy, FollowUp, Team
    from feedback.models import Customer, Feedback

    now = timezone.now()
    ContactPolicy.objects.filter(team__isnull=True).update(
        quiet_hours_start=None, quiet_hours_end=None
    )
    team = Team.objects.get(is_fallback=True)
    customers = Customer.objects.bulk_create(
        Customer(
            external_id=f"bench-{number}",
            email=f"bench-{number}@example.test",
            name=f"Customer {number}",
            language="id" if number % 2 else "en",
        )
        for number in range(count)
    )
    triggers = Feedback.objects.bulk_create(
        Feedback(
            customer=customer,
            kind=Feedback.Kind.NPS,
            source=Feedback.Source.SURVEY,
            score=number % 7,
            external_id=f"bench-{number}",
            occurred_at=now - timedelta(days=5),
            analyzed_at=now - timedelta(days=5),
            evaluated_at=now - timedelta(days=5),
        )
        for number, customer in enumerate(customers)
    )
    cases = Case.objects.bulk_create(
        Case(
            customer=trigger.customer,
            trigger_feedback=trigger,
            team=team,
            state=Case.State.RESOLVED,
            is_open=False,
            dedup_key=f"bench-{trigger.pk}",
            rule_reason="benchmark",
            routing_reason="benchmark",
            resolved_at=now - timedelta(days=3),
        )
        for trigger in triggers
    )
    FollowUp.objects.bulk_create(
        FollowUp(
            case=case,
            customer=case.customer,
            kind="nps",
            due_at=now - timedelta(minutes=1),
        )
        for case in cases
    )


def reset_follow_ups() -> None:
    """Put every follow-up back to scheduled and delete the outbox."""
    from cases.models import FollowUp, OutboxMessage

    OutboxMessage.objects.all().delete()
    FollowUp.objects.update(
        state=FollowUp.State.SCHEDULED,
        token_hash=None,
        expires_at=None,
        sent_at=None,
        skip_reason="",
    )


def sent_count() -> int:
    from cases.models import OutboxMessage

    return OutboxMessage.objects.filter(state=OutboxMessage.State.SENT).count()


def check_all_sent(count: int) -> None:
    sent = sent_count()
    if sent != count:
        raise SystemExit(f"only {sent} of {count} outbox messages were sent")


def run_in_process(count: int) -> float:
    """Dispatch everything in this process and return the emails per second."""
    from django.core import mail

    from cases.followups import follow_up_dispatch

    mail.outbox = []
    started = time.perf_counter()
    while follow_up_dispatch().sent:
        pass
    elapsed = time.perf_counter() - started
    if len(mail.outbox) != count:
        raise SystemExit(
            f"in process: {len(mail.outbox)} emails sent, expected {count}"
        )
    check_all_sent(count)
    return count / elapsed


def start_workers(args: argparse.Namespace, log_dir: Path) -> list[subprocess.Popen]:
    env = {
        **os.environ,
        "CELERY_BROKER_URL": args.broker_url,
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        "LOG_LEVEL": "WARNING",
    }
    workers = []
    for number in range(args.workers):
        log = (log_dir / f"worker-{number}.log").open("w")
        workers.append(
            subprocess.Popen(
                [
                    str(CELERY),
                    "-A",
                    "oscm",
                    "worker",
                    "--pool",
                    "solo",
                    "-Q",
                    "celery",
                    "-l",
                    "warning",
                    "--without-gossip",
                    "--without-mingle",
                    "-n",
                    f"bench-{number}-{os.getpid()}@%h",
                ],
                cwd=REPOSITORY,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    return workers


def wait_for_workers(log_dir: Path, count: int) -> None:
    """Wait until every worker log has Celery's "ready." line."""
    deadline = time.monotonic() + 60
    logs = [log_dir / f"worker-{number}.log" for number in range(count)]
    while time.monotonic() < deadline:
        if all(" ready." in log.read_text() for log in logs):
            return
        time.sleep(0.2)
    raise SystemExit(f"{count} workers were not ready within 60 s; see {log_dir}")


def stop_workers(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def celery_command(args: argparse.Namespace, *arguments: str) -> None:
    """Run the celery command line on the workers' broker.

    This process runs Celery eager, so messages for the workers go through
    the command line, which reads CELERY_BROKER_URL at start.
    """
    env = {**os.environ, "CELERY_BROKER_URL": args.broker_url}
    subprocess.run(
        [str(CELERY), "-A", "oscm", *arguments],
        cwd=REPOSITORY,
        env=env,
        check=True,
        capture_output=True,
    )


def run_workers(args: argparse.Namespace, log_dir: Path) -> tuple[float, float]:
    """Dispatch through the workers; return emails per second and the seconds.

    The clock starts when ``celery call`` has queued the dispatch tasks, so
    the command line's start-up time is not counted.
    """
    from django.db.models import Max, Min
    from django.utils import timezone

    from cases.models import OutboxMessage

    celery_command(args, "purge", "-f")
    workers = start_workers(args, log_dir)
    try:
        wait_for_workers(log_dir, args.workers)
        for _ in range(args.dispatch_tasks):
            celery_command(args, "call", "cases.tasks.follow_up_dispatch_task")
        started_at = timezone.now()
        deadline = time.monotonic() + WAIT_SECONDS
        while sent_count() < args.follow_ups:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"workers: {sent_count()} of {args.follow_ups} sent after "
                    f"{WAIT_SECONDS} s; see {log_dir}"
                )
            for worker in workers:
                if worker.poll() is not None:
                    raise SystemExit(f"a worker exited early; see {log_dir}")
            time.sleep(0.2)
        first_sent_at = OutboxMessage.objects.aggregate(first=Min("sent_at"))["first"]
        last_sent_at = OutboxMessage.objects.aggregate(last=Max("sent_at"))["last"]
    finally:
        stop_workers(workers)
        celery_command(args, "purge", "-f")
    started_at = min(started_at, first_sent_at)
    seconds = (last_sent_at - started_at).total_seconds()
    return args.follow_ups / seconds, seconds


def main() -> None:
    args = parse_args()
    setup_django(args.database_url)
    log_dir = (
        Path(os.environ.get("TMPDIR", "/tmp")) / f"oscm-follow-up-bench-{os.getpid()}"
    )
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        for line in machine_summary():
            print(line)
        started = time.perf_counter()
        make_follow_ups(args.follow_ups)
        print(
            f"created {args.follow_ups:,} due follow-ups in {time.perf_counter() - started:.1f} s"
        )

        rate = run_in_process(args.follow_ups)
        print(f"in process: {rate:,.0f} emails/s (target {TARGET_PER_SECOND})")

        reset_follow_ups()
        rate, seconds = run_workers(args, log_dir)
        print(
            f"{args.workers} workers, {args.dispatch_tasks} dispatch tasks: "
            f"{rate:,.0f} emails/s, {seconds:.1f} s to the last sent row "
            f"(target {TARGET_PER_SECOND}); worker logs in {log_dir}"
        )
    finally:
        if args.keep:
            print(f"kept {args.database_url}")
        else:
            drop_database(args.database_url)


if __name__ == "__main__":
    main()
