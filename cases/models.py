from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from feedback.models import Customer, Feedback, Topic


class BusinessCalendar(models.Model):
    """Working hours of a team, in which SLA targets are counted."""

    name = models.CharField(max_length=100, unique=True)
    timezone = models.CharField(
        max_length=64, default="UTC", help_text="IANA time zone name, for example Asia/Jakarta."
    )
    workdays = models.CharField(
        max_length=13,
        default="0,1,2,3,4",
        help_text="Working days as numbers, 0 = Monday to 6 = Sunday, separated by commas.",
    )
    day_start = models.TimeField(default="09:00")
    day_end = models.TimeField(default="17:00")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.timezone})"

    def clean(self) -> None:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValidationError(
                {"timezone": f"{self.timezone!r} is not an IANA time zone, such as Europe/London."}
            ) from None
        try:
            days = [int(day) for day in self.workdays.split(",") if day.strip()]
        except ValueError:
            days = [-1]
        if not days or any(day not in range(7) for day in days):
            raise ValidationError(
                {"workdays": f"{self.workdays!r} is not a list of day numbers 0-6, such as 0,1,2,3,4."}
            )
        if self.day_start >= self.day_end:
            raise ValidationError({"day_end": "The working day must end after it starts."})


class Holiday(models.Model):
    calendar = models.ForeignKey(BusinessCalendar, on_delete=models.CASCADE, related_name="holidays")
    date = models.DateField()
    name = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["date"]
        constraints = [
            models.UniqueConstraint(fields=["calendar", "date"], name="holiday_unique_per_calendar")
        ]

    def __str__(self) -> str:
        return f"{self.date} {self.name}".strip()


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
    calendar = models.ForeignKey(
        BusinessCalendar,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        help_text="Working hours for SLA targets; without one, SLA time runs around the clock in UTC.",
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_fallback"], condition=Q(is_fallback=True), name="team_one_fallback"
            )
        ]
        permissions = [
            ("administer", "Can administer every team, rule, case and customer"),
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


class RootCause(models.Model):
    """Category of what caused the customer's problem, required to resolve a case."""

    name = models.CharField(max_length=100, unique=True)
    description = models.CharField(max_length=300, blank=True)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class SlaPolicy(models.Model):
    """First-response and resolution targets in business minutes.

    Active policies are tried by ascending ``position``; the first whose
    conditions all hold wins (a blank condition matches anything), and the
    policy marked as fallback applies when none does.
    """

    position = models.PositiveIntegerField(default=100)
    name = models.CharField(max_length=100)
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE)
    priority = models.IntegerField(choices=Priority.choices, null=True, blank=True)
    topic = models.ForeignKey(Topic, null=True, blank=True, on_delete=models.CASCADE)
    first_response_minutes = models.PositiveIntegerField(
        help_text="Business minutes from opening to the first customer contact."
    )
    resolution_minutes = models.PositiveIntegerField(
        help_text="Business minutes from opening to resolution, not counting time waiting on the customer."
    )
    is_fallback = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["position", "id"]
        verbose_name = "SLA policy"
        verbose_name_plural = "SLA policies"
        constraints = [
            models.UniqueConstraint(
                fields=["is_fallback"], condition=Q(is_fallback=True), name="sla_policy_one_fallback"
            )
        ]

    def __str__(self) -> str:
        return self.name


