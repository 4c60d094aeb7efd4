"""Admin of actions, webhook endpoints and the webhook delivery log.

The webhook classes live here rather than in cases/admin.py so each app's
admin module has one owner; the models stay in the cases app.
"""

from django.contrib import admin

from cases.models import WebhookDelivery, WebhookEndpoint

from .models import Action, ActionCase, ActionEvent


class ActionCaseInline(admin.TabularInline):
    model = ActionCase
    extra = 0
    raw_id_fields = ["case"]
    fields = ["case", "linked_at"]
    readonly_fields = ["linked_at"]


class ActionEventInline(admin.TabularInline):
    """The action's timeline; events are append-only, so nothing here is editable."""

    model = ActionEvent
    extra = 0
    can_delete = False
    fields = ["created_at", "kind", "actor", "changes", "body"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Action)
class ActionAdmin(admin.ModelAdmin):
    list_display = ["title", "team", "owner", "state", "due_date", "verdict", "measured_at"]
    list_filter = ["state", "verdict", "team"]
    search_fields = ["title", "description"]
    raw_id_fields = ["owner", "created_by"]
    readonly_fields = [
        "created_at", "started_at", "done_at", "measure_due_at", "measured_at",
        "verdict", "measurement", "last_reminded_on",
    ]  # fmt: skip
    inlines = [ActionCaseInline, ActionEventInline]


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ["name", "url", "is_active", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "url"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    """The delivery log, read-only: one row per attempt."""

    list_display = ["created_at", "endpoint", "event", "attempt", "status_code", "duration_ms", "error"]
    list_filter = ["event", "endpoint"]
    list_select_related = ["endpoint"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
