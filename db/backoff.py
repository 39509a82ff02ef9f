"""Exponential backoff: one pure function for unit-of-work retries and supervisor restarts."""

from __future__ import annotations

import random
from datetime import timedelta

#: The cap of SPEC section 4: retry delays double each time, up to one hour.
RETRY_DELAY_CAP = timedelta(hours=1)


def backoff(
    base: timedelta,
    attempt: int,
    *,
    cap: timedelta = RETRY_DELAY_CAP,
    jitter: float = 0.0,
    rng: random.Random | None = None,
) -> timedelta:
    """The delay before retry number ``attempt`` (1 for the first retry): ``base * 2**(attempt-1)``,
    capped at ``cap``, optionally spread by +-``jitter`` (a fraction) so that many failures at
    once do not retry in lockstep.

    Raises:
        ValueError: ``attempt`` < 1, negative ``base``, or ``jitter`` outside [0, 1).
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    if base < timedelta(0):
        raise ValueError("base must not be negative")
    if not 0.0 <= jitter < 1.0:
        raise ValueError("jitter must be in [0, 1)")
    # In float seconds, with the exponent bounded: timedelta itself overflows long before.
    seconds = base.total_seconds() * 2.0 ** min(attempt - 1, 62)
    delay = timedelta(seconds=min(seconds, cap.total_seconds()))
    if jitter:
        spread = (rng or random).uniform(-jitter, jitter)
        delay = min(delay * (1 + spread), cap)
    return delay
