"""Business-time arithmetic for SLA targets: plain functions, no queries.

A ``WorkingCalendar`` defines when the clock runs: on working days that are not
holidays, between ``day_start`` and ``day_end`` on the local wall clock of
its time zone. Each day's working window is built from wall-clock times in
local time and then converted to UTC, and business time is the elapsed time
inside those windows. So a 09:00-17:00 day is 8 hours on a daylight-saving
change day too, because the change happens outside the window. A window that
contains a change (a 24x7 local calendar, a night shift) counts the elapsed
time: 23 hours on the spring-forward day and 25 on the fall-back day.

Window boundaries that fall on a nonexistent or ambiguous local time are
resolved as follows:

- Nonexistent (skipped by a spring-forward change): the boundary moves to
  the instant of the change, the first moment the wall clock has passed it.
- Ambiguous (repeated by a fall-back change): the first occurrence
  (``fold=0``), so the day starts and ends the first time the clock shows
  the time.
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import BusinessCalendar

MIDNIGHT = time(0)
_ZERO = timedelta(0)


@dataclass(frozen=True)
class WorkingCalendar:
    """Working days and hours in one time zone, with holiday dates.

    ``day_end`` of midnight (``time(0)``) means the end of the day (24:00).
    ``workdays`` contains weekday numbers as ``date.weekday()`` returns
    them: 0 is Monday and 6 is Sunday.
    """

    timezone: zoneinfo.ZoneInfo
    workdays: frozenset[int]
    day_start: time
    day_end: time
    holidays: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        if not self.workdays <= set(range(7)):
            raise ValueError(
                f"Workdays must be numbers 0-6, got {sorted(self.workdays)}."
            )
        if self.day_end != MIDNIGHT and self.day_end <= self.day_start:
            raise ValueError(
                f"The working day must end after it starts: {self.day_start} to "
                f"{self.day_end}; use time(0) as day_end for midnight."
            )

    @classmethod
    def around_the_clock(cls) -> WorkingCalendar:
        """Build the calendar of a team without one: 24x7 in UTC."""
        return cls(
            timezone=zoneinfo.ZoneInfo("UTC"),
            workdays=frozenset(range(7)),
            day_start=MIDNIGHT,
            day_end=MIDNIGHT,
        )

    @classmethod
    def from_model(
        cls, calendar: BusinessCalendar | None, holidays: Iterable[date] | None = None
    ) -> WorkingCalendar:
        """Build the calendar of a BusinessCalendar row, or 24x7 UTC for None.

        Without ``holidays`` the row's holidays are read through
        ``calendar.holidays.all()``, which costs a query unless the caller
        used ``prefetch_related("holidays")``.
        """
        if calendar is None:
            return cls.around_the_clock()
        if holidays is None:
            holidays = [holiday.date for holiday in calendar.holidays.all()]
        workdays = frozenset(
            int(day) for day in calendar.workdays.split(",") if day.strip()
        )
        return cls(
            timezone=zoneinfo.ZoneInfo(calendar.timezone),
            workdays=workdays,
            day_start=_as_time(calendar.day_start),
            day_end=_as_time(calendar.day_end),
            holidays=frozenset(holidays),
        )


def _as_time(value: time | str) -> time:
    # A row created with a string default ("09:00") keeps the string until
    # it is reloaded from the database.
    return value if isinstance(value, time) else time.fromisoformat(value)


def add_business_minutes(
    start: datetime, minutes: float, calendar: WorkingCalendar
) -> datetime:
    """Return the UTC instant after ``minutes`` of business time from ``start``.

    When ``start`` lies outside working hours, the count begins at the next
    window. The result is the earliest instant with that much business time
    behind it, so a target that runs out exactly at closing time is due at
    closing time, not at the next opening. Zero minutes return ``start``.
    """
    _check_aware(start)
    if minutes < 0:
        raise ValueError(f"Business minutes must not be negative, got {minutes}.")
    start = start.astimezone(UTC)
    remaining = timedelta(minutes=minutes)
    if remaining == _ZERO:
        return start
    if not calendar.workdays:
        raise ValueError("The calendar has no working days, so no target can be met.")

    day = start.astimezone(calendar.timezone).date()
    while True:
        window = _window(calendar, day)
        if window is not None and window[1] > start:
            opens = max(window[0], start)
            available = window[1] - opens
            if remaining <= available:
                return opens + remaining
            remaining -= available
        day += timedelta(days=1)


def business_minutes_between(
    start: datetime, end: datetime, calendar: WorkingCalendar
) -> float:
    """Return the business minutes from ``start`` to ``end``, or 0 when end <= start."""
    _check_aware(start)
    _check_aware(end)
    start = start.astimezone(UTC)
    end = end.astimezone(UTC)
    if end <= start:
        return 0.0

    total = _ZERO
    day = start.astimezone(calendar.timezone).date()
    last_day = end.astimezone(calendar.timezone).date()
    while day <= last_day:
        window = _window(calendar, day)
        if window is not None:
            overlap = min(window[1], end) - max(window[0], start)
            if overlap > _ZERO:
                total += overlap
        day += timedelta(days=1)
    return total / timedelta(minutes=1)


def _check_aware(value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"Business time needs an aware datetime, got naive {value}.")


# Windows repeat for every case of a sweep, so they are cached per calendar
# and day. The calendar is frozen and hashable, so a changed row gives a new
# cache key instead of a stale entry.
@functools.lru_cache(maxsize=65536)
def _window(calendar: WorkingCalendar, day: date) -> tuple[datetime, datetime] | None:
    """Return the UTC start and end of the working window of a local date."""
    if day.weekday() not in calendar.workdays or day in calendar.holidays:
        return None
    opens = _local_to_utc(datetime.combine(day, calendar.day_start), calendar.timezone)
    if calendar.day_end == MIDNIGHT:
        closing = datetime.combine(day + timedelta(days=1), MIDNIGHT)
    else:
        closing = datetime.combine(day, calendar.day_end)
    closes = _local_to_utc(closing, calendar.timezone)
    if closes <= opens:
        # Both boundaries fell into the same skipped hour.
        return None
    return opens, closes


def _local_to_utc(local: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    """Convert a naive local wall-clock time to UTC by the rules above."""
    first = local.replace(tzinfo=zone, fold=0)
    instant = first.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == local:
        return instant
    # Nonexistent: fold=0 applied the offset from before the change, which
    # lands after it. fold=1 applied the offset from after it, which lands
    # before it. The change instant lies between the two.
    before = local.replace(tzinfo=zone, fold=1).astimezone(UTC)
    return _transition_between(before, instant, zone)


def _transition_between(
    low: datetime, high: datetime, zone: zoneinfo.ZoneInfo
) -> datetime:
    """Return the first instant in (low, high] whose UTC offset is high's.

    Binary search to the second: tz database changes happen on whole
    seconds, and a gap is at most a day long, so this takes about 17 steps.
    """
    target = high.astimezone(zone).utcoffset()
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        middle = middle.replace(microsecond=0)
        if middle <= low:
            middle = low + timedelta(seconds=1)
        if middle.astimezone(zone).utcoffset() == target:
            high = middle
        else:
            low = middle
    return high
