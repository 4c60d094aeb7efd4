"""The Idempotency-Key header of the API's POST endpoints that create rows.

A client that retries a request it got no response to (a timeout, a dropped
connection) sends the same key, and gets the first response again instead
of a second row. The key is scoped to the user and the URL the request
addresses, with its lookup value parsed, so /cases/076/comment/ and
/cases/76/comment/ share keys. Without the header a request runs as before.
"""

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.core.exceptions import FieldDoesNotExist, ValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework.request import Request
from rest_framework.response import Response

from oscm.errors import DomainError

from .services import (
    StoredResponse,
    idempotency_key_respond,
    request_fingerprint,
    request_scope_path,
)

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_MAX_LENGTH = 255
REPLAYED_HEADER = "Idempotent-Replayed"

IDEMPOTENCY_KEY_PARAMETER = OpenApiParameter(
    IDEMPOTENCY_KEY_HEADER,
    OpenApiTypes.STR,
    location=OpenApiParameter.HEADER,
    required=False,
    description=(
        "A unique key of 1 to 255 characters, such as a UUID, to retry this "
        f"request safely for {settings.OSCM_IDEMPOTENCY_KEY_HOURS} hours. A repeat with "
        "the same key and body gets the first response again, with the header "
        f"{REPLAYED_HEADER}: true; the same key with another body gets 422. A "
        "request that fails stores nothing, so its retry runs again."
    ),
)


def _checked_key(raw: str) -> str:
    key = raw.strip()
    if not key or len(key) > IDEMPOTENCY_KEY_MAX_LENGTH or not key.isprintable():
        raise DomainError(
            f"The {IDEMPOTENCY_KEY_HEADER} header is empty, longer than "
            f"{IDEMPOTENCY_KEY_MAX_LENGTH} characters or not printable: send a "
            "unique key such as a UUID.",
            details={"idempotency_key": raw[:IDEMPOTENCY_KEY_MAX_LENGTH]},
        )
    return key


def _lookup_parsed(view, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Return the URL kwargs with the viewset's lookup value parsed by its
    model field, as the object lookup reads it ("076" and "76" give 76).

    A value the field rejects stays as sent, because the handler then
    returns 404 and stores nothing.
    """
    lookup_kwarg = getattr(view, "lookup_url_kwarg", None) or getattr(
        view, "lookup_field", None
    )
    if lookup_kwarg not in kwargs:
        return kwargs
    options = view.get_queryset().model._meta
    try:
        # get_field() does not know the "pk" alias.
        if view.lookup_field == "pk":
            field = options.pk
        else:
            field = options.get_field(view.lookup_field)
        value = field.to_python(kwargs[lookup_kwarg])
    except (FieldDoesNotExist, ValidationError):
        return kwargs
    return {**kwargs, lookup_kwarg: value}


def idempotent(handler: Callable[..., Response]) -> Callable[..., Response]:
    """Run a viewset's POST handler once per Idempotency-Key.

    Only a 2xx response is stored. An error raised or returned by the
    handler stores nothing, so the retry runs again.
    """

    @wraps(handler)
    def wrapper(view, request: Request, *args, **kwargs) -> Response:
        raw_key = request.headers.get(IDEMPOTENCY_KEY_HEADER)
        if raw_key is None:
            return handler(view, request, *args, **kwargs)
        key = _checked_key(raw_key)

        def to_stored(response: Response) -> tuple[int, object] | None:
            if not 200 <= response.status_code < 300:
                return None
            return response.status_code, response.data

        stored = idempotency_key_respond(
            user=request.user,
            key=key,
            path=request_scope_path(request, _lookup_parsed(view, kwargs)),
            fingerprint=request_fingerprint(request.data),
            respond=lambda: handler(view, request, *args, **kwargs),
            to_stored=to_stored,
        )
        if not isinstance(stored, StoredResponse):
            return stored
        response = Response(stored.body, status=stored.status)
        response[REPLAYED_HEADER] = "true"
        return response

    return wrapper
