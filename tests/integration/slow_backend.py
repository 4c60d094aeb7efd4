"""An email backend for the worker fault test: a send that takes seconds.

It subclasses Django's file-based backend. Before writing each message it
creates a marker file in ``OSCM_SLOW_EMAIL_MARKER_DIR`` named after the
process id and the time, then sleeps ``OSCM_SLOW_EMAIL_SECONDS`` (3 by
default). The test kills the worker once a marker appears, so the kill lands
in the sleep, before the message file is written.
"""

import os
import time
from pathlib import Path

from django.core.mail.backends.filebased import EmailBackend as FileBasedEmailBackend


class EmailBackend(FileBasedEmailBackend):
    def send_messages(self, email_messages):
        marker_dir = Path(os.environ["OSCM_SLOW_EMAIL_MARKER_DIR"])
        marker = marker_dir / f"send-{os.getpid()}-{time.time_ns()}"
        marker.write_text(f"{len(email_messages)} messages\n")
        time.sleep(float(os.environ.get("OSCM_SLOW_EMAIL_SECONDS", "3")))
        return super().send_messages(email_messages)
