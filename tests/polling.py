"""Waiting in tests: poll a predicate under a deadline instead of sleeping a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], deadline: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Call ``predicate`` until it returns a truthy value and return that value.

    Raises:
        AssertionError: the deadline (seconds) passed first; the message says what was awaited.
    """
    end = time.monotonic() + deadline
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {deadline}s waiting for {what or predicate}")
        time.sleep(interval)
