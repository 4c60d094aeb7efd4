"""The fixture of race tests that need PostgreSQL's row locks and waits."""

import pytest
from django.db import connection

from tests.conftest import REQUIRE_SERVICES


@pytest.fixture
def postgresql_only():
    """Skip on SQLite, which runs one writer at a time, or fail when
    OSCM_REQUIRE_SERVICES=1 demands PostgreSQL."""
    if connection.vendor != "postgresql":
        if REQUIRE_SERVICES:
            pytest.fail(
                "OSCM_REQUIRE_SERVICES=1 but the tests do not run on PostgreSQL"
            )
        pytest.skip("races need PostgreSQL; SQLite writes one at a time")
