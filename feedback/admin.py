import json

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from cases.admin import (
    AdminOnlyMixin,
    HiddenObjectNotFoundMixin,
    RejectForbiddenActionsMixin,
    render_action_form,
    request_works_cases,
)
from cases.models import CaseFeedback
from cases.permissions import cases_visible_to, user_is_admin

from .models import Customer, CustomerErasure, Feedback, Topic, TopicKeyword
from .privacy import customer_erase, customer_export
from .services import feedback_correct_score


class CaseLinkedMixin(HiddenObjectNotFoundMixin):
    """Admin scope that shows agents and leads only the rows linked to their
    teams' cases.

    Admins see and change every row. Agents and leads may only view.
    """

    def has_module_permission(self, request) -> bool:
        return request_works_cases(request)

    def has_view_permission(self, request, obj=None) -> bool:
        return request_works_cases(request)

    def has_add_permission(self, request) -> bool:
        return user_is_admin(request.user)

    def has_change_permission(self, request, obj=None) -> bool:
        return user_is_admin(request.user)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if user_is_admin(request.user):
            return queryset
        return self.filter_to_cases(queryset, cases_visible_to(request.user))


class ErasedFilter(admin.SimpleListFilter):
    title = "personal data"
    parameter_name = "erased"

    def lookups(self, request, model_admin):
        return [("no", "Stored"), ("yes", "Erased")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(erased_at__isnull=self.value() == "no")
        return queryset


class CustomerErasureInline(admin.TabularInline):
    model = CustomerErasure
    extra = 0
    can_delete = False
    fields = ["erased_at", "requested_by", "reason", "feedback_count"]
    readonly_fields = fields
    verbose_name_plural = "erasures of personal data"

    def has_view_permission(self, request, obj=None) -> bool:
        return user_is_admin(request.user)

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class EraseForm(forms.Form):
    reason = forms.CharField(
        max_length=300,
        required=False,
        help_text=(
            "Why the data is erased, for example the date and channel of the "
            "customer's request. Stored with the erasure record, so write no "
            "personal data here."
        ),
    )


@admin.register(Customer)
class CustomerAdmin(CaseLinkedMixin, RejectForbiddenActionsMixin, admin.ModelAdmin):
    list_display = [
        "external_id",
        "name",
        "email",
        "language",
        "segment",
        "is_opted_out",
        "erased_at",
    ]
    list_filter = ["is_opted_out", ErasedFilter, "language", "segment"]
    search_fields = ["external_id", "name", "email"]
    readonly_fields = ["created_at", "erased_at"]
    fields = [
        "external_id",
        "name",
        "email",
        "language",
        "segment",
        "time_zone",
        "is_opted_out",
        "created_at",
        "erased_at",
    ]
    inlines = [CustomerErasureInline]
    actions = ["erase_personal_data", "export_as_json"]

    def filter_to_cases(self, queryset, cases):
        return queryset.filter(pk__in=cases.values("customer_id"))

    def has_privacy_permission(self, request) -> bool:
        return user_is_admin(request.user)

    def get_urls(self):
        export = path(
            "<path:object_id>/export/",
            self.admin_site.admin_view(self.export_view),
            name="feedback_customer_export",
        )
        return [export, *super().get_urls()]

    def get_readonly_fields(self, request, obj=None):
        if self.has_privacy_permission(request) and obj is not None:
            return [*self.readonly_fields, "export_link"]
        return self.readonly_fields

    def get_fields(self, request, obj=None):
        if self.has_privacy_permission(request) and obj is not None:
            return [*self.fields, "export_link"]
        return self.fields

    @admin.display(description="export")
    def export_link(self, customer: Customer):
        url = reverse("admin:feedback_customer_export", args=[customer.pk])
        return format_html('<a href="{}">Download all data as JSON</a>', url)

    def export_view(self, request, object_id):
        if not self.has_privacy_permission(request):
            raise PermissionDenied("Only admins may export customer data.")
        customer = self.get_object(request, unquote(object_id))
        if customer is None:
            raise Http404(f"Customer {object_id} not found.")
        return _json_download(
            customer_export(customer=customer), f"customer-{customer.pk}.json"
        )

    @admin.action(
        description="Export selected customers as JSON", permissions=["privacy"]
    )
    def export_as_json(self, request, queryset):
        exports = [
            customer_export(customer=customer) for customer in queryset.order_by("pk")
        ]
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        return _json_download({"customers": exports}, f"customers-{stamp}.json")

    @admin.action(
        description="Erase personal data of selected customers", permissions=["privacy"]
    )
    def erase_personal_data(self, request, queryset):
        form = EraseForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return render_action_form(
                request,
                self,
                queryset=queryset,
                form=form,
                title="Erase personal data",
                intro=(
                    "This removes the name, email and external id of these "
                    "customers, their feedback comments and raw input, and the "
                    "comments and notes on their cases. Scores, topics and cases "
                    "stay for the statistics. It cannot be undone."
                ),
                submit_label="Erase personal data",
            )
        erased = 0
        for customer in queryset.order_by("pk"):
            if customer.erased_at is not None:
                self.message_user(
                    request,
                    f"Customer #{customer.pk} was already erased.",
                    messages.WARNING,
                )
                continue
            customer_erase(
                customer=customer,
                requested_by=request.user,
                reason=form.cleaned_data["reason"],
            )
            erased += 1
        if erased:
            self.message_user(
                request,
                f"Personal data of {erased} customer(s) erased.",
                messages.SUCCESS,
            )
        return None


def _json_download(data: dict, filename: str) -> HttpResponse:
    response = HttpResponse(
        json.dumps(data, indent=2, ensure_ascii=False), content_type="application/json"
    )
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@admin.register(CustomerErasure)
class CustomerErasureAdmin(AdminOnlyMixin, admin.ModelAdmin):
    """Erasure records, kept as proof and read-only for everyone."""

    list_display = ["erased_at", "customer", "requested_by", "reason", "feedback_count"]
    list_select_related = ["customer", "requested_by"]
    date_hierarchy = "erased_at"
    ordering = ["-erased_at", "-pk"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


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
class TopicAdmin(AdminOnlyMixin, admin.ModelAdmin):
    list_display = ["name", "slug", "is_active", "keyword_count"]
    list_editable = ["is_active"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [TopicKeywordInline]

    @admin.display(description="keywords")
    def keyword_count(self, topic: Topic) -> int:
        return topic.keywords.count()


@admin.register(Feedback)
class FeedbackAdmin(CaseLinkedMixin, admin.ModelAdmin):
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
    list_filter = [
        "kind",
        "source",
        "sentiment_label",
        "primary_topic",
        "language",
        "touchpoint",
    ]
    search_fields = [
        "comment",
        "external_id",
        "customer__external_id",
        "customer__email",
    ]
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

    def filter_to_cases(self, queryset, cases):
        linked = CaseFeedback.objects.filter(case__in=cases).values("feedback_id")
        return queryset.filter(pk__in=linked)

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
