"""The closed loop through a real Celery worker and celery beat.

Feedback posted to the API opens a case in the worker, an agent resolves it,
beat dispatches the follow-up survey, the worker sends it through the
outbox, and the customer's answer records the recovery on the case.

The worker sends email with Django's file-based backend into a temporary
folder that the test reads. The locmem backend cannot show what the worker
sent: it appends messages to ``django.core.mail.outbox``, a list in the
worker's own memory, which the test process cannot read.

Needs PostgreSQL (a second process cannot see an in-memory SQLite test
database) and Redis in CELERY_BROKER_URL; use a Redis database of its own,
because the test purges the queue.
"""

import email
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from cases.models import Case, ContactPolicy, FollowUp, OutboxMessage, Team
from oscm.celery import app as celery_app
from tests.cases.factories import RootCauseFactory, TeamMemberFactory, UserFactory
from tests.cases.test_celery_worker import _skip_or_fail, _test_database_url
from tests.cases.test_follow_ups import make_resolved_case

PROJECT_DIR = Path(__file__).resolve().parents[2]
CELERY = Path(sys.executable).with_name("celery")
WAIT_SECONDS = 60
# The slow backend sleeps this long per send, and a row left in sending is
# reclaimed after CLAIM_TIMEOUT_SECONDS, which must be longer than a send.
SLOW_SEND_SECONDS = 3
CLAIM_TIMEOUT_SECONDS = 6

pytestmark = [
    pytest.mark.celery_worker,
    pytest.mark.django_db(transaction=True),
]


class CeleryProcess:
    """A ``celery worker`` or ``celery beat`` subprocess with its log file."""

    def __init__(self, arguments: list[str], *, env: dict, log_path: Path):
        self.arguments = arguments
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                [str(CELERY), "-A", "oscm", *self.arguments],
                cwd=PROJECT_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def check_running(self) -> None:
        assert self.process.poll() is None, (
            f"{self.arguments[0]} exited early:\n{self.log_path.read_text()}"
        )

    def kill(self) -> None:
        """Kill with SIGKILL: no shutdown, no acknowledgement, no cleanup."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def loop(tmp_path):
    """Start a worker and beat on the test database with short beat intervals.

    Returns a function that takes extra environment variables for both
    processes, starts them and returns the (worker, beat) pair. Both are
    stopped after the test.
    """
    # Settings fall back to an in-memory broker, so read the variable itself.
    if not os.environ.get("CELERY_BROKER_URL"):
        _skip_or_fail("CELERY_BROKER_URL is not set: point it at a Redis database")
    if connection.vendor != "postgresql":
        _skip_or_fail(
            f"the loop test needs PostgreSQL, the tests run on {connection.vendor}: "
            "a second process cannot see an in-memory SQLite test database"
        )
    celery_app.control.purge()
    celery_app.conf.task_always_eager = False
    started: list[CeleryProcess] = []

    def start(extra_env: dict[str, str]) -> tuple[CeleryProcess, CeleryProcess]:
        env = {
            **os.environ,
            "DATABASE_URL": _test_database_url(),
            "LOG_LEVEL": "INFO",
            "OSCM_FOLLOW_UP_DISPATCH_SECONDS": "1",
            "OSCM_OUTBOX_SWEEP_SECONDS": "1",
            **extra_env,
        }
        worker = CeleryProcess(
            [
                "worker",
                "--pool",
                "solo",
                "-Q",
                "celery",
                "-l",
                "info",
                "--without-gossip",
                "--without-mingle",
                "-n",
                f"oscm-loop-{os.getpid()}@%h",
            ],
            env=env,
            log_path=tmp_path / "worker.log",
        )
        beat = CeleryProcess(
            [
                "beat",
                "-l",
                "info",
                "-s",
                str(tmp_path / "beat-schedule"),
                "--pidfile",
                str(tmp_path / "beat.pid"),
            ],
            env=env,
            log_path=tmp_path / "beat.log",
        )
        for process in (worker, beat):
            started.append(process)
            process.start()
        return worker, beat

    yield start

    for process in started:
        process.stop()
    celery_app.control.purge()


def _wait_for(condition, *, description: str, processes: list[CeleryProcess]):
    """Poll ``condition`` until it returns a true value and return that value."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        for process in processes:
            process.check_running()
        time.sleep(0.2)
    logs = "\n".join(
        f"--- {process.log_path.name}\n{process.log_path.read_text()}"
        for process in processes
    )
    pytest.fail(f"{description} not seen within {WAIT_SECONDS} s\n{logs}")


def _message_files(folder: Path) -> list[Path]:
    """Return the files holding messages. The file-based backend creates its
    file when a connection opens, before any message is written, so an
    empty file is a connection that sent nothing."""
    return sorted(
        path for path in folder.iterdir() if path.is_file() and path.stat().st_size > 0
    )


def _message_texts(path: Path) -> list[str]:
    """Return the decoded text parts of the one message in a file-based backend file."""
    raw = path.read_bytes()
    # The backend ends each message with a line of 79 dashes.
    body = raw.rsplit(b"\n" + b"-" * 79, 1)[0]
    message = email.message_from_bytes(body)
    return [
        part.get_payload(decode=True).decode(part.get_content_charset() or "utf-8")
        for part in message.walk()
        if part.get_content_maintype() == "text"
    ]


