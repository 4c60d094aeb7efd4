"""The ``{% submission_token %}`` tag that workspace forms put beside
``{% csrf_token %}``."""

from django import template
from django.utils.html import format_html

from ..web import SUBMISSION_TOKEN_FIELD, submission_token_new

register = template.Library()


@register.simple_tag
def submission_token() -> str:
    """Render a hidden field with a new token, one per form on the page."""
    return format_html(
        '<input type="hidden" name="{}" value="{}">',
        SUBMISSION_TOKEN_FIELD,
        submission_token_new(),
    )
