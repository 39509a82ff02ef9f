"""Time sources. The clock is injected everywhere so tests can replace it."""

from __future__ import annotations

import threading
import time
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


class StoreClock:
    """The store's clock, read on this machine: the system clock corrected by its offset from
    the store server's (:meth:`~db.store.Store.server_time`), measured now and then.

    Liveness compares heartbeats written by workers on many boxes with the scheduler's "now";
    stamped with this clock they are judged by one clock, the store's, whatever the boxes'
    clocks say. Between two measurements it costs nothing; a failed measurement keeps the last
    offset (an outage is no time to trust a new one).
    """

    def __init__(
        self,
        store: _TimeSource,
        *,
        refresh: timedelta = timedelta(minutes=5),
        base: Clock | None = None,
    ) -> None:
        self._store = store
        self._refresh = refresh.total_seconds()
        self._base = base or SystemClock()
        self._offset = timedelta(0)
        self._measured_at: float | None = None
        self._lock = threading.Lock()

    @property
    def offset(self) -> timedelta:
        """The store's clock minus this machine's, as last measured."""
        return self._offset

    def now(self) -> datetime:
        due = self._measured_at is None or time.monotonic() - self._measured_at >= self._refresh
        if due and self._lock.acquire(blocking=False):
            try:
                self.measure()
            except Exception:  # noqa: BLE001 - keep the last offset; the store is away
                self._measured_at = time.monotonic()
            finally:
                self._lock.release()
        return truncate_ms(self._base.now() + self._offset)

    def measure(self) -> timedelta:
        """Ask the store for its time now; the offset assumes the answer came half-way through
        the round trip.

        Raises:
            StoreUnavailable: the store does not answer (the offset is kept).
        """
        sent = self._base.now()
        told = self._store.server_time()
        received = self._base.now()
        self._offset = told - (sent + (received - sent) / 2)
        self._measured_at = time.monotonic()
        return self._offset


class _TimeSource(Protocol):
    def server_time(self) -> datetime: ...
