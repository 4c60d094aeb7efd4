"""Bounds of the dates that filters of the workspace and the API accept."""

from datetime import date

from django.core.validators import MaxValueValidator, MinValueValidator

# Views step a day past an "until" date and a default range before it, which
# raises OverflowError near date.min and date.max, so filter dates stay in
# this range.
FILTER_DATE_MIN = date(1900, 1, 1)
FILTER_DATE_MAX = date(9999, 12, 30)


def filter_date_validators() -> list:
    """Return validators that limit a date to FILTER_DATE_MIN..FILTER_DATE_MAX."""
    return [MinValueValidator(FILTER_DATE_MIN), MaxValueValidator(FILTER_DATE_MAX)]
