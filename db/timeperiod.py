"""UTC timeperiods of the four calendar grids (SPEC section 2).

A :class:`Timeperiod` is a value: a qualifier and the aware UTC instant at which the period
starts. Its SPEC string (``2026010513`` hourly, ``2026010500`` daily, ``2026010000`` monthly,
``2026000000`` yearly) is only its stored and displayed form; the granularity is never guessed from
trailing zeros, so parsing always names the qualifier.

The scheduler walks years of hourly periods, so parsing slices digits instead of running
``strptime``, and the internal arithmetic builds values without re-validating them.
"""

from __future__ import annotations

from calendar import monthrange
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import NoReturn

from db.clock import require_aware
from db.errors import InvalidInput
from db.states import Qualifier

#: SPEC section 2 string format of each qualifier, as shown in error messages.
FORMATS = {
    Qualifier.HOURLY: "%Y%m%d%H",
    Qualifier.DAILY: "%Y%m%d00",
    Qualifier.MONTHLY: "%Y%m0000",
    Qualifier.YEARLY: "%Y000000",
}
#: One valid string per qualifier (13:00 on 5 Jan 2026), for error messages.
EXAMPLES = {
    Qualifier.HOURLY: "2026010513",
    Qualifier.DAILY: "2026010500",
    Qualifier.MONTHLY: "2026010000",
    Qualifier.YEARLY: "2026000000",
}

_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)
#: Qualifiers from finest to coarsest, indexed by rank.
_BY_RANK = sorted(Qualifier, key=lambda q: q.rank)


