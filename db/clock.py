"""Time sources. The clock is injected everywhere so tests can replace it."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol

from db.errors import InvalidInput


class Clock(Protocol):
    """Anything that tells the current instant as an aware UTC datetime."""

    def now(self) -> datetime: ...


def truncate_ms(instant: datetime) -> datetime:
    """Drop sub-millisecond digits: every backend (BSON dates included) keeps milliseconds."""
    return instant.replace(microsecond=instant.microsecond - instant.microsecond % 1000)


def require_aware(instant: datetime, field: str = "instant") -> datetime:
    """Return ``instant`` in UTC; refuse naive datetimes at the boundary."""
    if not isinstance(instant, datetime):
        raise InvalidInput(field, f"must be a datetime, got {type(instant).__name__}")
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise InvalidInput(field, "must be timezone-aware (naive datetimes are refused)")
    return instant.astimezone(UTC)


class SystemClock:
    """The real clock, in UTC, truncated to milliseconds."""

    def now(self) -> datetime:
        return truncate_ms(datetime.now(UTC))


class FakeClock:
    """A clock that moves only when told to: for tests and simulations. Thread-safe."""

    def __init__(self, start: datetime) -> None:
        self._now = truncate_ms(require_aware(start))
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta | float) -> datetime:
        """Move forward by ``delta`` (a timedelta or seconds) and return the new instant."""
        if not isinstance(delta, timedelta):
            delta = timedelta(seconds=delta)
        with self._lock:
            self._now = truncate_ms(self._now + delta)
            return self._now

    def set(self, instant: datetime) -> None:
        with self._lock:
            self._now = truncate_ms(require_aware(instant))
