"""The people of the permission tests: an admin, a lead and an agent of team
A, an agent of team B, a user in no team, and two cases, one per team."""

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser

from cases.models import Case, Team, TeamMember

from .factories import CaseFactory, TeamFactory, TeamMemberFactory, UserFactory, grant_admin


@dataclass
class Personas:
    team_a: Team
    team_b: Team
    admin: AbstractBaseUser
    lead_a: AbstractBaseUser
    agent_a: AbstractBaseUser
    agent_b: AbstractBaseUser
    no_team: AbstractBaseUser
    case_a: Case
    case_b: Case

    def user(self, name: str) -> AbstractBaseUser | None:
        return None if name == "anonymous" else getattr(self, name)


def make_personas() -> Personas:
    team_a = TeamFactory(name="Team A")
    team_b = TeamFactory(name="Team B")
    admin = grant_admin(UserFactory(username="admin", is_staff=True))
    lead_a = TeamMemberFactory(
        team=team_a, user=UserFactory(username="lead_a"), role=TeamMember.Role.LEAD
    ).user
    agent_a = TeamMemberFactory(team=team_a, user=UserFactory(username="agent_a")).user
    agent_b = TeamMemberFactory(team=team_b, user=UserFactory(username="agent_b")).user
    no_team = UserFactory(username="no_team")
    return Personas(
        team_a=team_a,
        team_b=team_b,
        admin=admin,
        lead_a=lead_a,
        agent_a=agent_a,
        agent_b=agent_b,
        no_team=no_team,
        case_a=CaseFactory(team=team_a),
        case_b=CaseFactory(team=team_b),
    )