class Case(models.Model):
    class State(models.TextChoices):
        NEW = "new", "New"
        ASSIGNED = "assigned", "Assigned"
        IN_PROGRESS = "in_progress", "In progress"
        WAITING = "waiting", "Waiting on customer"
        RESOLVED = "resolved", "Resolved"
        CLOSED = "closed", "Closed"

    OPEN_STATES = (State.NEW, State.ASSIGNED, State.IN_PROGRESS, State.WAITING)

    # customer, team and assignee lead composite indexes of Meta, which serve
    # their look-ups; an index of their own would only slow writes down.
    customer = models.ForeignKey(
        Customer,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="cases",
        db_index=False,
    )
    trigger_feedback = models.ForeignKey(
        Feedback, on_delete=models.PROTECT, related_name="triggered_cases"
    )
    feedback = models.ManyToManyField(Feedback, through="CaseFeedback", related_name="cases")
    # topic, root_cause and merged_into are empty on most cases (a case gets
    # its topic after the text analysis), so their indexes of Meta cover only
    # the rows that have one.
    topic = models.ForeignKey(
        Topic, null=True, blank=True, on_delete=models.SET_NULL, db_index=False
    )
    team = models.ForeignKey(
        Team, on_delete=models.PROTECT, related_name="cases", db_index=False
    )
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        db_index=False,
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

    # Workflow
    root_cause = models.ForeignKey(
        RootCause, null=True, blank=True, on_delete=models.PROTECT, db_index=False
    )
    resolution_note = models.TextField(blank=True)
    first_response_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    merged_into = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="merged_cases",
        db_index=False,
    )

    # SLA: due times are stored so lists and sweeps filter on them directly.
    sla_policy = models.ForeignKey(SlaPolicy, null=True, blank=True, on_delete=models.SET_NULL)
    first_response_due_at = models.DateTimeField(null=True, blank=True)
    resolution_due_at = models.DateTimeField(null=True, blank=True)
    # Set while the case waits on the customer; the resolution clock stops.
    sla_paused_at = models.DateTimeField(null=True, blank=True)
    first_response_warned_at = models.DateTimeField(null=True, blank=True)
    resolution_warned_at = models.DateTimeField(null=True, blank=True)
    first_response_breached_at = models.DateTimeField(null=True, blank=True)
    resolution_breached_at = models.DateTimeField(null=True, blank=True)
    is_breached = models.BooleanField(default=False)

    # Recovery: the trigger score and the follow-up answer, and whether the
    # customer left the unhappy band (for NPS: detractor to passive or promoter).
    recovery_score_before = models.SmallIntegerField(null=True, blank=True)
    recovery_score_after = models.SmallIntegerField(null=True, blank=True)
    is_recovered = models.BooleanField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["dedup_key"], condition=Q(is_open=True), name="case_one_open_per_key"
            )
        ]
        indexes = [
            models.Index(fields=["team", "state", "-opened_at"], name="case_team_state_opened"),
            # A team's newest cases in any state: the case list's default page.
            models.Index(fields=["team", "-opened_at"], name="case_team_opened"),
            # A team's cases by the inbox's priority sort, most urgent first.
            models.Index(
                fields=["team", "-priority", "opened_at", "id"], name="case_team_priority_opened"
            ),
            models.Index(fields=["assignee", "state"], name="case_assignee_state"),
            models.Index(fields=["customer", "-opened_at"], name="case_customer_opened"),
            models.Index(
                fields=["resolution_due_at"], name="case_open_resolution_due", condition=Q(is_open=True)
            ),
            models.Index(
                fields=["first_response_due_at"],
                name="case_open_first_response_due",
                condition=Q(is_open=True, first_response_at__isnull=True),
            ),
            models.Index(fields=["topic"], name="case_topic", condition=Q(topic__isnull=False)),
            models.Index(
                fields=["root_cause"], name="case_root_cause", condition=Q(root_cause__isnull=False)
            ),
            models.Index(
                fields=["merged_into"], name="case_merged_into", condition=Q(merged_into__isnull=False)
            ),
        ]

    def __str__(self) -> str:
        return f"Case #{self.pk}"


class CaseFeedback(models.Model):
    """Feedback attached to a case: the trigger, and any that came later."""

    # The unique constraint on (case, feedback) serves look-ups by case.
    case = models.ForeignKey(Case, on_delete=models.CASCADE, db_index=False)
    feedback = models.ForeignKey(Feedback, on_delete=models.CASCADE)
    attached_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["case", "feedback"], name="case_feedback_unique")
        ]


