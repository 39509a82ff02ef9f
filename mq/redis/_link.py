"""Connections to Redis: clients opened from the URI, bounded retries with exponential backoff,
and redis-py's exceptions translated to :class:`~db.errors.BrokerUnavailable` at the boundary."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import redis
from redis import exceptions as redis_errors

from db.backoff import backoff
from db.errors import BrokerUnavailable, InvalidInput

log = logging.getLogger(f"tactus.{__name__}")

T = TypeVar("T")

#: Seconds a connection attempt may take: a local server answers or refuses at once.
CONNECT_TIMEOUT = 2.0
#: Seconds a command may wait for its reply beyond a blocking read's own wait.
REPLY_TIMEOUT = 10.0
#: Error replies after which the same call may succeed: a server loading its data after a
#: restart, a replica promoted meanwhile, a script cache emptied by a restart.
_TRANSIENT_REPLIES = ("LOADING", "MASTERDOWN", "READONLY", "TRYAGAIN", "NOSCRIPT")


def is_transient(exc: BaseException) -> bool:
    """True when trying again may help (connection lost or refused, server restarting), False
    when the server refused for good (bad password, missing permission, a wrong type of key)."""
    if isinstance(exc, redis_errors.AuthenticationError | redis_errors.AuthorizationError):
        return False
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError | OSError):
        return True
    if isinstance(exc, redis_errors.ResponseError):
        return str(exc).startswith(_TRANSIENT_REPLIES)
    return False


def explain(exc: BaseException) -> str:
    """A short description of a redis-py error (redis-py never puts the password in its texts)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def open_client(uri: str, *, reply_timeout: float = REPLY_TIMEOUT, single: bool = False):
    """A redis-py client for ``uri`` (``redis://[:password@]host:port/db`` or ``rediss://``)
    that never retries by itself (:class:`RetryPolicy` does); ``single`` keeps one connection,
    for a consumer's thread.

    Raises:
        InvalidInput: ``uri`` cannot be parsed (field ``broker_uri``).
    """
    try:
        return redis.Redis.from_url(
            uri,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=reply_timeout,
            socket_keepalive=True,
            retry_on_timeout=False,
            single_connection_client=single,
            client_name="tactus",
        )
    except ValueError as exc:
        raise InvalidInput("broker_uri", f"not a Redis URI: {exc}") from exc


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """How hard one call tries before it gives up with :class:`~db.errors.BrokerUnavailable`.

    ``attempts`` tries in all, waiting ``db.backoff.backoff(base, n, cap)`` (20 % jitter) before
    try ``n + 1``: the defaults ride out a blip (a dropped connection, a server restarted in a
    second or two) within one call, quietly; a longer outage is the caller's to wait out (the
    daemons do, through :mod:`mq.patient`, which logs it once).
    """

    attempts: int = 4
    base: timedelta = timedelta(seconds=0.25)
    cap: timedelta = timedelta(seconds=2)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise InvalidInput("attempts", f"must be at least 1 (got {self.attempts})")
        if self.base < timedelta(0) or self.cap < timedelta(0):
            raise InvalidInput("base", "retry delays must not be negative")

    def run(
        self,
        where: str,
        what: str,
        action: Callable[[], T],
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> T:
        """Call ``action`` until it succeeds; after each failure call ``on_failure`` and wait.

        Raises:
            BrokerUnavailable: a permanent refusal (``transient`` False), or ``attempts``
                transient failures in a row.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                return action()
            except (redis_errors.RedisError, OSError) as exc:
                if on_failure is not None:
                    on_failure(exc)
                if not is_transient(exc):
                    log.error("redis %s: %s refused: %s", where, what, explain(exc))
                    raise BrokerUnavailable(
                        f"Redis at {where}: {what} refused: {explain(exc)}", transient=False
                    ) from exc
                if attempt >= self.attempts:
                    raise BrokerUnavailable(
                        f"Redis at {where}: {what} failed after {attempt} attempts: {explain(exc)}"
                    ) from exc
                pause = backoff(self.base, attempt, cap=self.cap, jitter=0.2).total_seconds()
                log.debug(
                    "redis %s: %s failed (attempt %d of %d), retrying in %.2fs: %s",
                    where,
                    what,
                    attempt,
                    self.attempts,
                    pause,
                    explain(exc),
                )
                time.sleep(pause)
