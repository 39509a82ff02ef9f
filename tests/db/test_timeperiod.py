"""Timeperiod arithmetic: SPEC section 2 strings, calendar edges, casting and covering."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from db.errors import InvalidInput
from db.states import Qualifier
from db.timeperiod import Timeperiod

H, D, M, Y = Qualifier.HOURLY, Qualifier.DAILY, Qualifier.MONTHLY, Qualifier.YEARLY


def tp(qualifier: Qualifier, text: str) -> Timeperiod:
    return Timeperiod.parse(qualifier, text)


@pytest.mark.parametrize(
    ("qualifier", "text", "start"),
    [
        (H, "2026010513", datetime(2026, 1, 5, 13, tzinfo=UTC)),
        (D, "2026010500", datetime(2026, 1, 5, tzinfo=UTC)),
        (M, "2026010000", datetime(2026, 1, 1, tzinfo=UTC)),
        (Y, "2026000000", datetime(2026, 1, 1, tzinfo=UTC)),
        (D, "2024022900", datetime(2024, 2, 29, tzinfo=UTC)),
        (H, "2026123123", datetime(2026, 12, 31, 23, tzinfo=UTC)),
    ],
)
def test_timeperiod_parse_reads_spec_string(qualifier, text, start):
    period = Timeperiod.parse(qualifier, text)

    assert period == Timeperiod(qualifier=qualifier, start=start)
    assert str(period) == text


def test_timeperiod_parse_accepts_qualifier_name():
    assert Timeperiod.parse("daily", "2026010500").qualifier is D


@pytest.mark.parametrize(
    ("qualifier", "text", "problem"),
    [
        (D, "2026010513", "'2026010513' is not a daily timeperiod: expected %Y%m%d00"),
        (D, "2026010513", "hour digits must be 00"),
        (M, "2026010500", "expected %Y%m0000 such as 2026010000 (day and hour digits must be 00)"),
        (Y, "2026010000", "expected %Y000000 such as 2026000000"),
        (D, "2023022900", "day 29 does not exist in 2023-02"),
        (H, "2026043100", "day 31 does not exist in 2026-04"),
        (M, "2026130000", "month 13 does not exist"),
        (H, "2026010524", "hour 24 does not exist"),
        (H, "202601051", "it must be 10 digits"),
        (H, "20260105130", "it must be 10 digits"),
        (H, "2026-01-05", "it must be 10 digits"),
        (H, "２０２６０１０５１３", "it must be 10 digits"),
        (H, "", "expected %Y%m%d%H such as 2026010513"),
        (Y, "0000000000", "year 0000 does not exist"),
    ],
)
def test_timeperiod_parse_refuses_malformed(qualifier, text, problem):
    with pytest.raises(InvalidInput) as caught:
        Timeperiod.parse(qualifier, text)

    assert caught.value.field == "timeperiod"
    assert problem in caught.value.problem


def test_timeperiod_parse_refuses_unknown_qualifier():
    with pytest.raises(InvalidInput) as caught:
        Timeperiod.parse("weekly", "2026010500")

    assert caught.value.field == "qualifier"
    assert "'weekly' is not one of hourly, daily, monthly, yearly" in caught.value.problem


@pytest.mark.parametrize(
    ("qualifier", "start"),
    [
        (H, datetime(2026, 1, 5, 13, 30, tzinfo=UTC)),
        (D, datetime(2026, 1, 5, 13, tzinfo=UTC)),
        (M, datetime(2026, 1, 5, tzinfo=UTC)),
        (Y, datetime(2026, 2, 1, tzinfo=UTC)),
    ],
)
def test_timeperiod_refuses_unaligned_start(qualifier, start):
    with pytest.raises(InvalidInput) as caught:
        Timeperiod(qualifier=qualifier, start=start)

    assert caught.value.field == "timeperiod"
    assert f"is not the start of a {qualifier} period" in caught.value.problem


def test_timeperiod_refuses_naive_start():
    with pytest.raises(InvalidInput, match="naive"):
        Timeperiod(qualifier=H, start=datetime(2026, 1, 5, 13))


def test_timeperiod_converts_aware_start_to_utc():
    start = datetime(2026, 1, 5, 15, tzinfo=timezone(timedelta(hours=2)))

    period = Timeperiod(qualifier=H, start=start)

    assert period.start.tzinfo is UTC
    assert str(period) == "2026010513"


def test_timeperiod_is_frozen():
    period = tp(H, "2026010513")

    with pytest.raises(AttributeError):
        period.start = datetime(2026, 1, 1, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("qualifier", "instant", "expected"),
    [
        (H, datetime(2026, 1, 5, 13, 59, 59, 999999, tzinfo=UTC), "2026010513"),
        (D, datetime(2026, 1, 5, 23, 59, tzinfo=UTC), "2026010500"),
        (M, datetime(2024, 2, 29, 12, tzinfo=UTC), "2024020000"),
        (Y, datetime(2026, 12, 31, 23, tzinfo=UTC), "2026000000"),
        # 00:30 in Berlin on 1 Jan is still 31 Dec in UTC.
        (D, datetime(2026, 1, 1, 0, 30, tzinfo=ZoneInfo("Europe/Berlin")), "2025123100"),
    ],
)
def test_timeperiod_containing_finds_period_in_utc(qualifier, instant, expected):
    assert str(Timeperiod.containing(qualifier, instant)) == expected


def test_timeperiod_containing_refuses_naive_instant():
    with pytest.raises(InvalidInput) as caught:
        Timeperiod.containing(H, datetime(2026, 1, 5, 13))

    assert caught.value.field == "instant"


@pytest.mark.parametrize(
    ("qualifier", "text", "following"),
    [
        (H, "2026010523", "2026010600"),
        (H, "2026123123", "2027010100"),
        (D, "2024022800", "2024022900"),
        (D, "2024022900", "2024030100"),
        (D, "2023022800", "2023030100"),
        (D, "2026123100", "2027010100"),
        (M, "2026120000", "2027010000"),
        (M, "2024020000", "2024030000"),
        (Y, "2026000000", "2027000000"),
    ],
)
def test_timeperiod_next_and_previous_cross_calendar_edges(qualifier, text, following):
    period = tp(qualifier, text)

    assert str(period.next()) == following
    assert str(tp(qualifier, following).previous()) == text
    assert period.end == tp(qualifier, following).start


@pytest.mark.parametrize(
    ("qualifier", "text", "n", "expected"),
    [
        (H, "2026010500", 48, "2026010700"),
        (H, "2026010500", -1, "2026010423"),
        (D, "2024010100", 366, "2025010100"),
        (M, "2026010000", 13, "2027020000"),
        (M, "2026010000", -1, "2025120000"),
        (M, "2026030000", -26, "2024010000"),
        (Y, "2024000000", -24, "2000000000"),
    ],
)
def test_timeperiod_next_moves_n_periods(qualifier, text, n, expected):
    assert str(tp(qualifier, text).next(n)) == expected
    assert str(tp(qualifier, expected).previous(n)) == text


def test_timeperiod_next_refuses_out_of_range():
    with pytest.raises(InvalidInput) as caught:
        tp(Y, "9999000000").next()

    assert caught.value.field == "timeperiod"
    assert "out of range" in caught.value.problem


@pytest.mark.parametrize(
    ("text", "days"),
    [("2024020000", 29), ("2023020000", 28), ("2026010000", 31), ("2026040000", 30)],
)
def test_timeperiod_end_of_month_follows_its_length(text, days):
    period = tp(M, text)

    assert period.end - period.start == timedelta(days=days)


@pytest.mark.parametrize(
    ("qualifier", "text", "target", "expected"),
    [
        (H, "2026010513", D, "2026010500"),
        (H, "2026010513", M, "2026010000"),
        (H, "2026010513", Y, "2026000000"),
        (D, "2024022900", M, "2024020000"),
        (Y, "2026000000", M, "2026010000"),
        (Y, "2026000000", H, "2026010100"),
        (M, "2024020000", D, "2024020100"),
        (D, "2026010500", H, "2026010500"),
        (D, "2026010500", D, "2026010500"),
    ],
)
def test_timeperiod_cast_goes_coarser_and_finer(qualifier, text, target, expected):
    cast = tp(qualifier, text).cast(target)

    assert cast.qualifier is target
    assert str(cast) == expected


def test_timeperiod_parent_is_next_coarser_period():
    assert tp(H, "2026010513").parent() == tp(D, "2026010500")
    assert tp(D, "2026010500").parent() == tp(M, "2026010000")
    assert tp(M, "2026010000").parent() == tp(Y, "2026000000")
    assert tp(Y, "2026000000").parent() is None


def test_timeperiod_covers_finer_periods_inside_only():
    day = tp(D, "2026010500")

    assert day.covers(tp(H, "2026010500"))
    assert day.covers(tp(H, "2026010523"))
    assert day.covers(day)
    assert not day.covers(tp(H, "2026010600"))
    assert not day.covers(tp(H, "2026010423"))
    assert not day.covers(tp(D, "2026010600"))
    assert not day.covers(tp(M, "2026010000"))
    assert tp(Y, "2024000000").covers(tp(D, "2024123100"))
    assert not tp(H, "2026010500").covers(day)


@pytest.mark.parametrize(
    ("qualifier", "text", "finer", "count"),
    [
        (D, "2026010500", H, 24),
        (M, "2024020000", D, 29),
        (M, "2023020000", D, 28),
        (M, "2026010000", D, 31),
        (M, "2026040000", H, 720),
        (Y, "2026000000", M, 12),
        (Y, "2024000000", D, 366),
        (Y, "2024000000", H, 8784),
        (H, "2026010513", H, 1),
    ],
)
def test_timeperiod_covered_lists_finer_periods(qualifier, text, finer, count):
    period = tp(qualifier, text)

    covered = period.covered(finer)

    assert len(covered) == count
    assert covered[0] == period.cast(finer)
    assert covered[-1].end == period.end
    assert all(period.covers(inner) for inner in covered)
    assert covered == sorted(set(covered))


def test_timeperiod_covered_refuses_coarser_qualifier():
    with pytest.raises(InvalidInput) as caught:
        tp(D, "2026010500").covered(M)

    assert caught.value.field == "qualifier"
    assert "a daily timeperiod covers no monthly timeperiods" in caught.value.problem


def test_timeperiod_orders_by_start_then_rank():
    # given
    periods = [
        tp(D, "2026010600"),
        tp(Y, "2026000000"),
        tp(H, "2026010100"),
        tp(M, "2026010000"),
        tp(H, "2026010523"),
    ]

    # when
    ordered = sorted(periods)

    # then
    assert [repr(p) for p in ordered] == [
        "Timeperiod(hourly 2026010100)",
        "Timeperiod(monthly 2026010000)",
        "Timeperiod(yearly 2026000000)",
        "Timeperiod(hourly 2026010523)",
        "Timeperiod(daily 2026010600)",
    ]
    assert tp(H, "2026010513") < tp(H, "2026010514") <= tp(H, "2026010514")
    assert tp(D, "2026010600") > tp(H, "2026010523") >= tp(H, "2026010523")


def test_timeperiod_is_hashable_and_equal_by_value():
    assert {
        tp(H, "2026010513"),
        Timeperiod.containing(H, datetime(2026, 1, 5, 13, 5, tzinfo=UTC)),
    } == {tp(H, "2026010513")}
    assert tp(D, "2026010500") != tp(H, "2026010500")


def test_timeperiod_between_yields_periods_starting_before_until():
    # given
    until = datetime(2026, 1, 1, 3, 30, tzinfo=UTC)

    # when
    periods = list(Timeperiod.between(H, "2025123122", until))

    # then
    assert [str(p) for p in periods] == [
        "2025123122",
        "2025123123",
        "2026010100",
        "2026010101",
        "2026010102",
        "2026010103",
    ]


def test_timeperiod_between_walks_months_and_is_empty_past_until():
    months = Timeperiod.between(M, tp(M, "2023110000"), datetime(2024, 3, 1, tzinfo=UTC))

    assert [str(p) for p in months] == ["2023110000", "2023120000", "2024010000", "2024020000"]
    assert list(Timeperiod.between(D, "2026010500", datetime(2026, 1, 5, tzinfo=UTC))) == []


def test_timeperiod_between_refuses_mismatched_first_at_call():
    with pytest.raises(InvalidInput) as caught:
        Timeperiod.between(H, tp(D, "2026010500"), datetime(2026, 2, 1, tzinfo=UTC))

    assert caught.value.field == "timeperiod"
    assert "2026010500 is a daily timeperiod, expected hourly" in caught.value.problem
    with pytest.raises(InvalidInput):
        Timeperiod.between(H, "2026010500", datetime(2026, 2, 1))


def test_timeperiod_is_closed_at_its_end():
    period = tp(H, "2026010513")

    assert not period.is_closed(datetime(2026, 1, 5, 13, 59, 59, tzinfo=UTC))
    assert period.is_closed(datetime(2026, 1, 5, 14, tzinfo=UTC))
    assert period.is_closed(datetime(2026, 1, 5, 15, 30, tzinfo=ZoneInfo("Europe/Berlin")))


_instants = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2999, 12, 31), timezones=st.just(UTC)
)


@given(qualifier=st.sampled_from(list(Qualifier)), instant=_instants)
def test_timeperiod_string_round_trips(qualifier, instant):
    period = Timeperiod.containing(qualifier, instant)

    assert Timeperiod.parse(qualifier, str(period)) == period
    assert period.start <= instant < period.end


@given(
    qualifier=st.sampled_from(list(Qualifier)),
    instant=_instants,
    n=st.integers(min_value=-500, max_value=500),
)
def test_timeperiod_next_is_inverse_of_previous_and_ordered(qualifier, instant, n):
    period = Timeperiod.containing(qualifier, instant)

    moved = period.next(n)

    assert moved.previous(n) == period
    assert (moved > period) == (n > 0)
    assert str(moved) > str(period) if n > 0 else str(moved) <= str(period)
