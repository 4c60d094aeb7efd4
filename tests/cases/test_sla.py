"""Business-time arithmetic of cases.sla; no database needed."""

import zoneinfo
from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cases.models import BusinessCalendar
from cases.sla import WorkingCalendar, add_business_minutes, business_minutes_between

LONDON = zoneinfo.ZoneInfo("Europe/London")
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
WEEKDAYS = frozenset(range(5))
EVERY_DAY = frozenset(range(7))


def _calendar(zone=LONDON, workdays=WEEKDAYS, start=time(9), end=time(17), holidays=()):
    return WorkingCalendar(
        timezone=zone,
        workdays=workdays,
        day_start=start,
        day_end=end,
        holidays=frozenset(holidays),
    )


def _utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# Daylight-saving changes. In 2025 Europe/London springs forward on Sunday
# 30 March and falls back on Sunday 26 October, America/New_York on Sunday
# 9 March and Sunday 2 November.


@pytest.mark.parametrize("day", [date(2025, 3, 30), date(2025, 10, 26)])
def test_office_day_on_london_change_is_eight_hours(day):
    calendar = _calendar(workdays=EVERY_DAY)
    opens = datetime.combine(day, time(9), LONDON)

    due = add_business_minutes(opens, 8 * 60, calendar)

    assert due.astimezone(LONDON).time() == time(17)
    assert due.astimezone(LONDON).date() == day


def test_london_spring_forward_shifts_utc_by_an_hour():
    calendar = _calendar()
    friday = datetime(2025, 3, 28, 16, tzinfo=LONDON)

    due = add_business_minutes(friday, 120, calendar)

    # Friday 16:00 GMT is 16:00 UTC; Monday 10:00 BST is 09:00 UTC.
    assert due == _utc(2025, 3, 31, 9)


def test_london_fall_back_shifts_utc_by_an_hour():
    calendar = _calendar()
    friday = datetime(2025, 10, 24, 16, tzinfo=LONDON)

    due = add_business_minutes(friday, 120, calendar)

    # Friday 16:00 BST is 15:00 UTC; Monday 10:00 GMT is 10:00 UTC.
    assert due == _utc(2025, 10, 27, 10)


def test_new_york_weekend_across_spring_forward():
    calendar = _calendar(zone=NEW_YORK)
    friday = datetime(2025, 3, 7, 16, tzinfo=NEW_YORK)

    due = add_business_minutes(friday, 120, calendar)

    assert due == _utc(2025, 3, 10, 14)
    assert business_minutes_between(friday, due, calendar) == 120


def test_new_york_weekend_across_fall_back():
    calendar = _calendar(zone=NEW_YORK)
    friday = datetime(2025, 10, 31, 16, tzinfo=NEW_YORK)

    due = add_business_minutes(friday, 120, calendar)

    assert due == _utc(2025, 11, 3, 15)


@pytest.mark.parametrize(
    ("day", "hours"), [(date(2025, 3, 30), 23), (date(2025, 10, 26), 25)]
)
def test_local_around_the_clock_counts_elapsed_time(day, hours):
    calendar = _calendar(workdays=EVERY_DAY, start=time(0), end=time(0))
    midnight = datetime.combine(day, time(0), LONDON)
    next_midnight = datetime.combine(day + timedelta(days=1), time(0), LONDON)

    minutes = business_minutes_between(midnight, next_midnight, calendar)

    assert minutes == hours * 60


def test_nonexistent_day_start_moves_to_the_change():
    # 01:30 does not exist on 30 March 2025 in London: clocks jump from
    # 01:00 GMT to 02:00 BST at 01:00 UTC.
    calendar = _calendar(workdays=EVERY_DAY, start=time(1, 30), end=time(5))
    midnight = datetime(2025, 3, 30, tzinfo=LONDON)

    due = add_business_minutes(midnight, 60, calendar)

    assert due == _utc(2025, 3, 30, 2)
    assert (
        business_minutes_between(midnight, midnight + timedelta(days=1), calendar)
        == 180
    )


def test_ambiguous_day_start_takes_first_occurrence():
    # 01:30 happens twice on 26 October 2025 in London, first at 00:30 UTC.
    calendar = _calendar(workdays=EVERY_DAY, start=time(1, 30), end=time(5))
    midnight = datetime(2025, 10, 26, tzinfo=LONDON)

    due = add_business_minutes(midnight, 60, calendar)

    assert due == _utc(2025, 10, 26, 1, 30)


# Weekends, holidays and closed hours


def test_add_skips_weekend():
    calendar = _calendar(zone=zoneinfo.ZoneInfo("UTC"))

    due = add_business_minutes(_utc(2025, 3, 7, 16), 120, calendar)

    assert due == _utc(2025, 3, 10, 10)


def test_add_skips_holiday():
    calendar = _calendar(zone=zoneinfo.ZoneInfo("UTC"), holidays=[date(2025, 3, 10)])

    due = add_business_minutes(_utc(2025, 3, 7, 16), 120, calendar)

    assert due == _utc(2025, 3, 11, 10)


