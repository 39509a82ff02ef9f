"""Backoff while mx is unreachable (SPEC section 11): the same delay every time (``fixed``)
or doubling up to a cap (``exponential``), each spread by a random jitter so that many
executors that lost mx at once do not come back in lockstep."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum

from db.backoff import backoff
from db.errors import InvalidInput


class BackoffKind(StrEnum):
    """``fixed``: ``base`` each time; ``exponential``: ``base * 2**(n-1)`` up to ``cap``."""

    FIXED = "fixed"
    EXPONENTIAL = "exponential"


@dataclass(frozen=True, kw_only=True, slots=True)
class BackoffPolicy:
    """How long to wait after the n-th failure in a row."""

    kind: BackoffKind = BackoffKind.EXPONENTIAL
    base: timedelta = timedelta(seconds=1)
    cap: timedelta = timedelta(seconds=30)
    #: Spread of each delay, a fraction: 0.2 is +-20%.
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.base <= timedelta(0):
            raise InvalidInput("backoff_base", "must be a positive number of seconds")
        if self.cap < self.base:
            raise InvalidInput("backoff_max", "must be at least the backoff base")
        if not 0.0 <= self.jitter < 1.0:
            raise InvalidInput("backoff_jitter", "must be from 0 to below 1")

    def delay(self, failures: int, rng: random.Random | None = None) -> timedelta:
        """The wait after ``failures`` failures in a row (1 for the first)."""
        attempt = 1 if self.kind is BackoffKind.FIXED else failures
        return backoff(self.base, attempt, cap=self.cap, jitter=self.jitter, rng=rng)


@dataclass(slots=True)
class Backoff:
    """The failures in a row of one caller (a slot, the outcome sender) and its waits."""

    policy: BackoffPolicy
    failures: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def wait(self, interrupt: threading.Event) -> timedelta:
        """Count a failure and wait its delay (less if ``interrupt`` is set meanwhile).

        Returns:
            The delay it waited for.
        """
        self.failures += 1
        delay = self.policy.delay(self.failures, self.rng)
        interrupt.wait(delay.total_seconds())
        return delay

    def succeeded(self) -> None:
        self.failures = 0
