"""Connections to Redis: clients opened from the URI, bounded retries with exponential backoff,
and redis-py's exceptions translated to :class:`~db.errors.BrokerUnavailable` at the boundary."""

from __future__ import annotations

import logging
from typing import TypeVar

import redis
from redis import exceptions as redis_errors

from db.errors import InvalidInput
from mq.retry import Failures

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


#: How redis-py fails, for :class:`~mq.retry.RetryPolicy`.
FAILURES = Failures("redis", "Redis", (redis_errors.RedisError, OSError), is_transient, explain)
