"""Triggers: every syntax, every refusal, and the Vixie cron rules across DST changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from db.errors import InvalidInput
from db.triggers import (
    AtTrigger,
    CronTrigger,
    IntervalTrigger,
    OnceTrigger,
    format_preview_line,
    parse_trigger,
    preview,
)

NY = "America/New_York"
MINUTE = timedelta(minutes=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def fires(text: str, timezone: str, after: datetime, until: datetime) -> list[str]:
    trigger = parse_trigger(text, timezone)
    return [f"{fire:%Y-%m-%dT%H:%M:%SZ}" for fire in trigger.fires(after, until)]


# --- syntaxes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("*/5 * * * *", CronTrigger),
        ("0 9 * * mon-fri 30", CronTrigger),
        ("@daily", CronTrigger),
        ("every 300", IntervalTrigger),
        ("every 1h30m", IntervalTrigger),
        ("at 10:00,22:00", AtTrigger),
        ("at Mon-Fri 09:30", AtTrigger),
        ("once 2026-12-24T18:00:00Z", OnceTrigger),
    ],
)
def test_parse_trigger_recognises_each_syntax(text, kind):
    trigger = parse_trigger(text, "Europe/Berlin")

    assert isinstance(trigger, kind)
    assert trigger.text == text
    assert trigger.timezone == "Europe/Berlin"


def test_parse_trigger_normalises_whitespace_and_caches():
    first = parse_trigger("  */5   * * * * ")

    assert first.text == "*/5 * * * *"
    assert parse_trigger("*/5 * * * *") is first
    assert first == parse_trigger("*/5 * * * *", "UTC")
    assert first != parse_trigger("*/5 * * * *", NY)
    assert hash(first) == hash(parse_trigger("*/5 * * * *"))
    assert repr(first) == "CronTrigger('*/5 * * * *', timezone='UTC')"


def test_cron_trigger_fires_on_five_fields():
    assert fires("*/20 10 * * *", "UTC", utc(2026, 1, 5, 9), utc(2026, 1, 5, 11)) == [
        "2026-01-05T10:00:00Z",
        "2026-01-05T10:20:00Z",
        "2026-01-05T10:40:00Z",
    ]


def test_cron_trigger_sixth_field_is_seconds():
    assert fires("0 10 * * * */20", "UTC", utc(2026, 1, 5, 9), utc(2026, 1, 5, 11)) == [
        "2026-01-05T10:00:00Z",
        "2026-01-05T10:00:20Z",
        "2026-01-05T10:00:40Z",
    ]


def test_cron_trigger_uses_its_zone():
    # 09:30 in Berlin is 08:30 UTC in winter, 07:30 UTC in summer.
    assert fires("30 9 * * *", "Europe/Berlin", utc(2026, 1, 5), utc(2026, 1, 6)) == [
        "2026-01-05T08:30:00Z"
    ]
    assert fires("30 9 * * *", "Europe/Berlin", utc(2026, 7, 5), utc(2026, 7, 6)) == [
        "2026-07-05T07:30:00Z"
    ]


def test_cron_trigger_day_fields_use_vixie_or():
    # Day 1 of the month OR a Monday (2026-06-01 is a Monday; 06-08 and 06-15 are too).
    assert fires("0 12 1 * mon", "UTC", utc(2026, 5, 31), utc(2026, 6, 16)) == [
        "2026-06-01T12:00:00Z",
        "2026-06-08T12:00:00Z",
        "2026-06-15T12:00:00Z",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@hourly", "2026-01-05T14:00:00Z"),
        ("@daily", "2026-01-06T00:00:00Z"),
        ("@weekly", "2026-01-11T00:00:00Z"),
        ("@monthly", "2026-02-01T00:00:00Z"),
        ("@yearly", "2027-01-01T00:00:00Z"),
    ],
)
def test_cron_trigger_accepts_shorthands(text, expected):
    fire = parse_trigger(text).next_fire(utc(2026, 1, 5, 13, 10))

    assert f"{fire:%Y-%m-%dT%H:%M:%SZ}" == expected


@pytest.mark.parametrize(
    ("text", "fixed"),
    [
        ("30 1 * * *", True),
        ("0,30 9 * * 1-5", True),
        ("0 0 1 * * 15", True),
        ("@daily", True),
        ("*/15 * * * *", False),
        ("0 * * * *", False),
        ("0 9-17 * * *", False),
        ("0-5 9 * * *", False),
        ("0 */2 * * *", False),
        ("@hourly", False),
    ],
)
def test_cron_trigger_classifies_fixed_and_paced(text, fixed):
    assert parse_trigger(text).fixed is fixed


def test_every_trigger_is_aligned_to_epoch():
    # given
    trigger = parse_trigger("every 1h30m", NY)

    # when
    fired = list(trigger.fires(utc(2026, 1, 5, 0, 10), utc(2026, 1, 5, 4)))

    # then: 2026-01-05 is day 20458 since the epoch, a multiple of 1.5 hours at midnight
    assert fired == [utc(2026, 1, 5, 1, 30), utc(2026, 1, 5, 3)]
    assert trigger.interval == timedelta(hours=1, minutes=30)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("every 300", 300), ("every 1d", 86400), ("every 2h", 7200), ("every 1d2h3m4s", 93784)],
)
def test_every_trigger_reads_units(text, seconds):
    assert parse_trigger(text).interval == timedelta(seconds=seconds)


def test_every_trigger_ignores_dst():
    fired = fires("every 3600", NY, utc(2026, 11, 1, 4, 30), utc(2026, 11, 1, 8))

    assert fired == [
        "2026-11-01T05:00:00Z",
        "2026-11-01T06:00:00Z",
        "2026-11-01T07:00:00Z",
        "2026-11-01T08:00:00Z",
    ]


def test_at_trigger_fires_at_each_time():
    assert fires("at 10:00,22:00", "Europe/Berlin", utc(2026, 1, 5), utc(2026, 1, 6, 12)) == [
        "2026-01-05T09:00:00Z",
        "2026-01-05T21:00:00Z",
        "2026-01-06T09:00:00Z",
    ]


def test_at_trigger_honours_day_names():
    # given: 2026-01-09 is a Friday
    trigger = parse_trigger("at Mon-Fri 09:30", "UTC")

    # when
    fired = list(trigger.fires(utc(2026, 1, 9, 10), utc(2026, 1, 13, 10)))

    # then
    assert fired == [utc(2026, 1, 12, 9, 30), utc(2026, 1, 13, 9, 30)]


@pytest.mark.parametrize(
    ("text", "days", "times"),
    [
        ("at Mon,Wed,Fri 08:00", {0, 2, 4}, (28800,)),
        ("at sat-sun 07:15 19:45", {5, 6}, (26100, 71100)),
        ("at Fri-Mon 00:00", {4, 5, 6, 0}, (0,)),
        ("at Mon-Tue,Sun 23:59:30", {0, 1, 6}, (86370,)),
        ("at 22:00, 10:00,10:00", set(range(7)), (36000, 79200)),
    ],
)
def test_at_trigger_reads_days_and_times(text, days, times):
    trigger = parse_trigger(text)

    assert trigger.days == days
    assert trigger.times == times


def test_once_trigger_fires_once():
    # given
    trigger = parse_trigger("once 2026-12-24T18:00:00Z", NY)

    # when / then
    assert trigger.next_fire(utc(2026, 1, 1)) == utc(2026, 12, 24, 18)
    assert trigger.next_fire(utc(2026, 12, 24, 18)) is None
    assert preview(trigger, utc(2026, 1, 1), 5) == [
        (utc(2026, 12, 24, 18), utc(2026, 12, 24, 18).astimezone(ZoneInfo(NY)))
    ]


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        ("once 2026-12-24T18:00:00", utc(2026, 12, 24, 23)),
        ("once 2026-12-24T18:00:00+01:00", utc(2026, 12, 24, 17)),
        ("once 2026-12-24", utc(2026, 12, 24, 5)),
        ("once 2026-11-01T01:30", utc(2026, 11, 1, 5, 30)),
        ("once 2026-03-08T02:30", utc(2026, 3, 8, 7)),
    ],
)
def test_once_trigger_reads_local_time_in_its_zone(text, instant):
    assert parse_trigger(text, NY).instant == instant


def test_trigger_next_fire_is_strictly_after_and_whole_seconds():
    trigger = parse_trigger("*/15 * * * *")

    assert trigger.next_fire(utc(2026, 1, 5, 13, 15)) == utc(2026, 1, 5, 13, 30)
    assert trigger.next_fire(utc(2026, 1, 5, 13, 14, 59, 999999)) == utc(2026, 1, 5, 13, 15)
    assert parse_trigger("every 10").next_fire(utc(2026, 1, 5, 13, 0, 0, 500)) == utc(
        2026, 1, 5, 13, 0, 10
    )


def test_trigger_next_fire_refuses_naive_after():
    with pytest.raises(InvalidInput) as caught:
        parse_trigger("*/15 * * * *").next_fire(datetime(2026, 1, 5))

    assert caught.value.field == "after"


def test_trigger_fires_refuses_naive_bounds_at_call():
    with pytest.raises(InvalidInput) as caught:
        parse_trigger("every 60").fires(utc(2026, 1, 5), datetime(2026, 1, 6))

    assert caught.value.field == "until"


def test_trigger_fires_includes_until_and_excludes_after():
    fired = fires("0 * * * *", "UTC", utc(2026, 1, 5, 10), utc(2026, 1, 5, 12))

    assert fired == ["2026-01-05T11:00:00Z", "2026-01-05T12:00:00Z"]


def test_cron_trigger_leap_day_waits_for_leap_year():
    assert parse_trigger("0 0 29 2 *").next_fire(utc(2024, 3, 1)) == utc(2028, 2, 29)


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "61 * * * *",
            "minute field '61' of '61 * * * *' is not valid (out of range): expected 0-59",
        ),
        (
            "* 24 * * *",
            "hour field '24' of '* 24 * * *' is not valid (out of range): expected 0-23",
        ),
        ("* * 32 * *", "day-of-month field '32'"),
        ("* * * 13 *", "month field '13'"),
        ("* * * * funday", "day-of-week field 'funday'"),
        ("* * * * * 60", "second field '60'"),
        ("*/0 * * * *", "minute field '*/0' of '*/0 * * * *' is not valid (step '0'"),
        ("1-x * * * *", "minute field '1-x'"),
        ("H * * * *", "minute field 'H'"),
        (
            "* * *",
            "a cron expression has 5 fields (minute hour day-of-month month day-of-week) or 6",
        ),
        ("* * *", "found 3"),
        ("* * * * * * *", "found 7"),
        ("evry 300", "'evry 300' is not a trigger"),
        ("0 0 30 2 *", "Day(s) [30] can never occur in month(s) [2]"),
        ("@reboot", "unknown cron shorthand '@reboot'"),
        ("", "found 0"),
        ("every 0", "'every 0' must be longer than 0 seconds"),
        ("every 0h0m", "must be longer than 0 seconds"),
        ("every 5x", "unknown unit 'x' in 'every 5x'"),
        ("every 30m1h", "'every 30m1h' is not an interval: expected every 300 (seconds)"),
        ("every -5", "'every -5' is not an interval"),
        ("every", "'every' needs an interval"),
        ("every 99999999999d", "too long"),
        ("at 25:00", "'25:00' in 'at 25:00' is not a time of day (00:00 to 23:59)"),
        ("at 10:60", "'10:60' in 'at 10:60' is not a time of day"),
        ("at 9:7", "'9:7' in 'at 9:7' is not a clock time: expected HH:MM"),
        ("at Fun 09:00", "unknown day name 'Fun' in 'at Fun 09:00': expected Mon, Tue"),
        ("at Mon-Fry 09:00", "unknown day name 'Fry'"),
        ("at 09:30 Mon", "'Mon' in 'at 09:30 Mon' is not a clock time"),
        ("at Mon-Fri", "'at Mon-Fri' needs clock times"),
        ("at", "'at' needs clock times"),
        ("once yesterday", "'yesterday' is not an ISO 8601 date and time: expected e.g. once"),
        ("once", "'' is not an ISO 8601 date and time"),
    ],
)
def test_parse_trigger_refuses_bad_syntax(text, problem):
    with pytest.raises(InvalidInput) as caught:
        parse_trigger(text)

    assert caught.value.field == "trigger"
    assert problem in caught.value.problem


@pytest.mark.parametrize(
    "zone", ["Mars/Base", "utc", "", "America", "/etc/localtime", "../etc/passwd"]
)
def test_parse_trigger_refuses_unknown_zone(zone):
    with pytest.raises(InvalidInput) as caught:
        parse_trigger("*/5 * * * *", zone)

    assert caught.value.field == "timezone"
    assert f"{zone!r} is not a known IANA time zone" in caught.value.problem


def test_parse_trigger_refuses_non_text():
    with pytest.raises(InvalidInput) as caught:
        parse_trigger(300)  # type: ignore[arg-type]

    assert caught.value.field == "trigger"


# --- DST: America/New_York, spring forward 2026-03-08 07:00Z, fall back 2026-11-01 06:00Z ------

FALL_DAY = (utc(2026, 11, 1, 4), utc(2026, 11, 2, 5))
SPRING_DAY = (utc(2026, 3, 8, 5), utc(2026, 3, 9, 4))


def test_cron_trigger_fixed_fires_once_on_repeated_time():
    assert fires("30 1 * * *", NY, *FALL_DAY) == ["2026-11-01T05:30:00Z"]


def test_cron_trigger_fixed_after_first_pass_waits_for_next_day():
    trigger = parse_trigger("30 1 * * *", NY)

    assert trigger.next_fire(utc(2026, 11, 1, 5, 30)) == utc(2026, 11, 2, 6, 30)
    assert trigger.next_fire(utc(2026, 11, 1, 6, 15)) == utc(2026, 11, 2, 6, 30)


def test_cron_trigger_fixed_in_gap_fires_at_transition():
    assert fires("30 2 * * *", NY, *SPRING_DAY) == ["2026-03-08T07:00:00Z"]
    assert fires("0 2 * * *", NY, *SPRING_DAY) == ["2026-03-08T07:00:00Z"]


def test_cron_trigger_fixed_times_in_one_gap_fire_once():
    assert fires("15,45 2 * * *", NY, *SPRING_DAY) == ["2026-03-08T07:00:00Z"]
    assert fires("at 02:15,02:45", NY, *SPRING_DAY) == ["2026-03-08T07:00:00Z"]
    assert fires("0,30 2,3 * * *", NY, *SPRING_DAY) == [
        "2026-03-08T07:00:00Z",
        "2026-03-08T07:30:00Z",
    ]


def test_cron_trigger_fixed_with_seconds_fires_first_pass_only():
    assert fires("30 1 * * * */20", NY, *FALL_DAY) == [
        "2026-11-01T05:30:00Z",
        "2026-11-01T05:30:20Z",
        "2026-11-01T05:30:40Z",
    ]


def test_cron_trigger_paced_with_seconds_fires_both_passes():
    fired = fires("*/30 1 * * * 0", NY, *FALL_DAY)

    assert fired == [
        "2026-11-01T05:00:00Z",
        "2026-11-01T05:30:00Z",
        "2026-11-01T06:00:00Z",
        "2026-11-01T06:30:00Z",
    ]


def test_cron_trigger_paced_keeps_pace_through_repeated_hour():
    assert fires("*/30 * * * *", NY, utc(2026, 11, 1, 4, 45), utc(2026, 11, 1, 7)) == [
        "2026-11-01T05:00:00Z",
        "2026-11-01T05:30:00Z",
        "2026-11-01T06:00:00Z",
        "2026-11-01T06:30:00Z",
        "2026-11-01T07:00:00Z",
    ]


def test_cron_trigger_paced_resumes_from_inside_repeated_hour():
    trigger = parse_trigger("*/30 * * * *", NY)

    assert trigger.next_fire(utc(2026, 11, 1, 5, 15)) == utc(2026, 11, 1, 5, 30)
    assert trigger.next_fire(utc(2026, 11, 1, 5, 45)) == utc(2026, 11, 1, 6)
    assert trigger.next_fire(utc(2026, 11, 1, 6, 10)) == utc(2026, 11, 1, 6, 30)


def test_cron_trigger_paced_skips_skipped_hour():
    assert fires("*/30 * * * *", NY, utc(2026, 3, 8, 6), utc(2026, 3, 8, 8)) == [
        "2026-03-08T06:30:00Z",
        "2026-03-08T07:00:00Z",
        "2026-03-08T07:30:00Z",
        "2026-03-08T08:00:00Z",
    ]
    assert fires("*/15 2 * * *", NY, *SPRING_DAY) == []


def test_cron_trigger_paced_with_fixed_hour_fires_both_passes():
    fired = fires("* 1 * * *", NY, *FALL_DAY)

    assert len(fired) == 120
    assert fired[0] == "2026-11-01T05:00:00Z"
    assert fired[59] == "2026-11-01T05:59:00Z"
    assert fired[60] == "2026-11-01T06:00:00Z"
    assert fired[-1] == "2026-11-01T06:59:00Z"


def test_cron_trigger_hourly_fires_every_real_hour_on_fall_back():
    assert fires("0 * * * *", NY, utc(2026, 11, 1, 4, 30), utc(2026, 11, 1, 8)) == [
        "2026-11-01T05:00:00Z",
        "2026-11-01T06:00:00Z",
        "2026-11-01T07:00:00Z",
        "2026-11-01T08:00:00Z",
    ]


def test_at_trigger_follows_fixed_rules():
    assert fires("at 01:30", NY, *FALL_DAY) == ["2026-11-01T05:30:00Z"]
    assert fires("at Sun 02:30", NY, *SPRING_DAY) == ["2026-03-08T07:00:00Z"]
    assert fires("at Mon 02:30", NY, *SPRING_DAY) == []


def test_cron_trigger_lord_howe_half_hour_gap_fires_at_transition():
    # Lord Howe moves from +10:30 to +11:00 at 02:00 local on 2026-10-04 (15:30Z the day before).
    assert fires(
        "15 2 * * *", "Australia/Lord_Howe", utc(2026, 10, 3, 12), utc(2026, 10, 4, 12)
    ) == ["2026-10-03T15:30:00Z"]
    assert fires(
        "*/15 2 * * *", "Australia/Lord_Howe", utc(2026, 10, 3, 12), utc(2026, 10, 4, 12)
    ) == [
        "2026-10-03T15:30:00Z",
        "2026-10-03T15:45:00Z",
    ]


# --- preview ----------------------------------------------------------------------------------


def test_preview_pairs_utc_with_local_time():
    # given
    trigger = parse_trigger("30 1 * * *", NY)

    # when
    pairs = preview(trigger, utc(2026, 10, 31, 12), 2)

    # then
    assert [format_preview_line(*pair) for pair in pairs] == [
        "2026-11-01T05:30:00Z  2026-11-01 01:30:00 EDT",
        "2026-11-02T06:30:00Z  2026-11-02 01:30:00 EST",
    ]


def test_preview_of_utc_trigger_and_zero_count():
    trigger = parse_trigger("every 60")

    assert [format_preview_line(*p) for p in preview(trigger, utc(2026, 1, 5), 1)] == [
        "2026-01-05T00:01:00Z  2026-01-05 00:01:00 UTC"
    ]
    assert preview(trigger, utc(2026, 1, 5), 0) == []


def test_preview_refuses_negative_count():
    with pytest.raises(InvalidInput) as caught:
        preview(parse_trigger("every 60"), utc(2026, 1, 5), -1)

    assert caught.value.field == "count"


# --- properties against a brute-force oracle ---------------------------------------------------

ZONES = [
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "Europe/Riga",
    "Pacific/Chatham",
    "UTC",
]


@cache
def transitions(zone_name: str) -> tuple[datetime, ...]:
    """The offset changes of 2026 to the quarter hour, found by scanning, not by db.triggers."""
    zone = ZoneInfo(zone_name)
    found = []
    instant = utc(2026, 1, 1)
    offset = instant.astimezone(zone).utcoffset()
    while instant.year == 2026:
        following = instant + MINUTE * 15
        if following.astimezone(zone).utcoffset() != offset:
            offset = following.astimezone(zone).utcoffset()
            found.append(following)
        instant = following
    return tuple(found) or (utc(2026, 6, 1, 12),)


@st.composite
def windows(draw):
    zone = draw(st.sampled_from(ZONES))
    change = draw(st.sampled_from(transitions(zone)))
    after = (
        change
        - draw(st.integers(0, 240)) * MINUTE
        - draw(st.integers(0, 59)) * timedelta(seconds=1)
    )
    until = change + draw(st.integers(0, 240)) * MINUTE
    return zone, after, until


def _local_hours(zone: str, after: datetime, until: datetime) -> list[int]:
    """The local hours a window passes through, so drawn expressions fire inside it."""
    tz = ZoneInfo(zone)
    steps = int((until - after) / MINUTE) // 30 + 2
    return sorted({(after + 30 * MINUTE * step).astimezone(tz).hour for step in range(steps)})


def _number_list(draw, values: list[int]) -> str:
    chosen = draw(st.lists(st.sampled_from(values), min_size=1, max_size=3, unique=True))
    return ",".join(str(v) for v in sorted(chosen))


@st.composite
def fixed_cases(draw):
    zone, after, until = draw(windows())
    minutes = _number_list(draw, [0, 1, 14, 15, 29, 30, 44, 45, 59])
    hours = _number_list(draw, _local_hours(zone, after, until) * 4 + list(range(24)))
    return f"{minutes} {hours} * * *", zone, after, until


@st.composite
def paced_cases(draw):
    zone, after, until = draw(windows())
    minute = draw(st.sampled_from(["*", "*/5", "*/15", "*/20", "10-40/10", "0", "45", "0,30"]))
    hours = _local_hours(zone, after, until)
    low = draw(st.sampled_from(hours))
    hour = draw(st.sampled_from(["*", "*/2", f"{low}-{min(low + 2, 23)}", str(low)]))
    if hour == str(low) and minute in ("0", "45", "0,30"):
        # Plain numbers in both fields would make a fixed expression.
        hour = "*"
    return f"{minute} {hour} * * *", zone, after, until


def _minute_instants(start: datetime, until: datetime):
    instant = start.replace(second=0, microsecond=0)
    while instant <= until:
        yield instant
        instant += MINUTE


def paced_oracle(expression: str, zone: str, after: datetime, until: datetime) -> list[datetime]:
    """Every minute instant in (after, until] whose local wall time matches."""
    tz = ZoneInfo(zone)
    return [
        instant
        for instant in _minute_instants(after, until)
        if instant > after
        and croniter.match(expression, instant.astimezone(tz).replace(tzinfo=None))
    ]


def fixed_oracle(expression: str, zone: str, after: datetime, until: datetime) -> list[datetime]:
    """One fire per matching local wall time: the first instant whose wall time reaches it.

    That is the first occurrence of a wall time that exists, and the end of the gap for one that
    does not. The scan starts well before ``after`` so earlier first occurrences are seen.
    """
    tz = ZoneInfo(zone)
    scan = [
        (instant, instant.astimezone(tz).replace(tzinfo=None))
        for instant in _minute_instants(after - timedelta(hours=6), until)
    ]
    wall = min(w for _, w in scan)
    last = max(w for _, w in scan)
    result = set()
    while wall <= last:
        if croniter.match(expression, wall):
            first = next((instant for instant, w in scan if w >= wall), None)
            if first is not None and after < first <= until:
                result.add(first)
        wall += MINUTE
    return sorted(result)


def _assert_strictly_increasing(fired: list[datetime]) -> None:
    assert all(a < b for a, b in zip(fired, fired[1:], strict=False))
    assert all(f.tzinfo is UTC and f.microsecond == 0 for f in fired)


@settings(max_examples=40, deadline=None)
@given(case=paced_cases())
def test_cron_trigger_paced_matches_brute_force_oracle(case):
    expression, zone, after, until = case
    trigger = parse_trigger(expression, zone)
    assert not trigger.fixed

    fired = list(trigger.fires(after, until))

    _assert_strictly_increasing(fired)
    assert fired == paced_oracle(expression, zone, after, until)


@settings(max_examples=40, deadline=None)
@given(case=fixed_cases())
def test_cron_trigger_fixed_matches_brute_force_oracle(case):
    expression, zone, after, until = case
    trigger = parse_trigger(expression, zone)
    assert trigger.fixed

    fired = list(trigger.fires(after, until))

    _assert_strictly_increasing(fired)
    assert fired == fixed_oracle(expression, zone, after, until)


@settings(max_examples=60, deadline=None)
@given(
    window=windows(),
    times=st.lists(
        st.tuples(st.integers(0, 23), st.sampled_from([0, 15, 30, 45])),
        min_size=1,
        max_size=4,
        unique=True,
    ),
)
def test_at_trigger_equals_union_of_fixed_crons(window, times):
    zone, after, until = window
    at = parse_trigger("at " + ",".join(f"{h:02d}:{m:02d}" for h, m in times), zone)
    crons = [parse_trigger(f"{m} {h} * * *", zone) for h, m in times]

    fired = list(at.fires(after, until))

    _assert_strictly_increasing(fired)
    assert fired == sorted({f for cron in crons for f in cron.fires(after, until)})


@settings(max_examples=60, deadline=None)
@given(
    window=windows(),
    expression=st.sampled_from(["*/15 * * * *", "0 * * * *", "30 1,2,3 * * *", "45 2 * * *"]),
    offset=st.integers(0, 480),
)
def test_cron_trigger_next_fire_from_any_instant_is_next_of_fires(window, expression, offset):
    # given: a trigger's fires over a window, and an arbitrary instant inside it
    zone, after, until = window
    trigger = parse_trigger(expression, zone)
    fired = list(trigger.fires(after, until + timedelta(hours=6)))
    instant = after + offset * MINUTE / 2

    # when
    following = trigger.next_fire(instant)

    # then
    expected = next((f for f in fired if f > instant), None)
    if expected is not None:
        assert following == expected
