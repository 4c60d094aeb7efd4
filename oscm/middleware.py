"""Request checks that run before the API's views."""

from django.http import HttpRequest, HttpResponse, JsonResponse

API_PATH_PREFIX = "/api/"
METHODS_WITH_BODY = {"POST", "PUT", "PATCH"}


def _is_chunked(request: HttpRequest) -> bool:
    codings = request.META.get("HTTP_TRANSFER_ENCODING", "")
    return "chunked" in {coding.strip().lower() for coding in codings.split(",")}


class ChunkedApiBodyMiddleware:
    """Reject an API request whose body is chunked and has no Content-Length,
    with 411 Length Required.

    Django reads CONTENT_LENGTH bytes of a WSGI request body, so without it
    a chunked body reads as empty. DRF would then validate ``{}`` and return
    400 "missing" for fields the body has, or skip the 413 size check.
    Django's handler logs the 411 to the django.request logger, as it does
    every response with a status of 400 or more.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if (
            request.method in METHODS_WITH_BODY
            and request.path_info.startswith(API_PATH_PREFIX)
            and not request.META.get("CONTENT_LENGTH")
            and _is_chunked(request)
        ):
            return JsonResponse(
                {
                    "detail": (
                        "The request body was sent with Transfer-Encoding: chunked "
                        "and no Content-Length, so it cannot be read: send the "
                        "body with a Content-Length header."
                    )
                },
                status=411,
            )
        return self.get_response(request)
