"""Slow down password and token guessing: failed logins per client address and per user name
within a sliding window. In memory, per mx process: a restart forgets, which bounds how long a
legitimate user can stay locked out by someone else's failures."""

from __future__ import annotations

import math
import threading
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime, timedelta

#: Failures allowed per key within the window, before logins from that key are refused.
MAX_FAILURES = 10
#: Most keys remembered (each a few failures): a flood of addresses cannot exhaust memory.
MAX_KEYS = 10_000


class LoginThrottle:
    """Counts failures per key (``ip:1.2.3.4``, ``user:alice``) within ``window``."""

    def __init__(self, window: timedelta, *, max_failures: int = MAX_FAILURES) -> None:
        self._window = window
        self._max = max_failures
        self._failures: dict[str, deque[datetime]] = {}
        self._lock = threading.Lock()

    def retry_after(self, keys: Iterable[str], now: datetime) -> int:
        """Seconds until a login from these keys is accepted again (0: accepted now)."""
        wait = 0.0
        with self._lock:
            for key in keys:
                times = self._recent(key, now)
                if len(times) >= self._max:
                    oldest = times[len(times) - self._max]
                    wait = max(wait, (oldest + self._window - now).total_seconds())
        return math.ceil(wait)

    def failed(self, keys: Iterable[str], now: datetime) -> None:
        with self._lock:
            for key in keys:
                if key not in self._failures and len(self._failures) >= MAX_KEYS:
                    self._evict(now)
                times = self._recent(key, now)
                times.append(now)
                self._failures[key] = times

    def succeeded(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)

    def _recent(self, key: str, now: datetime) -> deque[datetime]:
        times = self._failures.get(key, deque())
        while times and times[0] <= now - self._window:
            times.popleft()
        return times

    def _evict(self, now: datetime) -> None:
        for key in list(self._failures):
            if not self._recent(key, now):
                del self._failures[key]
        while len(self._failures) >= MAX_KEYS:
            del self._failures[next(iter(self._failures))]
