"""Create, set up and drop the PostgreSQL database a benchmark runs on.

The benchmarks point ``DATABASE_URL`` at a database of their own (by default
``oscm_bench`` on 127.0.0.1:5432 as user postgres), create it empty, migrate
it with the project's settings and drop it at the end unless ``--keep`` is
given.
"""

import argparse
import os
import platform
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/oscm_bench"


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the data folder, database and --keep options every benchmark takes."""
    from make_data import DEFAULT_DATA

    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Folder of the real data sets.")
    parser.add_argument(
        "--database-url", default=os.environ.get("DATABASE_URL") or DEFAULT_URL,
        help="PostgreSQL database to create, use and drop.",
    )
    parser.add_argument("--keep", action="store_true", help="Keep the database afterwards.")


def _admin_connection(url: str):
    import psycopg

    parts = urlsplit(url)
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    return psycopg.connect(admin_url, autocommit=True), parts.path.lstrip("/")


def create_database(url: str) -> None:
    """Drop the database named in ``url`` if it exists and create it empty."""
    connection, name = _admin_connection(url)
    with connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def drop_database(url: str) -> None:
    from django.db import connections

    connections.close_all()
    connection, name = _admin_connection(url)
    with connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def setup_django(url: str) -> None:
    """Create the database, configure Django on it and run the migrations."""
    create_database(url)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oscm.settings")
    # One info line per batch would flood the output; warnings still show.
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    # Tasks run in-process unless the caller set a broker on purpose.
    sys.path.insert(0, str(REPOSITORY))

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def machine_summary() -> list[str]:
    """Return lines naming the cores, CPU, memory and software versions."""
    from django.db import connection

    model = "unknown"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as handle:
        total_kib = int(handle.readline().split()[1])
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server = cursor.fetchone()[0]
    return [
        f"cores: {os.cpu_count()} ({model})",
        f"memory: {total_kib / 2**20:.1f} GiB",
        f"PostgreSQL {server}, Python {platform.python_version()}",
        load_average(),
        f"git: {git_revision()}",
    ]


def load_average() -> str:
    """Return the 1, 5 and 15 minute load averages, to show other work running."""
    with open("/proc/loadavg") as handle:
        one, five, fifteen = handle.read().split()[:3]
    return f"load average: {one} {five} {fifteen} (1, 5, 15 min)"


def git_revision() -> str:
    result = subprocess.run(
        ["git", "-C", str(REPOSITORY), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or "unknown"