def test_loop_feedback_to_recovery(loop, tmp_path):
    """Detractor feedback ends as a recovered case, through worker and beat."""
    mail_dir = tmp_path / "mail"
    mail_dir.mkdir()
    worker, beat = loop(
        {
            "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            "EMAIL_FILE_PATH": str(mail_dir),
        }
    )
    processes = [worker, beat]
    integration = UserFactory(username="survey-tool")
    integration.user_permissions.add(Permission.objects.get(codename="add_feedback"))
    agent = UserFactory(username="agent-loop")
    for team in Team.objects.all():
        TeamMemberFactory(team=team, user=agent)
        # No delay and no quiet hours (equal start and end), so the survey
        # is due as soon as the case is resolved.
        ContactPolicy.objects.create(
            team=team,
            followup_delay_days=0,
            quiet_hours_start="00:00",
            quiet_hours_end="00:00",
        )
    root_cause = RootCauseFactory(name="Courier lost the parcel")

    api = APIClient()
    api.force_authenticate(integration)
    response = api.post(
        "/api/v1/feedback/",
        {
            "external_id": "loop-1",
            "kind": "nps",
            "source": "survey",
            "score": 2,
            "comment": "The courier lost my parcel",
            "customer": "loop-customer",
            "email": "loop-customer@example.test",
            "touchpoint": "delivery",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    case = _wait_for(
        lambda: Case.objects.filter(trigger_feedback__external_id="loop-1").first(),
        description="a case opened by the worker",
        processes=processes,
    )
    assert case.assignee_id == agent.pk
    assert case.state == Case.State.ASSIGNED

    agent_api = APIClient()
    agent_api.force_authenticate(agent)
    response = agent_api.post(
        f"/api/v1/cases/{case.pk}/transition/",
        {
            "to_state": "resolved",
            "root_cause": root_cause.pk,
            "resolution_note": "Sent a replacement by express courier.",
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    follow_up = FollowUp.objects.get(case=case)
    assert follow_up.state == FollowUp.State.SCHEDULED

    _wait_for(
        lambda: OutboxMessage.objects.filter(
            dedup_key=f"follow-up:{follow_up.pk}", state=OutboxMessage.State.SENT
        ).exists(),
        description="the survey email marked sent",
        processes=processes,
    )
    # Two more beat intervals: a second send would show up as a second file.
    time.sleep(2.5)
    files = _message_files(mail_dir)
    assert len(files) == 1, [path.read_text() for path in files]
    text = "\n".join(_message_texts(files[0]))
    assert "To: loop-customer@example.test" in files[0].read_text()
    match = re.search(r"/s/([A-Za-z0-9_-]+)/\?score=9", text)
    assert match is not None, text
    survey_path = f"/s/{match.group(1)}/"

    customer = Client()
    assert customer.get(survey_path, {"score": 9}).status_code == 200
    response = customer.post(survey_path, {"score": "9", "comment": "Thanks"})
    assert response.status_code == 200

    case.refresh_from_db()
    follow_up.refresh_from_db()
    assert follow_up.state == FollowUp.State.ANSWERED
    assert case.recovery_score_before == 2
    assert case.recovery_score_after == 9
    assert case.is_recovered is True


def test_worker_killed_mid_send_sends_once(loop, tmp_path):
    """A worker killed while sending leaves the row in sending, and the sweep
    of a restarted worker reclaims it after the claim timeout and sends it.

    Delivery is at least once, not exactly once. ``outbox_deliver`` commits
    the claim (sending), calls the handler, and only then marks the row
    sent. Here the kill lands before the backend hands the message over, so
    exactly one message goes out. A kill after the mail server accepted the
    message (``email.send`` has returned) but before ``_finish`` commits
    state sent leaves the row in sending too, and the reclaim sends the
    message a second time. That window is the few milliseconds between the
    end of the SMTP DATA exchange and that UPDATE.
    """
    mail_dir = tmp_path / "mail"
    marker_dir = tmp_path / "markers"
    mail_dir.mkdir()
    marker_dir.mkdir()
    worker, beat = loop(
        {
            "EMAIL_BACKEND": "tests.integration.slow_backend.EmailBackend",
            "EMAIL_FILE_PATH": str(mail_dir),
            "OSCM_SLOW_EMAIL_MARKER_DIR": str(marker_dir),
            "OSCM_SLOW_EMAIL_SECONDS": str(SLOW_SEND_SECONDS),
            "OSCM_OUTBOX_CLAIM_TIMEOUT_SECONDS": str(CLAIM_TIMEOUT_SECONDS),
        }
    )
    processes = [worker, beat]
    team = Team.objects.get(is_fallback=True)
    ContactPolicy.objects.create(
        team=team, quiet_hours_start="00:00", quiet_hours_end="00:00"
    )
    case = make_resolved_case(score=3, team=team)
    follow_up = FollowUp.objects.create(
        case=case, customer=case.customer, kind="nps", due_at=case.resolved_at
    )

    _wait_for(
        lambda: any(marker_dir.iterdir()),
        description="the worker starting to send",
        processes=processes,
    )
    worker.kill()
    message = OutboxMessage.objects.get(dedup_key=f"follow-up:{follow_up.pk}")
    assert message.state == OutboxMessage.State.SENDING
    assert message.attempts == 1
    assert _message_files(mail_dir) == []

    worker.start()
    _wait_for(
        lambda: OutboxMessage.objects.filter(
            pk=message.pk, state=OutboxMessage.State.SENT
        ).exists(),
        description="the reclaimed message marked sent",
        processes=processes,
    )
    # Two more beat intervals: a third send would leave a second file.
    time.sleep(2.5)
    message.refresh_from_db()
    assert message.attempts == 2
    assert len(list(marker_dir.iterdir())) == 2
    files = _message_files(mail_dir)
    assert len(files) == 1
    assert f"To: {case.customer.email}" in files[0].read_text()
