"""Shared API pieces: the exception handler that turns domain errors into JSON."""

from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .errors import DomainError


def exception_handler(exc, context):
    if isinstance(exc, DomainError):
        return Response({"detail": exc.message, **exc.details}, status=exc.status)
    return drf_exception_handler(exc, context)