class CaseEvent(models.Model):
    """One entry of a case's timeline. Rows are only ever added.

    ``changes`` maps each changed field to ``[old, new]``; comments and
    contact attempts carry their text in ``body``.
    """

    class Kind(models.TextChoices):
        OPENED = "opened", "Opened"
        FEEDBACK_ATTACHED = "feedback_attached", "Feedback attached"
        STATE_CHANGED = "state_changed", "State changed"
        ASSIGNED = "assigned", "Assigned"
        PRIORITY_CHANGED = "priority_changed", "Priority changed"
        TEAM_CHANGED = "team_changed", "Moved to another team"
        COMMENT = "comment", "Comment"
        CONTACT = "contact", "Customer contact attempt"
        MERGED = "merged", "Merged"
        SLA_WARNING = "sla_warning", "SLA warning"
        SLA_BREACH = "sla_breach", "SLA breach"
        CUSTOMER_ERASED = "customer_erased", "Customer data erased"
        FEEDBACK_MOVED = "feedback_moved", "Feedback moved to another case"
        TOPICS_MIXED = "topics_mixed", "Feedback of other topics kept"

    class Visibility(models.TextChoices):
        INTERNAL = "internal", "Internal note"
        CUSTOMER = "customer", "Reply to the customer"

    class Channel(models.TextChoices):
        EMAIL = "email", "Email"
        PHONE = "phone", "Phone"
        CHAT = "chat", "Chat"
        SMS = "sms", "SMS"
        OTHER = "other", "Other"

    class Outcome(models.TextChoices):
        REACHED = "reached", "Reached the customer"
        NO_ANSWER = "no_answer", "No answer"
        LEFT_MESSAGE = "left_message", "Left a message"
        WRONG_CONTACT = "wrong_contact", "Wrong contact details"

    # The (case, created_at) index of Meta serves look-ups by case.
    case = models.ForeignKey(
        Case, on_delete=models.CASCADE, related_name="events", db_index=False
    )
    # PROTECT keeps the timeline true: a user with history is deactivated,
    # never deleted, so no event loses its author. A null actor is the system,
    # which writes most events, so the actor index skips those rows.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    changes = models.JSONField(default=dict, blank=True)
    body = models.TextField(blank=True)
    visibility = models.CharField(max_length=10, choices=Visibility.choices, blank=True)
    channel = models.CharField(max_length=10, choices=Channel.choices, blank=True)
    outcome = models.CharField(max_length=20, choices=Outcome.choices, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["case", "created_at"], name="case_event_case_created"),
            models.Index(fields=["actor"], name="case_event_actor", condition=Q(actor__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} on case #{self.case_id}"

    def save(self, *args, **kwargs):
        if self.pk is not None and not self._state.adding:
            raise ValueError("Case events are append-only; add a new event instead of editing one.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("Case events are append-only and cannot be deleted.")


class ContactPolicy(models.Model):
    """Rules for when a customer may be surveyed.

    Layers, most specific first: a survey's own setting, then the policy of
    the case's team, then the global policy (the row with no team). A blank
    field on a team policy falls through to the global one.
    """

    team = models.OneToOneField(
        Team, null=True, blank=True, on_delete=models.CASCADE, related_name="contact_policy",
        help_text="Leave empty for the global policy.",
    )
    cooldown_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Survey nobody more than once in this many days."
    )
    quiet_hours_start = models.TimeField(
        null=True, blank=True, help_text="Local time in the customer's time zone when sending stops."
    )
    quiet_hours_end = models.TimeField(
        null=True, blank=True, help_text="Local time when sending may start again."
    )
    followup_delay_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Days after resolution that the follow-up survey is sent."
    )
    followup_exempt_from_cooldown = models.BooleanField(
        null=True, blank=True,
        help_text="Let the post-resolution follow-up through even within the cooldown.",
    )
    reopen_when_still_unhappy = models.BooleanField(
        null=True, blank=True,
        help_text="Reopen the case when the follow-up answer is still in the unhappy band.",
    )
    invitation_valid_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Days a survey link stays valid."
    )

    class Meta:
        verbose_name_plural = "contact policies"
        constraints = [
            models.UniqueConstraint(
                fields=["team"], condition=Q(team__isnull=True), name="contact_policy_one_global"
            )
        ]

    def __str__(self) -> str:
        return f"Contact policy of {self.team}" if self.team_id else "Global contact policy"


