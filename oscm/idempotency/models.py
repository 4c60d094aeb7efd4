from django.conf import settings
from django.db import models


class IdempotencyKey(models.Model):
    """A POST that ran once for its user, key and path, with the response
    that a repeat of it gets."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    key = models.CharField(max_length=255)
    # The canonical path of the URL the request addressed, such as
    # /api/v1/cases/76/comment/ for a POST to /api/v1/cases/076/comment/.
    path = models.CharField(max_length=500)
    # SHA-256 of the parsed request body, to tell a repeat from a reuse.
    request_hash = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField()
    # JSON text rather than jsonb, so a replay keeps the key order.
    response_body = models.TextField()
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            # The last word on concurrent repeats: the second INSERT waits for
            # the first transaction and then fails.
            models.UniqueConstraint(
                fields=["user", "key", "path"], name="idempotency_key_user_key_path"
            )
        ]

    def __str__(self) -> str:
        return f"{self.key} {self.path}"
