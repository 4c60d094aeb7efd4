from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from .models import Customer, Feedback, Topic, TopicKeyword
from .services import feedback_correct_score


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ["external_id", "name", "email", "language", "segment", "is_opted_out"]
    list_filter = ["is_opted_out", "language", "segment"]
    search_fields = ["external_id", "name", "email"]
    readonly_fields = ["created_at"]


class TopicKeywordInline(admin.TabularInline):
    model = TopicKeyword
    extra = 3
    fields = ["language", "phrase"]
    verbose_name = "keyword"
    verbose_name_plural = (
        "keywords (one word or phrase each; end with * to match every word that starts "
        "with it, for example deliver* for delivery and delivered)"
    )


@admin.register(Topic)
class TopicAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "is_active", "keyword_count"]
    list_editable = ["is_active"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [TopicKeywordInline]

    @admin.display(description="keywords")
    def keyword_count(self, topic: Topic) -> int:
        return topic.keywords.count()


@admin.register(Feedback)
class FeedbackAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "kind",
        "score",
        "sentiment_label",
        "primary_topic",
        "source",
        "touchpoint",
        "customer_link",
        "occurred_at",
        "short_comment",
    ]
    list_filter = ["kind", "source", "sentiment_label", "primary_topic", "language", "touchpoint"]
    search_fields = ["comment", "external_id", "customer__external_id", "customer__email"]
    date_hierarchy = "occurred_at"
    list_select_related = ["customer", "primary_topic"]
    show_full_result_count = False
    # Only the score can be corrected here; everything else is the record
    # of what the customer sent.
    fields = [
        "customer",
        "kind",
        "score",
        "comment",
        "source",
        "touchpoint",
        "product",
        "language",
        "occurred_at",
        "received_at",
        "external_id",
        "sentiment",
        "sentiment_label",
        "topic_list",
        "analyzed_at",
        "evaluated_at",
        "raw",
    ]
    readonly_fields = [name for name in fields if name != "score"] + ["topic_list"]

    def has_add_permission(self, request) -> bool:
        # Feedback comes in through the API and import_feedback, which
        # validate, analyse and evaluate it.
        return False

    @admin.display(description="comment")
    def short_comment(self, feedback: Feedback) -> str:
        return feedback.comment[:80] + ("…" if len(feedback.comment) > 80 else "")

    @admin.display(description="customer", ordering="customer__external_id")
    def customer_link(self, feedback: Feedback):
        if feedback.customer_id is None:
            return "-"
        url = reverse("admin:feedback_customer_change", args=[feedback.customer_id])
        return format_html('<a href="{}">{}</a>', url, feedback.customer)

    @admin.display(description="topics")
    def topic_list(self, feedback: Feedback) -> str:
        return ", ".join(topic.name for topic in feedback.topics.all()) or "-"

    def save_model(self, request, obj: Feedback, form, change: bool) -> None:
        # The score goes through the service so the metric rollups stay exact.
        if change and "score" in form.changed_data:
            feedback_correct_score(feedback=obj, score=form.cleaned_data["score"])
