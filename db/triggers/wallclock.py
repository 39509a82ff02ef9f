"""Triggers that fire at wall-clock times in a zone: cron and ``at``, and their DST rules.

Cron and ``at`` follow Vixie cron across daylight-saving changes. A *fixed* expression (minute and
hour fields plain numbers or lists of numbers, and every ``at``) fires once for a wall-clock time
that happens twice, at its first occurrence, and for a wall-clock time that does not exist fires
at the end of the gap, the transition instant itself. Any other expression keeps its pace in real
time: it fires at every instant whose local wall time matches, so through both passes of a
repeated hour and never in a skipped one.

croniter gets this wrong on aware datetimes, so it only enumerates *naive* wall times here, and
each wall time is mapped to UTC with the zone's two offsets (``fold=0`` and ``fold=1``). Because
wall time runs backwards at a backward offset change, the walk starts early enough to see the
replayed wall times and stops only once no later wall time can map to an earlier instant. Both
rules assume that a zone's offset changes at most once a day and never steps back by a day, which
holds for every zone in tzdata since 1970 (changes are a week or more apart, the largest step back
is 7 hours).
"""

from __future__ import annotations

import re
import threading
from abc import abstractmethod
from bisect import bisect_right
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from croniter import CroniterError, croniter

from db.clock import require_aware
from db.triggers.base import Trigger

_SECOND = timedelta(seconds=1)
_HOUR = timedelta(hours=1)
#: Window in which a zone's offset changes at most once (see the module docstring).
_DAY = timedelta(days=1)
_NUMBER_LIST = re.compile(r"\d+(?:,\d+)*")


class WallClockTrigger(Trigger):
    """A trigger whose fires are wall-clock times in its zone (cron and ``at``).

    Subclasses enumerate matching naive wall times; this class maps them to UTC instants with the
    DST rules of the module docstring.
    """

    __slots__ = ("_fixed",)

    def __init__(self, text: str, timezone: str, zone: ZoneInfo, *, fixed: bool) -> None:
        super().__init__(text, timezone, zone)
        self._fixed = fixed

    @property
    def fixed(self) -> bool:
        """True for a fixed time of day (once per wall time), False for a paced expression."""
        return self._fixed

    @abstractmethod
    def _next_wall(self, wall: datetime) -> datetime | None:
        """The first matching naive wall time strictly after ``wall``; None if there is none."""

    def next_fire(self, after: datetime) -> datetime | None:
        # Fires are whole seconds, so "after 12:00:00.5" is "after 12:00:00".
        after = require_aware(after, "after").replace(microsecond=0)
        zone = self._zone
        try:
            wall = after.astimezone(zone).replace(tzinfo=None)
            change = _offset_change(zone, after, after + _DAY)
        except OverflowError:
            return None
        if change is not None and change[1] > change[2]:
            # A backward change replays wall times from its instant's new wall time on; those
            # below ``wall`` map to instants after ``after`` too.
            replay = (change[0] + change[2]).replace(tzinfo=None)
            wall = min(wall, replay - _SECOND)
        best: datetime | None = None
        limit: datetime | None = None
        while True:
            try:
                wall = self._next_wall(wall)
            except (OverflowError, ValueError):
                wall = None
            if wall is None or (limit is not None and wall >= limit):
                return best
            candidate = self._first_instant_after(wall, after)
            if candidate is not None and (best is None or candidate < best):
                best = candidate
                limit = self._wall_limit(best)
            if limit is not None and wall >= limit:
                return best

    def _first_instant_after(self, wall: datetime, after: datetime) -> datetime | None:
        """The earliest fire instant of ``wall`` that is after ``after``, per the DST rules."""
        zone = self._zone
        first = zone.utcoffset(wall)
        second = zone.utcoffset(wall.replace(fold=1))
        if first == second:
            instant = (wall - first).replace(tzinfo=UTC)
            return instant if instant > after else None
        if first > second:
            # Repeated wall time: fold=0 is the first pass, fold=1 the second.
            instant = (wall - first).replace(tzinfo=UTC)
            if instant > after:
                return instant
            if self._fixed:
                return None
            instant = (wall - second).replace(tzinfo=UTC)
            return instant if instant > after else None
        if not self._fixed:
            return None
        # Skipped wall time: fire at the transition, which lies between the two readings.
        lower = (wall - second).replace(tzinfo=UTC)
        upper = (wall - first).replace(tzinfo=UTC)
        instant = _change_instant(zone, lower, upper, first)
        return instant if instant > after else None

    def _wall_limit(self, best: datetime) -> datetime:
        """A wall time at or beyond which no wall time maps to an instant before ``best``.

        Without a backward change just before ``best``, wall time only grows up to it, so
        ``best``'s own wall time is the limit; otherwise the top of the repeated stretch is.
        """
        zone = self._zone
        limit = best.astimezone(zone).replace(tzinfo=None)
        change = _offset_change(zone, best - _DAY, best)
        if change is not None and change[1] > change[2]:
            limit = max(limit, (change[0] + change[1]).replace(tzinfo=None))
        return limit


