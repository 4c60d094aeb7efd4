import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from cases.models import Case, CaseFeedback, RootCause, Team, TeamMember
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


class RootCauseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RootCause
        django_get_or_create = ["name"]

    name = factory.Sequence(lambda n: f"Root cause {n}")


class CaseFactory(factory.django.DjangoModelFactory):
    """An open, unassigned case of the customer of its trigger feedback.

    The dedup key defaults to the feedback's own key, so cases never clash;
    pass ``dedup_key`` to put two cases on the same customer and topic.
    """

    class Meta:
        model = Case
        skip_postgeneration_save = True

    trigger_feedback = factory.SubFactory(FeedbackFactory, score=2)
    customer = factory.LazyAttribute(lambda case: case.trigger_feedback.customer)
    team = factory.SubFactory(TeamFactory)
    dedup_key = factory.LazyAttribute(lambda case: f"f{case.trigger_feedback.pk}")
    rule_reason = "NPS score 2 is within 0-3 (rule 'NPS detractor 0-3')"
    routing_reason = "test case"

    @factory.post_generation
    def link_trigger(case, create, extracted, **kwargs):
        if create:
            CaseFeedback.objects.create(case=case, feedback=case.trigger_feedback)


class StaffUserFactory(UserFactory):
    username = factory.Sequence(lambda n: f"staff{n}")
    is_staff = True


def make_personas(*, team_a: Team, team_b: Team) -> dict:
    """Create the users of the admin permission tests, by persona name.

    Agents and leads have staff status so they reach the admin, and
    ``non_staff`` is an agent of team A without it. ``anonymous`` is None.
    """
    superuser = StaffUserFactory(username="root", is_superuser=True)
    staff_admin = grant_admin(StaffUserFactory(username="staff_admin"))
    lead_a = TeamMemberFactory(
        team=team_a, user=StaffUserFactory(username="lead_a"), role=TeamMember.Role.LEAD
    ).user
    agent_a = TeamMemberFactory(team=team_a, user=StaffUserFactory(username="agent_a")).user
    agent_b = TeamMemberFactory(team=team_b, user=StaffUserFactory(username="agent_b")).user
    member = TeamMemberFactory(team=team_a, user=UserFactory(username="member_a")).user
    return {
        "superuser": superuser,
        "staff_admin": staff_admin,
        "lead_a": lead_a,
        "agent_a": agent_a,
        "agent_b": agent_b,
        "non_staff": member,
        "anonymous": None,
    }


class BusinessCalendarFactory(factory.django.DjangoModelFactory):
    """Office hours 09:00-17:00, Monday to Friday, in UTC unless given."""

    class Meta:
        model = "cases.BusinessCalendar"

    name = factory.Sequence(lambda n: f"Calendar {n}")
    timezone = "UTC"
    workdays = "0,1,2,3,4"
    day_start = "09:00"
    day_end = "17:00"


class HolidayFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "cases.Holiday"

    calendar = factory.SubFactory(BusinessCalendarFactory)
    name = "Holiday"


class SlaPolicyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "cases.SlaPolicy"

    name = factory.Sequence(lambda n: f"Policy {n}")
    position = 50
    first_response_minutes = 60
    resolution_minutes = 480


def grant_admin(user):
    """Give ``user`` the administer permission, as the "OSCM admins" group does."""
    from django.contrib.auth.models import Permission

    user.user_permissions.add(
        Permission.objects.get(content_type__app_label="cases", codename="administer")
    )
    return user
