"""The trigger interface, and the triggers that ignore wall-clock time: ``every`` and ``once``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from db.clock import require_aware

#: Origin of ``every`` triggers: they fire at whole multiples of the interval since this instant.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Trigger(ABC):
    """When something fires: a rule turning an instant into the next fire instant.

    Fire instants are aware UTC datetimes in whole seconds. A trigger is immutable and safe to
    share between threads; equal text and zone make equal triggers.
    """

    __slots__ = ("_text", "_timezone", "_zone")

    def __init__(self, text: str, timezone: str, zone: ZoneInfo) -> None:
        self._text = text
        self._timezone = timezone
        self._zone = zone

    @property
    def text(self) -> str:
        """The trigger as written (surrounding and repeated whitespace removed)."""
        return self._text

    @property
    def timezone(self) -> str:
        """IANA name of the zone that cron fields, ``at`` times and local ``once`` values use."""
        return self._timezone

    @property
    def zone(self) -> ZoneInfo:
        """The zone named by :attr:`timezone`."""
        return self._zone

    @abstractmethod
    def next_fire(self, after: datetime) -> datetime | None:
        """The first fire strictly after ``after``.

        Args:
            after: An aware instant (any zone).

        Returns:
            An aware UTC datetime in whole seconds, or None when the trigger never fires again.

        Raises:
            InvalidInput: ``after`` when it is naive.
        """

    def fires(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """Every fire in ``(after, until]``, in increasing order, each once.

        Args:
            after: Exclusive lower bound (aware).
            until: Inclusive upper bound (aware).

        Returns:
            An iterator of aware UTC datetimes.

        Raises:
            InvalidInput: ``after`` or ``until`` when naive; raised at the call.
        """
        return self._fires(require_aware(after, "after"), require_aware(until, "until"))

    def _fires(self, after: datetime, until: datetime) -> Iterator[datetime]:
        fire = self.next_fire(after)
        while fire is not None and fire <= until:
            yield fire
            fire = self.next_fire(fire)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trigger):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def _identity(self) -> tuple[type, str, str]:
        return (type(self), self._text, self._timezone)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._text!r}, timezone={self._timezone!r})"


class IntervalTrigger(Trigger):
    """``every``: fires every ``interval``, aligned to the UTC epoch.

    Fires fall at ``1970-01-01T00:00:00Z + k * interval``, so the instants are the same whenever
    the scheduler (re)starts, and two schedulers agree on them. The zone plays no part.
    """

    __slots__ = ("_interval",)

    def __init__(self, text: str, timezone: str, zone: ZoneInfo, interval: timedelta) -> None:
        super().__init__(text, timezone, zone)
        self._interval = interval

    @property
    def interval(self) -> timedelta:
        """Time between fires (whole seconds, positive)."""
        return self._interval

    def next_fire(self, after: datetime) -> datetime | None:
        steps = (require_aware(after, "after") - EPOCH) // self._interval + 1
        try:
            return EPOCH + steps * self._interval
        except OverflowError:
            return None


class OnceTrigger(Trigger):
    """``once``: fires at one instant, then never again."""

    __slots__ = ("_instant",)

    def __init__(self, text: str, timezone: str, zone: ZoneInfo, instant: datetime) -> None:
        super().__init__(text, timezone, zone)
        self._instant = instant

    @property
    def instant(self) -> datetime:
        """The one fire (aware UTC, whole seconds)."""
        return self._instant

    def next_fire(self, after: datetime) -> datetime | None:
        return self._instant if self._instant > require_aware(after, "after") else None
