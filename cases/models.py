from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from feedback.models import Customer, Feedback, Topic


class Team(models.Model):
    class AssignmentStrategy(models.TextChoices):
        ROUND_ROBIN = "round_robin", "Round-robin"
        CAPACITY = "capacity", "Most spare capacity"

    name = models.CharField(max_length=100, unique=True)
    assignment_strategy = models.CharField(
        max_length=20, choices=AssignmentStrategy.choices, default=AssignmentStrategy.ROUND_ROBIN
    )
    is_fallback = models.BooleanField(
        default=False, help_text="Receives every case that no routing rule matches."
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_fallback"], condition=Q(is_fallback=True), name="team_one_fallback"
            )
        ]

    def __str__(self) -> str:
        return self.name


class TeamMember(models.Model):
    class Role(models.TextChoices):
        AGENT = "agent", "Agent"
        LEAD = "lead", "Lead"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="team_memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.AGENT)
    is_away = models.BooleanField(default=False, help_text="Away agents get no new cases.")
    max_open_cases = models.PositiveIntegerField(
        default=25, help_text="Open cases at which the agent stops receiving new ones."
    )
    last_assigned_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "user"], name="team_member_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.get_role_display()}, {self.team})"


class Priority(models.IntegerChoices):
    LOW = 1, "Low"
    NORMAL = 2, "Normal"
    HIGH = 3, "High"
    URGENT = 4, "Urgent"


class CaseRule(models.Model):
    """Opens a case when feedback of ``kind`` falls in the unhappy band.

    Active rules are tried by ascending ``position`` and the first match wins.
    A rule matches when every bound it sets holds: the score lies within
    ``score_min``..``score_max`` (inclusive) and the sentiment is at most
    ``sentiment_max``.
    """

    position = models.PositiveIntegerField(default=100)
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=Feedback.Kind.choices)
    score_min = models.SmallIntegerField(null=True, blank=True)
    score_max = models.SmallIntegerField(null=True, blank=True)
    sentiment_max = models.FloatField(
        null=True, blank=True, help_text="Match only when sentiment (-1..1) is at most this."
    )
    priority = models.IntegerField(choices=Priority.choices, default=Priority.NORMAL)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return self.name


class RoutingRule(models.Model):
    """Sends a case to a team by its topic and touchpoint.

    Active rules are tried by ascending ``position``; a blank topic or
    touchpoint matches anything. Unmatched cases go to the fallback team.
    """

    position = models.PositiveIntegerField(default=100)
    topic = models.ForeignKey(Topic, null=True, blank=True, on_delete=models.CASCADE)
    touchpoint = models.CharField(max_length=50, blank=True)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="routing_rules")
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        parts = [f"topic {self.topic}" if self.topic else "", self.touchpoint and f"touchpoint {self.touchpoint}"]
        condition = " and ".join(part for part in parts if part) or "anything"
        return f"{condition} -> {self.team}"


class Case(models.Model):
    class State(models.TextChoices):
        NEW = "new", "New"
        ASSIGNED = "assigned", "Assigned"
        IN_PROGRESS = "in_progress", "In progress"
        WAITING = "waiting", "Waiting on customer"
        RESOLVED = "resolved", "Resolved"
        CLOSED = "closed", "Closed"

    OPEN_STATES = (State.NEW, State.ASSIGNED, State.IN_PROGRESS, State.WAITING)

    customer = models.ForeignKey(
        Customer, null=True, blank=True, on_delete=models.PROTECT, related_name="cases"
    )
    trigger_feedback = models.ForeignKey(
        Feedback, on_delete=models.PROTECT, related_name="triggered_cases"
    )
    feedback = models.ManyToManyField(Feedback, through="CaseFeedback", related_name="cases")
    topic = models.ForeignKey(Topic, null=True, blank=True, on_delete=models.SET_NULL)
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="cases")
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="assigned_cases",
    )
    state = models.CharField(max_length=20, choices=State.choices, default=State.NEW)
    priority = models.IntegerField(choices=Priority.choices, default=Priority.NORMAL)
    is_open = models.BooleanField(default=True)
    # One open case per customer and topic: "c<customer>:t<topic or 0>", or
    # "f<feedback>" for feedback without a customer.
    dedup_key = models.CharField(max_length=100)

    rule = models.ForeignKey(CaseRule, null=True, on_delete=models.SET_NULL, related_name="+")
    rule_reason = models.CharField(max_length=300)
    routing_rule = models.ForeignKey(
        RoutingRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    routing_reason = models.CharField(max_length=300)
    assignment_reason = models.CharField(max_length=300, blank=True)

    opened_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["dedup_key"], condition=Q(is_open=True), name="case_one_open_per_key"
            )
        ]
        indexes = [
            models.Index(fields=["team", "state", "-opened_at"], name="case_team_state_opened"),
            models.Index(fields=["assignee", "state"], name="case_assignee_state"),
        ]

    def __str__(self) -> str:
        return f"Case #{self.pk}"


class CaseFeedback(models.Model):
    """Feedback attached to a case: the trigger, and any that came later."""

    case = models.ForeignKey(Case, on_delete=models.CASCADE)
    feedback = models.ForeignKey(Feedback, on_delete=models.CASCADE)
    attached_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["case", "feedback"], name="case_feedback_unique")
        ]
