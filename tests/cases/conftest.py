import pytest

from cases.models import Team
from feedback.models import Topic


@pytest.fixture
def topics(db) -> dict[str, Topic]:
    """The seeded topics by slug."""
    return {topic.slug: topic for topic in Topic.objects.all()}


@pytest.fixture
def teams(db) -> dict[str, Team]:
    """The seeded teams by name: Product, IT and Customer Service (fallback)."""
    return {team.name: team for team in Team.objects.all()}
