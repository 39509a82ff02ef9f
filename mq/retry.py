"""How hard one broker call tries before it gives up: one policy for every networked broker.

Each backend describes its own failures once (:class:`Failures`: which exceptions are its
client's, which of them are worth another try, how to say them without secrets); the loop,
the backoff, the log lines and the :class:`~db.errors.BrokerUnavailable` it raises are the
same for RabbitMQ, Redis and NATS.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from db.backoff import backoff
from db.errors import BrokerUnavailable, InvalidInput

log = logging.getLogger(f"tactus.{__name__}")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Failures:
    """What one backend's client raises, and how to judge it.

    Args:
        name: the backend in log lines (``rabbitmq``).
        title: the server in messages (``RabbitMQ``).
        errors: the exceptions a failed call raises (anything else is a bug and propagates).
        is_transient: True when trying again may help (the server is away or restarting),
            False for a refusal (a bad login, a request the server rejects).
        explain: a short description of one of ``errors``, never with a password.
    """

    name: str
    title: str
    errors: tuple[type[BaseException], ...]
    is_transient: Callable[[BaseException], bool]
    explain: Callable[[BaseException], str]


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """``attempts`` tries in all; before try ``n + 1`` it waits ``db.backoff.backoff(base, n,
    cap)`` with 20 % jitter. The defaults ride out a blip (a dropped connection, a server
    restarted in a second or two) within one call, quietly (debug lines only); a longer outage
    is the caller's to wait out: the daemons do, through :mod:`mq.patient`, which logs it once.
    """

    attempts: int = 4
    base: timedelta = timedelta(seconds=0.25)
    cap: timedelta = timedelta(seconds=2)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise InvalidInput("attempts", f"must be at least 1 (got {self.attempts})")
        if self.base < timedelta(0) or self.cap < timedelta(0):
            raise InvalidInput("base", "retry delays must not be negative")

    def pause(self, attempt: int) -> float:
        """Seconds to wait after failed try ``attempt``."""
        return backoff(self.base, attempt, cap=self.cap, jitter=0.2).total_seconds()

    def run(
        self,
        failures: Failures,
        where: str,
        what: str,
        action: Callable[[], T],
        on_failure: Callable[[BaseException], None] | None = None,
        *,
        attempts: int | None = None,
    ) -> T:
        """Call ``action`` until it succeeds; after each failure call ``on_failure`` (drop the
        broken connection, forget what was declared) and wait. ``where`` is the server as logs
        may show it (its URI with the password masked); ``attempts`` overrides the policy's.

        Raises:
            BrokerUnavailable: a permanent refusal (``transient`` False), or ``attempts``
                transient failures in a row. One raised by ``action`` itself passes through.
        """
        tries = attempts or self.attempts
        attempt = 0
        while True:
            attempt += 1
            try:
                return action()
            except BrokerUnavailable:
                raise
            except failures.errors as exc:
                if on_failure is not None:
                    on_failure(exc)
                said = failures.explain(exc)
                if not failures.is_transient(exc):
                    log.error("%s %s: %s refused: %s", failures.name, where, what, said)
                    raise BrokerUnavailable(
                        f"{failures.title} at {where}: {what} refused: {said}", transient=False
                    ) from exc
                if attempt >= tries:
                    log.debug(
                        "%s %s: %s failed %d times: %s", failures.name, where, what, attempt, said
                    )
                    raise BrokerUnavailable(
                        f"{failures.title} at {where}: {what} failed after {attempt} attempts: "
                        f"{said}"
                    ) from exc
                pause = self.pause(attempt)
                log.debug(
                    "%s %s: %s failed (attempt %d of %d), retrying in %.2fs: %s",
                    failures.name,
                    where,
                    what,
                    attempt,
                    tries,
                    pause,
                    said,
                )
                time.sleep(pause)
