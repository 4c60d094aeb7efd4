from django.apps import AppConfig


class IdempotencyConfig(AppConfig):
    """Stored keys of POST requests that must run once: the workspace forms'
    submission tokens and the API's Idempotency-Key header."""

    name = "oscm.idempotency"
    label = "idempotency"
    default_auto_field = "django.db.models.BigAutoField"
