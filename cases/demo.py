"""Demo staff for the embedded default: agents and a lead for each team."""

from django.contrib.auth import get_user_model
from django.db import transaction

from .models import Team, TeamMember

AGENTS_PER_TEAM = 2


@transaction.atomic
def demo_staff_ensure() -> int:
    """Create the demo agents and leads that are missing; return how many.

    Demo users get no usable password: the admin sets one when someone
    should log in as them.
    """
    User = get_user_model()
    created = 0
    for team in Team.objects.all():
        handle = team.name.lower().replace(" ", "-")
        people = [(f"{handle}-lead", TeamMember.Role.LEAD)] + [
            (f"{handle}-agent-{number}", TeamMember.Role.AGENT)
            for number in range(1, AGENTS_PER_TEAM + 1)
        ]
        for username, role in people:
            user, is_new = User.objects.get_or_create(
                username=username, defaults={"first_name": username.replace("-", " ").title()}
            )
            if is_new:
                user.set_unusable_password()
                user.save(update_fields=["password"])
            _, is_new_member = TeamMember.objects.get_or_create(
                team=team, user=user, defaults={"role": role}
            )
            created += is_new_member
    return created
