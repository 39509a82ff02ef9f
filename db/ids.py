"""Identifiers shared by every backend: time-ordered strings, so that newest-first is id order."""

from __future__ import annotations

import secrets
import time


def new_id() -> str:
    """A 24-character lowercase hex id: 12 digits of milliseconds since the epoch, 12 random.

    Sorting ids sorts by creation time (to the millisecond), on every backend alike.
    """
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(6)}"