class CronTrigger(WallClockTrigger):
    """A cron expression, 5 fields or 6 (seconds last), evaluated in the trigger's zone."""

    __slots__ = ("_cron", "_lock", "_expression")

    def __init__(self, text: str, timezone: str, zone: ZoneInfo, expression: str) -> None:
        fields = expression.split()
        fixed = bool(_NUMBER_LIST.fullmatch(fields[0]) and _NUMBER_LIST.fullmatch(fields[1]))
        super().__init__(text, timezone, zone, fixed=fixed)
        self._expression = expression
        self._cron, self._lock = _compiled_cron(expression)

    @property
    def expression(self) -> str:
        """The cron fields (a ``@daily``-style shorthand expanded)."""
        return self._expression

    def _next_wall(self, wall: datetime) -> datetime | None:
        # croniter objects keep a cursor, so the one shared per expression is used under a lock.
        with self._lock:
            try:
                return self._cron.get_next(datetime, start_time=wall)
            except CroniterError:
                return None


class AtTrigger(WallClockTrigger):
    """``at``: fixed clock times in the trigger's zone, optionally on some weekdays only."""

    __slots__ = ("_days", "_times")

    def __init__(
        self,
        text: str,
        timezone: str,
        zone: ZoneInfo,
        days: frozenset[int],
        times: tuple[int, ...],
    ) -> None:
        super().__init__(text, timezone, zone, fixed=True)
        self._days = days
        self._times = times

    @property
    def days(self) -> frozenset[int]:
        """Weekdays on which it fires, 0 for Monday to 6 for Sunday."""
        return self._days

    @property
    def times(self) -> tuple[int, ...]:
        """Clock times as seconds since midnight, sorted."""
        return self._times

    def _next_wall(self, wall: datetime) -> datetime | None:
        midnight = wall.replace(hour=0, minute=0, second=0, microsecond=0)
        elapsed = wall.hour * 3600 + wall.minute * 60 + wall.second
        index = bisect_right(self._times, elapsed)
        for offset in range(8):
            day = midnight + offset * _DAY
            if day.weekday() in self._days:
                if offset:
                    return day + timedelta(seconds=self._times[0])
                if index < len(self._times):
                    return day + timedelta(seconds=self._times[index])
        return None


@lru_cache(maxsize=4096)
def _compiled_cron(expression: str) -> tuple[croniter, threading.Lock]:
    return croniter(expression, datetime(2000, 1, 1), ret_type=datetime), threading.Lock()


def _offset(zone: ZoneInfo, instant: datetime) -> timedelta:
    return instant.astimezone(zone).utcoffset()  # type: ignore[return-value]


def _offset_change(
    zone: ZoneInfo, start: datetime, end: datetime
) -> tuple[datetime, timedelta, timedelta] | None:
    """The offset change in ``(start, end]`` as (instant, offset before, offset after), if any.

    ``end - start`` is at most a day, so the window holds at most one change.
    """
    change = _change_near(zone, int(start.timestamp()) // 3600)
    if change is not None and start < change[0] <= end:
        return change
    return None


@lru_cache(maxsize=16384)
def _change_near(zone: ZoneInfo, hour: int) -> tuple[datetime, timedelta, timedelta] | None:
    """The offset change in the 26 hours after the start of UTC hour ``hour`` since the epoch.

    Cached per hour: every trigger evaluated around the same time asks about the same window.
    """
    start = datetime.fromtimestamp(hour * 3600, UTC)
    end = start + _DAY + 2 * _HOUR
    before = _offset(zone, start)
    if _offset(zone, end) == before:
        return None
    instant = _change_instant(zone, start, end, before)
    return instant, before, _offset(zone, instant)


def _change_instant(
    zone: ZoneInfo, lower: datetime, upper: datetime, before: timedelta
) -> datetime:
    """The first whole second in ``(lower, upper]`` whose offset is no longer ``before``.

    ``lower`` has offset ``before`` and ``upper`` does not; offsets change on whole seconds.
    """
    low = int(lower.timestamp())
    high = int(upper.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if _offset(zone, datetime.fromtimestamp(middle, UTC)) == before:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, UTC)