@dataclass(frozen=True, kw_only=True, slots=True, repr=False)
class Timeperiod:
    """One period of a calendar grid: ``[start, end)`` in UTC.

    Ordered by ``start``, then by qualifier rank (finer first), so a sorted list reads in time
    order. ``start`` must be the first instant of a period of ``qualifier``; use
    :meth:`containing` to find the period around an arbitrary instant.
    """

    qualifier: Qualifier
    start: datetime

    def __post_init__(self) -> None:
        qualifier = _qualifier(self.qualifier)
        start = require_aware(self.start, "timeperiod")
        if _containing(qualifier, start).start != start:
            raise InvalidInput(
                "timeperiod", f"{start.isoformat()} is not the start of a {qualifier} period"
            )
        object.__setattr__(self, "qualifier", qualifier)
        object.__setattr__(self, "start", start)

    @classmethod
    def parse(cls, qualifier: Qualifier | str, text: str) -> Timeperiod:
        """Read a SPEC section 2 string, strictly.

        Args:
            qualifier: The grid the string belongs to; it is never guessed from the digits.
            text: ``%Y%m%d%H`` (hourly), ``%Y%m%d00`` (daily), ``%Y%m0000`` (monthly) or
                ``%Y000000`` (yearly).

        Returns:
            The timeperiod.

        Raises:
            InvalidInput: ``timeperiod`` when the string does not have the qualifier's format
                or names no real date (``2023022900``); ``qualifier`` for an unknown qualifier.
        """
        qualifier = _qualifier(qualifier)
        if not isinstance(text, str):
            _refuse(qualifier, text, f"it must be text, not {type(text).__name__}")
        return _parse(qualifier, text)

    @classmethod
    def containing(cls, qualifier: Qualifier | str, instant: datetime) -> Timeperiod:
        """The period of ``qualifier`` that contains ``instant``.

        Args:
            qualifier: The grid.
            instant: An aware datetime (any zone; naive ones are refused).

        Returns:
            The period whose ``[start, end)`` holds ``instant``.

        Raises:
            InvalidInput: ``instant`` when it is naive; ``qualifier`` when unknown.
        """
        return _containing(_qualifier(qualifier), require_aware(instant))

    @classmethod
    def between(
        cls, qualifier: Qualifier | str, first: Timeperiod | str, until: datetime
    ) -> Iterator[Timeperiod]:
        """Every period of ``qualifier`` from ``first`` on whose start is before ``until``.

        Args:
            qualifier: The grid.
            first: The first period, as a value or its SPEC string.
            until: Exclusive bound on the periods' starts (aware).

        Returns:
            An iterator in time order; empty when ``first`` starts at or after ``until``.

        Raises:
            InvalidInput: ``timeperiod`` when ``first`` is malformed or of another qualifier;
                ``until`` when it is naive. Raised at the call, not on first iteration.
        """
        qualifier = _qualifier(qualifier)
        if isinstance(first, str):
            first = _parse(qualifier, first)
        elif first.qualifier is not qualifier:
            raise InvalidInput(
                "timeperiod", f"{first} is a {first.qualifier} timeperiod, expected {qualifier}"
            )
        return _walk(first, require_aware(until, "until"))

    @property
    def end(self) -> datetime:
        """The exclusive end: the start of the next period."""
        return _shift(self.qualifier, self.start, 1)

    def next(self, n: int = 1) -> Timeperiod:
        """The period ``n`` steps later (calendar-aware; ``n`` may be negative).

        Raises:
            InvalidInput: ``timeperiod`` when the result falls outside years 1-9999.
        """
        return _make(self.qualifier, _shift(self.qualifier, self.start, n))

    def previous(self, n: int = 1) -> Timeperiod:
        """The period ``n`` steps earlier.

        Raises:
            InvalidInput: ``timeperiod`` when the result falls outside years 1-9999.
        """
        return self.next(-n)

    def cast(self, qualifier: Qualifier | str) -> Timeperiod:
        """The same moment on another grid.

        Args:
            qualifier: The target grid.

        Returns:
            For a coarser qualifier, the period containing this one; for a finer one, the first
            finer period inside this one; for the same qualifier, this period.
        """
        qualifier = _qualifier(qualifier)
        if qualifier.rank > self.qualifier.rank:
            return _containing(qualifier, self.start)
        if qualifier is self.qualifier:
            return self
        return _make(qualifier, self.start)

    def parent(self) -> Timeperiod | None:
        """The period of the next coarser qualifier containing this one; None for yearly."""
        if self.qualifier is Qualifier.YEARLY:
            return None
        return _containing(_BY_RANK[self.qualifier.rank + 1], self.start)

    def covers(self, other: Timeperiod) -> bool:
        """Whether ``other`` (finer or equal) lies inside this period; a period covers itself."""
        if other.qualifier.rank > self.qualifier.rank:
            return False
        # Grids nest, so a finer period that starts inside this one also ends inside it.
        return self.start <= other.start < self.end

    def covered(self, qualifier: Qualifier | str) -> list[Timeperiod]:
        """The periods of a finer (or the same) qualifier inside this one, in time order.

        Args:
            qualifier: The finer grid, e.g. hourly for a daily period (24 of them).

        Returns:
            The covered periods: 24 hours in a day, 28 to 31 days in a month, 12 months a year.

        Raises:
            InvalidInput: ``qualifier`` when it is coarser than this period's.
        """
        qualifier = _qualifier(qualifier)
        if qualifier.rank > self.qualifier.rank:
            raise InvalidInput(
                "qualifier", f"a {self.qualifier} timeperiod covers no {qualifier} timeperiods"
            )
        return list(_walk(_make(qualifier, self.start), self.end))

    def is_closed(self, now: datetime) -> bool:
        """Whether the period is over at ``now`` (its end is at or before ``now``).

        Raises:
            InvalidInput: ``now`` when it is naive.
        """
        return self.end <= require_aware(now, "now")

    def __str__(self) -> str:
        s = self.start
        q = self.qualifier
        if q is Qualifier.HOURLY:
            return f"{s.year:04d}{s.month:02d}{s.day:02d}{s.hour:02d}"
        if q is Qualifier.DAILY:
            return f"{s.year:04d}{s.month:02d}{s.day:02d}00"
        if q is Qualifier.MONTHLY:
            return f"{s.year:04d}{s.month:02d}0000"
        return f"{s.year:04d}000000"

    def __repr__(self) -> str:
        return f"Timeperiod({self.qualifier.value} {self})"

    def _key(self) -> tuple[datetime, int]:
        return (self.start, self.qualifier.rank)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Timeperiod):
            return NotImplemented
        return self._key() < other._key()

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Timeperiod):
            return NotImplemented
        return self._key() <= other._key()

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Timeperiod):
            return NotImplemented
        return self._key() > other._key()

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Timeperiod):
            return NotImplemented
        return self._key() >= other._key()


