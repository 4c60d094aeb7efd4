from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Customer(models.Model):
    external_id = models.CharField(max_length=200, unique=True)
    email = models.EmailField(blank=True)
    name = models.CharField(max_length=200, blank=True)
    language = models.CharField(max_length=8, blank=True)
    segment = models.CharField(max_length=100, blank=True)
    is_opted_out = models.BooleanField(default=False)
    time_zone = models.CharField(
        max_length=64, blank=True, help_text="IANA time zone name, for example Asia/Jakarta."
    )
    created_at = models.DateTimeField(default=timezone.now)
    erased_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.name or self.email or self.external_id


class Topic(models.Model):
    """A subject customers talk about, found in text by keyword rules."""

    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=100)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class TopicKeyword(models.Model):
    """A word or phrase that marks a topic in one language.

    A keyword ending in ``*`` matches any word that starts with the rest, so
    ``deliver*`` matches "delivery" and "delivered".
    """

    topic = models.ForeignKey(Topic, on_delete=models.CASCADE, related_name="keywords")
    language = models.CharField(max_length=8)
    phrase = models.CharField(max_length=100)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["topic", "language", "phrase"], name="topic_keyword_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.language}: {self.phrase}"


class Feedback(models.Model):
    class Kind(models.TextChoices):
        NPS = "nps", "NPS (0-10)"
        CSAT = "csat", "CSAT (1-5)"
        CES = "ces", "CES (1-7, 7 = very easy)"
        RATING = "rating", "Star rating (1-5)"
        TEXT = "text", "Text only"

    class Source(models.TextChoices):
        SURVEY = "survey", "Survey"
        REVIEW = "review", "Review"
        SOCIAL = "social", "Social post"
        SUPPORT = "support", "Support conversation"
        OTHER = "other", "Other"

    class SentimentLabel(models.TextChoices):
        POSITIVE = "positive", "Positive"
        NEUTRAL = "neutral", "Neutral"
        NEGATIVE = "negative", "Negative"

    # Inclusive score range of each kind; text feedback carries no score.
    SCORE_RANGES = {
        Kind.NPS: (0, 10),
        Kind.CSAT: (1, 5),
        Kind.CES: (1, 7),
        Kind.RATING: (1, 5),
    }

    # Indexed by ``feedback_customer_occurred``, whose first column it is; a
    # second index of its own would only slow every insert down.
    customer = models.ForeignKey(
        Customer,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="feedback",
        db_index=False,
    )
    kind = models.CharField(max_length=10, choices=Kind.choices)
    score = models.SmallIntegerField(null=True, blank=True)
    comment = models.TextField(blank=True)
    source = models.CharField(max_length=10, choices=Source.choices)
    touchpoint = models.CharField(max_length=50, blank=True)
    product = models.CharField(max_length=200, blank=True)
    language = models.CharField(max_length=8, blank=True)
    occurred_at = models.DateTimeField(default=timezone.now)
    received_at = models.DateTimeField(default=timezone.now)
    external_id = models.CharField(max_length=200)
    raw = models.JSONField(default=dict, blank=True)

    sentiment = models.FloatField(null=True, blank=True)
    sentiment_label = models.CharField(
        max_length=10, choices=SentimentLabel.choices, blank=True
    )
    topics = models.ManyToManyField(Topic, through="FeedbackTopic", related_name="feedback")
    # Indexed only where set (``feedback_primary_topic``): imported rows
    # arrive without a topic and get it from the analysis.
    primary_topic = models.ForeignKey(
        Topic,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    analyzed_at = models.DateTimeField(null=True, blank=True)
    evaluated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "feedback"
        constraints = [
            models.UniqueConstraint(
                fields=["source", "external_id"], name="feedback_source_external_id_unique"
            ),
            models.CheckConstraint(
                name="feedback_score_in_kind_range",
                condition=(
                    Q(kind="nps", score__gte=0, score__lte=10)
                    | Q(kind="csat", score__gte=1, score__lte=5)
                    | Q(kind="ces", score__gte=1, score__lte=7)
                    | Q(kind="rating", score__gte=1, score__lte=5)
                    | Q(score__isnull=True)
                ),
            ),
        ]
        indexes = [
            models.Index(fields=["kind", "occurred_at"], name="feedback_kind_occurred"),
            models.Index(fields=["customer", "occurred_at"], name="feedback_customer_occurred"),
            models.Index(
                fields=["received_at"],
                name="feedback_unevaluated",
                condition=Q(evaluated_at__isnull=True),
            ),
            models.Index(
                fields=["primary_topic"],
                name="feedback_primary_topic",
                condition=Q(primary_topic__isnull=False),
            ),
        ]

    def clean(self) -> None:
        if self.score is None:
            return
        if self.kind == self.Kind.TEXT:
            raise ValidationError({"score": "Text feedback has no score; leave it empty."})
        low, high = self.SCORE_RANGES[self.kind]
        if not low <= self.score <= high:
            raise ValidationError(
                {"score": f"Score {self.score} is outside the {self.kind} range {low}-{high}."}
            )

    def __str__(self) -> str:
        score = "-" if self.score is None else self.score
        return f"{self.get_kind_display()} {score} ({self.source}:{self.external_id})"


class FeedbackTopic(models.Model):
    feedback = models.ForeignKey(Feedback, on_delete=models.CASCADE)
    topic = models.ForeignKey(Topic, on_delete=models.CASCADE)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["feedback", "topic"], name="feedback_topic_unique")
        ]


class MetricRollup(models.Model):
    """Count of scored feedback per day, dimension set and score.

    Metrics are summed from these counts, never from averaged percentages.
    ``topic_key`` is 0 on the row that counts every feedback once, and a topic
    id on the rows that count the feedback tagged with that topic, so a
    feedback with two topics adds to three rows of the same day and score.
    """

    day = models.DateField()
    kind = models.CharField(max_length=10, choices=Feedback.Kind.choices)
    source = models.CharField(max_length=10, choices=Feedback.Source.choices)
    touchpoint = models.CharField(max_length=50, blank=True)
    topic_key = models.BigIntegerField(default=0)
    score = models.SmallIntegerField()
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "day", "source", "touchpoint", "topic_key", "score"],
                name="metric_rollup_unique",
            )
        ]
        # metric_summary filters on kind, topic key and often touchpoint, then
        # groups by day. Without this index each call reads every rollup row
        # of the kind.
        indexes = [
            models.Index(
                fields=["kind", "topic_key", "touchpoint", "day"],
                name="metric_rollup_summary",
            )
        ]


class CustomerErasure(models.Model):
    """Record of a customer's personal data erased on request.

    Kept after the erasure as proof that it happened; it contains no personal
    data itself, only the pseudonymous customer id.
    """

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="erasures")
    requested_by = models.ForeignKey(
        "auth.User", null=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.CharField(max_length=300, blank=True)
    feedback_count = models.PositiveIntegerField(default=0)
    erased_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"Erasure of customer #{self.customer_id} at {self.erased_at:%Y-%m-%d %H:%M}"
