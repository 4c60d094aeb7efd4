import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from cases.models import Team, TeamMember
from feedback.models import Customer, Feedback


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]

    username = factory.Sequence(lambda n: f"agent{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.test")
    is_active = True


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    external_id = factory.Sequence(lambda n: f"customer-{n}")
    email = factory.LazyAttribute(
        lambda customer: f"{customer.external_id}@example.test"
    )
    name = factory.Sequence(lambda n: f"Customer {n}")


class FeedbackFactory(factory.django.DjangoModelFactory):
    """Analysed survey feedback; pass ``kind`` and ``score`` per test."""

    class Meta:
        model = Feedback

    customer = factory.SubFactory(CustomerFactory)
    kind = Feedback.Kind.NPS
    score = 9
    source = Feedback.Source.SURVEY
    external_id = factory.Sequence(lambda n: f"response-{n}")
    analyzed_at = factory.LazyFunction(timezone.now)


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Team

    name = factory.Sequence(lambda n: f"Team {n}")


class TeamMemberFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TeamMember

    team = factory.SubFactory(TeamFactory)
    user = factory.SubFactory(UserFactory)
    role = TeamMember.Role.AGENT