def _make(qualifier: Qualifier, start: datetime) -> Timeperiod:
    """Build a value from a known-good qualifier and aligned UTC start, skipping validation."""
    period = object.__new__(Timeperiod)
    object.__setattr__(period, "qualifier", qualifier)
    object.__setattr__(period, "start", start)
    return period


def _qualifier(value: Qualifier | str) -> Qualifier:
    if isinstance(value, Qualifier):
        return value
    try:
        return Qualifier(value)
    except ValueError:
        names = ", ".join(q.value for q in _BY_RANK)
        raise InvalidInput("qualifier", f"{value!r} is not one of {names}") from None


def _containing(qualifier: Qualifier, instant: datetime) -> Timeperiod:
    if qualifier is Qualifier.HOURLY:
        start = instant.replace(minute=0, second=0, microsecond=0)
    elif qualifier is Qualifier.DAILY:
        start = instant.replace(hour=0, minute=0, second=0, microsecond=0)
    elif qualifier is Qualifier.MONTHLY:
        start = instant.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    else:
        start = instant.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    return _make(qualifier, start)


def _shift(qualifier: Qualifier, start: datetime, n: int) -> datetime:
    """The start ``n`` periods after ``start``."""
    try:
        if qualifier is Qualifier.HOURLY:
            return start + n * _HOUR
        if qualifier is Qualifier.DAILY:
            return start + n * _DAY
        if qualifier is Qualifier.MONTHLY:
            year, month0 = divmod(start.year * 12 + start.month - 1 + n, 12)
            return start.replace(year=year, month=month0 + 1)
        return start.replace(year=start.year + n)
    except (OverflowError, ValueError):
        raise InvalidInput(
            "timeperiod", f"{n:+d} {qualifier} periods from {start:%Y-%m-%d} is out of range"
        ) from None


def _walk(first: Timeperiod, until: datetime) -> Iterator[Timeperiod]:
    qualifier = first.qualifier
    start = first.start
    if qualifier is Qualifier.HOURLY or qualifier is Qualifier.DAILY:
        step = _HOUR if qualifier is Qualifier.HOURLY else _DAY
        while start < until:
            yield _make(qualifier, start)
            start += step
        return
    period = first
    while period.start < until:
        yield period
        period = period.next()


@lru_cache(maxsize=8192)
def _parse(qualifier: Qualifier, text: str) -> Timeperiod:
    # Cached: the store hands the same strings back again and again; values are immutable.
    if len(text) != 10 or not (text.isascii() and text.isdigit()):
        _refuse(qualifier, text, "it must be 10 digits")
    year, month, day, hour = int(text[:4]), int(text[4:6]), int(text[6:8]), int(text[8:])
    if year < 1:
        _refuse(qualifier, text, "year 0000 does not exist")
    if qualifier is Qualifier.YEARLY:
        if month or day or hour:
            _refuse(qualifier, text, "month, day and hour digits must be 00")
        month = day = 1
    elif not 1 <= month <= 12:
        _refuse(qualifier, text, f"month {text[4:6]} does not exist")
    elif qualifier is Qualifier.MONTHLY:
        if day or hour:
            _refuse(qualifier, text, "day and hour digits must be 00")
        day = 1
    else:
        if not 1 <= day <= monthrange(year, month)[1]:
            _refuse(qualifier, text, f"day {text[6:8]} does not exist in {text[:4]}-{text[4:6]}")
        if qualifier is Qualifier.DAILY and hour:
            _refuse(qualifier, text, "hour digits must be 00")
        if hour > 23:
            _refuse(qualifier, text, f"hour {text[8:]} does not exist")
    return _make(qualifier, datetime(year, month, day, hour, tzinfo=UTC))


def _refuse(qualifier: Qualifier, text: object, reason: str) -> NoReturn:
    raise InvalidInput(
        "timeperiod",
        f"{text!r} is not a {qualifier} timeperiod: expected {FORMATS[qualifier]} "
        f"such as {EXAMPLES[qualifier]} ({reason})",
    )


def instant_stamp(instant: datetime) -> str:
    """An instant in a unit of work's window form (``20261101053000``, UTC to the second): the
    window of a freerun fire, an ad-hoc task or a triggered run, whose bounds are instants
    rather than timeperiods. The one formatter of that form."""
    return require_aware(instant, "instant").astimezone(UTC).strftime("%Y%m%d%H%M%S")
