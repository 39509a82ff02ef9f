"""Identifiers shared by every backend: time-ordered strings, so that newest-first is id order."""

from __future__ import annotations

import os
import secrets
import threading
import time


def new_id() -> str:
    """A 24-character lowercase hex id: 12 digits of milliseconds since the epoch, 12 random.

    Sorting ids sorts by creation time (to the millisecond), on every backend alike.
    """
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(6)}"


class _Sequence:
    """Ids of :func:`new_id`'s shape that strictly increase within this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ms = 0
        self._low = 0

    def take(self, count: int) -> list[str]:
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms > self._ms:
                # A random start (40 of the 48 bits) keeps ids of processes unique within one
                # millisecond and leaves room to count up.
                self._ms, self._low = ms, secrets.randbits(40)
            ids = []
            for _ in range(count):
                self._low += 1
                if self._low >= 1 << 48:
                    self._ms, self._low = self._ms + 1, secrets.randbits(40)
                ids.append(f"{self._ms:012x}{self._low:012x}")
            return ids

    def forget(self) -> None:
        """After a fork: the child must not count on from the parent's last id."""
        self._lock = threading.Lock()
        self._ms = 0


_SEQUENCE = _Sequence()
os.register_at_fork(after_in_child=_SEQUENCE.forget)


def new_ids(count: int) -> list[str]:
    """``count`` ids like :func:`new_id` that sort in the order they were made in this process.

    :func:`new_id` orders only to the millisecond; a queue needs the publish order of messages
    made within one millisecond too (a batch, or a fast publisher), and gets it from these.
    """
    return _SEQUENCE.take(count)
