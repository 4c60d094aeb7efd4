from django.conf import settings
from django.db import models
from django.utils import timezone

from cases.models import Case, Team
from feedback.models import Feedback, Topic


class Action(models.Model):
    """A systemic fix answering many cases, measured before and after.

    The affected segment (topic, touchpoint and/or product; blank means any)
    selects the feedback whose metric is compared across the action.
    """

    class State(models.TextChoices):
        PLANNED = "planned", "Planned"
        IN_PROGRESS = "in_progress", "In progress"
        DONE = "done", "Done"
        VERIFIED = "verified", "Verified"
        NOT_EFFECTIVE = "not_effective", "Not effective"

    class Verdict(models.TextChoices):
        IMPROVED = "improved", "Improved"
        NO_CHANGE = "no_change", "No significant change"
        WORSE = "worse", "Worse"
        NOT_ENOUGH_DATA = "not_enough_data", "Not enough data"

    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="actions")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_actions"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    due_date = models.DateField(null=True, blank=True)
    topic = models.ForeignKey(Topic, null=True, blank=True, on_delete=models.PROTECT)
    touchpoint = models.CharField(max_length=50, blank=True)
    product = models.CharField(max_length=200, blank=True)
    cases = models.ManyToManyField(Case, through="ActionCase", related_name="actions")
    state = models.CharField(max_length=20, choices=State.choices, default=State.PLANNED)

    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)
    last_reminded_on = models.DateField(null=True, blank=True)

    # Re-measurement: the metric of the segment over the same number of days
    # before ``started_at`` and after ``done_at``.
    metric_kind = models.CharField(
        max_length=10, choices=Feedback.Kind.choices, blank=True,
        help_text="Metric to compare; by default the kind most of the linked cases were opened on.",
    )
    window_days = models.PositiveIntegerField(default=14)
    measure_due_at = models.DateTimeField(null=True, blank=True)
    measured_at = models.DateTimeField(null=True, blank=True)
    verdict = models.CharField(max_length=20, choices=Verdict.choices, blank=True)
    measurement = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["state", "measure_due_at"], name="action_state_measure_due"),
            models.Index(fields=["state", "due_date"], name="action_state_due_date"),
        ]

    def __str__(self) -> str:
        return self.title


class ActionCase(models.Model):
    action = models.ForeignKey(Action, on_delete=models.CASCADE)
    case = models.ForeignKey(Case, on_delete=models.CASCADE)
    linked_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["action", "case"], name="action_case_unique")
        ]


class ActionEvent(models.Model):
    """One entry of an action's timeline. Rows are only ever added."""

    action = models.ForeignKey(Action, on_delete=models.CASCADE, related_name="events")
    # PROTECT, as on case events: deactivate users with history instead.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    kind = models.CharField(max_length=30)
    changes = models.JSONField(default=dict, blank=True)
    body = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]

    def save(self, *args, **kwargs):
        if self.pk is not None and not self._state.adding:
            raise ValueError("Action events are append-only; add a new event instead of editing one.")
        super().save(*args, **kwargs)
