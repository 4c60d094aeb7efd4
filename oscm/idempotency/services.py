"""Run a POST once per user, key and path, and replay its response to repeats.

The path is the canonical one of the URL the request resolved to
(request_scope_path), not the text the client sent.

The workspace forms send a one-time submission token (oscm.idempotency.web)
and API clients an Idempotency-Key header (oscm.idempotency.api); both end
in idempotency_key_run.
"""

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from oscm.errors import DomainError

from .models import IdempotencyKey

logger = logging.getLogger(__name__)

ResponseT = TypeVar("ResponseT")

# Rows one clean-up statement deletes, so no statement holds locks for long.
DELETE_BATCH_SIZE = 5_000


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: Any
    is_replay: bool


class IdempotencyKeyReused(DomainError):
    """The key was used before on the same path with another request body."""

    status = 422


# Sentinel of _run_claimed: another request has claimed the key.
_KEY_TAKEN = object()


def request_fingerprint(data: Any) -> str:
    """Return the SHA-256 of a parsed request body, whatever its key order.

    ``data`` is a dict, a list, or a QueryDict, whose repeated fields count
    with all their values.
    """
    if hasattr(data, "lists"):
        data = {name: values for name, values in data.lists()}
    text = json.dumps(
        data, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder
    )
    return hashlib.sha256(text.encode()).hexdigest()


def request_scope_path(request: HttpRequest, kwargs: dict[str, Any]) -> str:
    """Return the path of the URL that ``request`` resolved to, rebuilt from
    its URL name and ``kwargs``.

    Keys are scoped by this path rather than by ``request.path``, so two
    spellings of one URL, such as /cases/76/ and /cases/076/, share their
    keys once ``kwargs`` contains the parsed values (76 for both). The path of
    a URL already spelled canonically is unchanged, so keys stored under
    ``request.path`` still match. Falls back to ``request.path`` when the
    URL has no name or does not reverse with ``kwargs``.
    """
    match = request.resolver_match
    if match is None or not match.url_name:
        return request.path
    # reverse() rejects args and kwargs together, and the resolver passes
    # positional args only when the pattern has no named groups.
    try:
        if kwargs:
            return reverse(match.view_name, kwargs=kwargs)
        return reverse(match.view_name, args=match.args)
    except NoReverseMatch:
        return request.path


def idempotency_key_run(
    *,
    user: AbstractBaseUser,
    key: str,
    path: str,
    fingerprint: str,
    perform: Callable[[], tuple[int, Any] | None],
) -> StoredResponse | None:
    """Run ``perform`` once for the user, key and path, and store its result.

    ``perform`` runs in the transaction that inserts the key row. A
    concurrent request with the same key waits on the unique constraint
    until that transaction ends, then replays the stored response, or runs
    itself when the first one rolled back. ``perform`` returns the status
    and JSON body to store, or None when it changed nothing (a form with
    errors), which releases the key. An exception from ``perform`` rolls
    back its work and the key, so a retry runs again.

    Returns None when ``perform`` returned None, else the stored response,
    with ``is_replay`` set when this call ran nothing. Raises
    IdempotencyKeyReused (422) when the key ran with another fingerprint.
    """
    # An expired row that the clean-up has not deleted yet is deleted here
    # and the claim tried once more.
    for _attempt in range(2):
        result = _run_claimed(
            user=user, key=key, path=path, fingerprint=fingerprint, perform=perform
        )
        if result is not _KEY_TAKEN:
            return result

        now = timezone.now()
        existing = IdempotencyKey.objects.filter(user=user, key=key, path=path).first()
        if existing is None:
            continue
        if existing.expires_at <= now:
            IdempotencyKey.objects.filter(pk=existing.pk, expires_at__lte=now).delete()
            continue
        if existing.request_hash != fingerprint:
            raise IdempotencyKeyReused(
                f"Idempotency key '{key}' was already used on {path} with a "
                "different request body: send a new key for a new request.",
                details={"idempotency_key": key},
            )
        logger.info(
            "Replayed the response of idempotency key %s",
            existing.pk,
            extra={"idempotency_key_id": existing.pk, "user_id": user.pk},
        )
        return StoredResponse(
            status=existing.response_status,
            body=json.loads(existing.response_body),
            is_replay=True,
        )
    raise DomainError(
        f"Idempotency key '{key}' is in use by another request on {path}: "
        "retry in a moment.",
        details={"idempotency_key": key},
        status=409,
    )


def idempotency_key_respond(
    *,
    user: AbstractBaseUser,
    key: str,
    path: str,
    fingerprint: str,
    respond: Callable[[], ResponseT],
    to_stored: Callable[[ResponseT], tuple[int, Any] | None],
) -> ResponseT | StoredResponse:
    """Run the view call ``respond`` once per user, key and path.

    ``to_stored`` turns its response into the status and JSON body to
    store, or None to release the key. Returns the response of ``respond``
    when it ran, or the StoredResponse of the first run to replay.
    """
    responses: list[ResponseT] = []

    def perform() -> tuple[int, Any] | None:
        response = respond()
        responses.append(response)
        return to_stored(response)

    stored = idempotency_key_run(
        user=user, key=key, path=path, fingerprint=fingerprint, perform=perform
    )
    if stored is None or not stored.is_replay:
        return responses[0]
    return stored


def _run_claimed(
    *,
    user: AbstractBaseUser,
    key: str,
    path: str,
    fingerprint: str,
    perform: Callable[[], tuple[int, Any] | None],
) -> StoredResponse | None | object:
    with transaction.atomic():
        now = timezone.now()
        try:
            with transaction.atomic():
                record = IdempotencyKey.objects.create(
                    user=user,
                    key=key,
                    path=path,
                    request_hash=fingerprint,
                    response_status=0,
                    response_body="",
                    created_at=now,
                    expires_at=now
                    + timedelta(hours=settings.OSCM_IDEMPOTENCY_KEY_HOURS),
                )
        except IntegrityError:
            return _KEY_TAKEN

        result = perform()
        if result is None:
            record.delete()
            return None
        status, body = result
        record.response_status = status
        record.response_body = json.dumps(body, cls=DjangoJSONEncoder)
        record.save(update_fields=["response_status", "response_body"])
    return StoredResponse(status=status, body=body, is_replay=False)


def idempotency_keys_delete_expired(*, batch_size: int = DELETE_BATCH_SIZE) -> int:
    """Delete expired keys in batches of ``batch_size`` and return how many."""
    deleted = 0
    while True:
        expired = IdempotencyKey.objects.filter(
            expires_at__lte=timezone.now()
        ).values_list("pk", flat=True)[:batch_size]
        count, _by_model = IdempotencyKey.objects.filter(pk__in=list(expired)).delete()
        deleted += count
        if count < batch_size:
            return deleted