class FollowUp(models.Model):
    """A follow-up survey of a resolved case, scheduled in the database.

    The beat task sends rows whose ``due_at`` has passed; the token hash,
    never the token, is stored, and a used or expired token shows no survey.
    """

    class State(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        SENT = "sent", "Sent"
        ANSWERED = "answered", "Answered"
        SKIPPED = "skipped", "Skipped"
        EXPIRED = "expired", "Expired"
        CANCELLED = "cancelled", "Cancelled"

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="follow_ups")
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="follow_ups")
    kind = models.CharField(max_length=10, choices=Feedback.Kind.choices)
    state = models.CharField(max_length=10, choices=State.choices, default=State.SCHEDULED)
    due_at = models.DateTimeField()
    token_hash = models.CharField(max_length=64, unique=True, null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    answer = models.ForeignKey(
        Feedback, null=True, blank=True, on_delete=models.SET_NULL, related_name="follow_up_answers"
    )
    skip_reason = models.CharField(max_length=300, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["due_at"], name="follow_up_scheduled_due", condition=Q(state="scheduled")),
            models.Index(fields=["customer", "sent_at"], name="follow_up_customer_sent"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["case"],
                condition=Q(state__in=["scheduled", "sent"]),
                name="follow_up_one_pending_per_case",
            )
        ]

    def __str__(self) -> str:
        return f"Follow-up #{self.pk} of case #{self.case_id}"


class OutboxMessage(models.Model):
    """A side effect written in the same transaction as the change behind it.

    A task delivers pending rows; ``dedup_key`` is unique, so the same
    effect queued twice is stored once, and delivery claims a row with a
    conditional update before sending, so a task that runs twice sends once.
    """

    class Channel(models.TextChoices):
        EMAIL = "email", "Email"
        WEBHOOK = "webhook", "Webhook"

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    channel = models.CharField(max_length=10, choices=Channel.choices)
    dedup_key = models.CharField(max_length=200, unique=True)
    payload = models.JSONField(default=dict)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(
                fields=["next_attempt_at"], name="outbox_pending_due", condition=Q(state="pending")
            )
        ]

    def __str__(self) -> str:
        return f"{self.channel} {self.dedup_key} ({self.state})"


class WebhookEndpoint(models.Model):
    """An outside URL notified of case and action events, signed with HMAC-SHA256."""

    class Event(models.TextChoices):
        CASE_OPENED = "case.opened", "Case opened"
        CASE_ESCALATED = "case.escalated", "Case escalated"
        CASE_RESOLVED = "case.resolved", "Case resolved"
        ACTION_VERDICT = "action.verdict", "Action verdict"

    name = models.CharField(max_length=100)
    url = models.URLField(max_length=500)
    secret = models.CharField(max_length=100, help_text="Shared secret for the X-OSCM-Signature header.")
    events = models.JSONField(default=list, help_text="Event names to send; empty sends all.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name


class WebhookDelivery(models.Model):
    """One attempt to deliver an event to an endpoint: the delivery log."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    outbox = models.ForeignKey(OutboxMessage, null=True, on_delete=models.SET_NULL, related_name="+")
    event = models.CharField(max_length=50)
    attempt = models.PositiveIntegerField(default=1)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"
