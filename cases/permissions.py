"""Who may see and change which cases.

Agents see and work the cases of their own teams. Leads do the same and
also assign, reassign, change priority, move cases and create remediation
actions in their teams. Admins see and do everything: superusers, and users
granted the ``cases.administer`` permission (the "OSCM admins" group).
Agents and leads may get staff status to work in the Django admin and stay
limited to their teams there. A case outside
the user's teams is treated as missing (404), never as forbidden, so its
existence is not revealed.
"""

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet, Subquery

from .models import Case, TeamMember


ADMIN_PERMISSION = "cases.administer"
ADMIN_GROUP = "OSCM admins"


def user_is_admin(user: AbstractBaseUser) -> bool:
    """Return whether the user administers every team.

    Superusers do, and active staff users granted ``cases.administer``, most
    simply by joining the "OSCM admins" group. Staff status alone is not
    enough: agents and leads may be staff to work in the Django admin, and
    leaving their last team must not turn them into admins. Checking staff
    status first spares the permission queries for agents who are not staff.
    """
    if not (user.is_authenticated and user.is_active):
        return False
    if user.is_superuser:
        return True
    return user.is_staff and user.has_perm(ADMIN_PERMISSION)


def user_team_ids(user: AbstractBaseUser, *, role: str | None = None) -> set[int]:
    """Return the ids of the teams the user belongs to, optionally in one role."""
    if not user.is_authenticated:
        return set()
    members = TeamMember.objects.filter(user_id=user.pk)
    if role:
        members = members.filter(role=role)
    return set(members.values_list("team_id", flat=True))


def user_leads_team(user: AbstractBaseUser, team_id: int) -> bool:
    return user_is_admin(user) or team_id in user_team_ids(user, role=TeamMember.Role.LEAD)


def cases_visible_to(
    user: AbstractBaseUser,
    queryset: QuerySet[Case] | None = None,
    *,
    inline_team_ids: bool = False,
) -> QuerySet[Case]:
    """Filter cases to those the user may see: all for admins, own teams otherwise.

    By default the user's teams are a subquery of the case query. With
    ``inline_team_ids`` they are read first, in one more query, and the
    case query filters on them as constants. PostgreSQL then plans with the
    team's id, so a sorted page of one team's cases reads an index on
    ``team`` in order and stops at the page size. Behind the subquery it
    planned a scan of all cases and a sort of the team's rows. A user in no
    team gets an empty queryset without a case query.
    """
    queryset = Case.objects.all() if queryset is None else queryset
    if user_is_admin(user):
        return queryset
    if not user.is_authenticated:
        return queryset.none()
    own_teams = TeamMember.objects.filter(user_id=user.pk).values("team_id")
    if inline_team_ids:
        return queryset.filter(team_id__in=[row["team_id"] for row in own_teams])
    return queryset.filter(team_id__in=Subquery(own_teams))