def test_add_from_closed_hours_starts_at_opening():
    calendar = _calendar(zone=zoneinfo.ZoneInfo("UTC"))

    due = add_business_minutes(_utc(2025, 3, 8, 12), 30, calendar)

    assert due == _utc(2025, 3, 10, 9, 30)


def test_add_ending_at_closing_is_due_at_closing():
    calendar = _calendar(zone=zoneinfo.ZoneInfo("UTC"))

    due = add_business_minutes(_utc(2025, 3, 7, 16), 60, calendar)

    assert due == _utc(2025, 3, 7, 17)


def test_add_zero_minutes_returns_start():
    calendar = _calendar()
    saturday = _utc(2025, 3, 8, 12)

    assert add_business_minutes(saturday, 0, calendar) == saturday


def test_between_night_and_weekend_pause():
    calendar = _calendar(zone=zoneinfo.ZoneInfo("UTC"))

    # Thursday 16:00 to Monday 10:00: 1 h Thursday, 8 h Friday, 1 h Monday.
    minutes = business_minutes_between(
        _utc(2025, 3, 6, 16), _utc(2025, 3, 10, 10), calendar
    )

    assert minutes == 10 * 60


def test_between_holiday_counts_nothing():
    calendar = _calendar(zone=zoneinfo.ZoneInfo("UTC"), holidays=[date(2025, 3, 10)])

    minutes = business_minutes_between(_utc(2025, 3, 10), _utc(2025, 3, 11), calendar)

    assert minutes == 0


def test_between_reversed_is_zero():
    calendar = _calendar()

    assert business_minutes_between(_utc(2025, 3, 11), _utc(2025, 3, 10), calendar) == 0


def test_between_fractional_minutes():
    calendar = _calendar(zone=zoneinfo.ZoneInfo("UTC"))

    minutes = business_minutes_between(
        _utc(2025, 3, 10, 9), _utc(2025, 3, 10, 9, 0, 30), calendar
    )

    assert minutes == 0.5


# Long spans


def test_add_long_span_matches_closed_form():
    calendar = _calendar(zone=zoneinfo.ZoneInfo("UTC"))
    monday = _utc(2025, 1, 6, 9)

    due = add_business_minutes(monday, 1_000_000, calendar)

    # 1,000,000 minutes are 2083 days of 480 minutes (416 weeks and 3
    # days) and 160 minutes more.
    expected_day = date(2025, 1, 6) + timedelta(weeks=416, days=3)
    assert due == datetime.combine(expected_day, time(11, 40), UTC)


def test_between_long_span_with_changes():
    calendar = _calendar(holidays=[date(2026, 12, 25)])
    start = datetime(2025, 1, 6, 9, tzinfo=LONDON)

    due = add_business_minutes(start, 500_000, calendar)

    assert business_minutes_between(start, due, calendar) == 500_000


@settings(max_examples=200, deadline=None)
@given(
    start=st.datetimes(
        min_value=datetime(2024, 1, 1),
        max_value=datetime(2027, 1, 1),
        timezones=st.just(UTC),
    ),
    minutes=st.integers(min_value=0, max_value=20_000),
    zone=st.sampled_from([LONDON, NEW_YORK, zoneinfo.ZoneInfo("Asia/Jakarta")]),
)
def test_between_inverts_add(start, minutes, zone):
    calendar = _calendar(zone=zone, holidays=[date(2025, 12, 25), date(2026, 1, 1)])

    due = add_business_minutes(start, minutes, calendar)

    assert business_minutes_between(start, due, calendar) == pytest.approx(minutes)


# Calendars


def test_around_the_clock_adds_plain_minutes():
    calendar = WorkingCalendar.around_the_clock()
    saturday = _utc(2025, 3, 29, 23, 30)

    due = add_business_minutes(saturday, 1500, calendar)

    assert due == saturday + timedelta(minutes=1500)


def test_from_model_none_is_around_the_clock():
    assert WorkingCalendar.from_model(None) == WorkingCalendar.around_the_clock()


def test_from_model_reads_row():
    row = BusinessCalendar(
        timezone="Europe/London", workdays="0,2,4", day_start="08:30", day_end=time(16)
    )

    calendar = WorkingCalendar.from_model(row, holidays=[date(2025, 12, 25)])

    assert calendar == WorkingCalendar(
        timezone=LONDON,
        workdays=frozenset({0, 2, 4}),
        day_start=time(8, 30),
        day_end=time(16),
        holidays=frozenset({date(2025, 12, 25)}),
    )


def test_naive_start_is_rejected():
    with pytest.raises(ValueError, match="aware"):
        add_business_minutes(datetime(2025, 3, 10, 9), 10, _calendar())


def test_negative_minutes_are_rejected():
    with pytest.raises(ValueError, match="negative"):
        add_business_minutes(_utc(2025, 3, 10, 9), -1, _calendar())


def test_day_ending_before_start_is_rejected():
    with pytest.raises(ValueError, match="end after it starts"):
        _calendar(start=time(17), end=time(9))
