import os
from pathlib import Path

import pytest
from django.db import connection

from oscm.celery import app as celery_app

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REQUIRE_SERVICES = os.environ.get("OSCM_REQUIRE_SERVICES") == "1"


@pytest.fixture(autouse=True)
def _celery_eager():
    """Run queued tasks in-process unless a test starts a real worker."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = previous


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        if REQUIRE_SERVICES:
            pytest.fail(f"the real data sets are missing: expected them in {SHARED_DATA}")
        pytest.skip(f"real data sets not found in {SHARED_DATA}")
    return SHARED_DATA


def pytest_report_header(config):
    return f"oscm: database {os.environ.get('DATABASE_URL', 'sqlite (default)')}"


@pytest.fixture(scope="session", autouse=True)
def _database_is_postgresql_when_required(django_db_setup, django_db_blocker):
    if REQUIRE_SERVICES:
        with django_db_blocker.unblock():
            assert connection.vendor == "postgresql", (
                "OSCM_REQUIRE_SERVICES=1 but the tests run on "
                f"{connection.vendor}: set DATABASE_URL to a PostgreSQL database"
            )


def _permissions_ensure(apps) -> None:
    """Recreate content types, permissions and the admins group when a
    transactional test's flush left them out (serialized rollback skips the
    post-migrate signal that normally restores them)."""
    from django.contrib.auth.management import create_permissions
    from django.contrib.auth.models import Group, Permission
    from django.contrib.contenttypes.management import create_contenttypes

    from cases.apps import admin_group_ensure
    from cases.permissions import ADMIN_GROUP

    if not Permission.objects.filter(codename="administer").exists():
        for app_config in apps.get_app_configs():
            create_contenttypes(app_config, verbosity=0)
            create_permissions(app_config, verbosity=0)
    if not Group.objects.filter(name=ADMIN_GROUP).exists():
        admin_group_ensure(sender=None)


@pytest.fixture(autouse=True)
def _seeded_defaults(request):
    """Restore the seeded topics, teams and rules for database tests.

    Transactional tests flush every table afterwards, which removes the rows
    the data migrations created; the next test gets them back here.
    """
    marker = request.node.get_closest_marker("django_db")
    if marker is None:
        return
    request.getfixturevalue("_django_db_helper")
    from django.apps import apps

    from cases.models import Team
    from cases.seeds import seed_contact_policy, seed_defaults, seed_workflow
    from feedback.models import Topic
    from feedback.seeds import seed_topics

    _permissions_ensure(apps)
    if not Topic.objects.exists():
        seed_topics(apps)
    if not Team.objects.exists():
        seed_defaults(apps)
        seed_workflow(apps)
        seed_contact_policy(apps)


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Start each test with an empty cache, so login failures counted by
    one test cannot rate-limit the logins of the next."""
    from django.core.cache import cache

    cache.clear()
