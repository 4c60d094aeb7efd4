"""Shared API pieces: the JSON parser with limits, and the exception handler
that turns domain errors into JSON."""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework import parsers, status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .errors import DomainError


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser with a body size limit and a clean error for deep nesting."""

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        limit = settings.OSCM_API_MAX_BODY_BYTES
        length = int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
        if length > limit:
            raise PayloadTooLarge(
                f"The request body is {length} bytes; the limit is {limit} bytes. "
                "Send fewer items per request or use the import_feedback command."
            )
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error: the document is nested too deeply.") from None


def exception_handler(exc, context):
    if isinstance(exc, DomainError):
        return Response({"detail": exc.message, **exc.details}, status=exc.status)
    if isinstance(exc, RequestDataTooBig):
        # Django's own cap on reading the body, before the parser's check.
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        exc = PayloadTooLarge(
            f"The request body is larger than {limit} bytes. "
            "Send fewer items per request or use the import_feedback command."
        )
    return drf_exception_handler(exc, context)
