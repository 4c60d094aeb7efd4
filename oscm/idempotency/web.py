"""One-time submission tokens of the workspace forms.

Each rendered form carries a random token in a hidden field
(``{% submission_token %}``). Nothing is stored when the page is rendered.
The first POST with a token stores it, so a second POST with the same token
(a double click, a resubmit from the back button) is recognised.
"""

import re
import secrets
from collections.abc import Callable
from functools import wraps

from django.contrib import messages
from django.contrib.messages.storage.base import BaseStorage
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.http.response import HttpResponseRedirectBase
from django.utils.translation import gettext as _

from oscm.errors import DomainError

from .services import (
    IdempotencyKeyReused,
    StoredResponse,
    idempotency_key_respond,
    request_fingerprint,
    request_scope_path,
)

SUBMISSION_TOKEN_FIELD = "submission_token"
# submission_token_new makes 32 characters; the range leaves room for change.
_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,128}")
# Fields that differ between two renders of the same form, or are the token.
_UNHASHED_FIELDS = {"csrfmiddlewaretoken", SUBMISSION_TOKEN_FIELD}


def submission_token_new() -> str:
    return secrets.token_urlsafe(24)


def _message_list(storage: BaseStorage | list) -> list:
    # Iterating a storage marks its messages as shown; resetting ``used``
    # keeps them for the next page, as Django's messages docs describe.
    # Without MessageMiddleware the storage is an empty list.
    was_used = getattr(storage, "used", False)
    items = list(storage)
    if isinstance(storage, BaseStorage):
        storage.used = was_used
    return items


def one_time_submission(
    view: Callable[..., HttpResponse],
) -> Callable[..., HttpResponse]:
    """Run a workspace form's POST once per submission token.

    The first POST with a token runs the view. A repeat with the same token
    and values runs nothing and gets the first one's redirect and messages
    again. A repeat with other values raises DomainError, because it comes
    from a form page reused after its first submission. Only a redirect is
    stored: any other response (a form shown again with errors) releases
    the token. A POST without a token, such as one from a page rendered
    before tokens existed, runs as before.

    Put it inside login_required and domain_errors_as_messages, so the user
    is known and an error from the view rolls back the token too.
    """

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        token = ""
        if request.method == "POST":
            token = request.POST.get(SUBMISSION_TOKEN_FIELD, "")
        if not token:
            return view(request, *args, **kwargs)
        if not _TOKEN_PATTERN.fullmatch(token):
            raise DomainError(
                _(
                    "The form's submission token is invalid: reload the page and "
                    "submit the form again."
                )
            )
        fields = {
            name: values
            for name, values in request.POST.lists()
            if name not in _UNHASHED_FIELDS
        }
        storage = messages.get_messages(request)
        shown_before = len(_message_list(storage))

        def to_stored(response: HttpResponse) -> tuple[int, dict] | None:
            if not isinstance(response, HttpResponseRedirectBase):
                return None
            added = _message_list(storage)[shown_before:]
            return response.status_code, {
                "location": response["Location"],
                "messages": [
                    [message.level, str(message.message), message.extra_tags]
                    for message in added
                ],
            }

        try:
            stored = idempotency_key_respond(
                user=request.user,
                key=token,
                # The URL patterns' converters have already parsed kwargs,
                # such as <int:pk>, so /cases/076/ and /cases/76/ match.
                path=request_scope_path(request, kwargs),
                fingerprint=request_fingerprint(fields),
                respond=lambda: view(request, *args, **kwargs),
                to_stored=to_stored,
            )
        except IdempotencyKeyReused:
            raise DomainError(
                _(
                    "This form was already submitted with other values. Check the "
                    "reloaded page and submit again if the change is still needed."
                )
            ) from None
        if not isinstance(stored, StoredResponse):
            return stored
        for level, text, extra_tags in stored.body["messages"]:
            messages.add_message(request, level, text, extra_tags=extra_tags)
        response = HttpResponseRedirect(stored.body["location"])
        response.status_code = stored.status
        return response

    return wrapper
