"""Connections to RabbitMQ: one pika connection per owner, bounded reconnects with exponential
backoff, and pika's exceptions translated to :class:`~db.errors.BrokerUnavailable` at the boundary.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import pika
from pika import exceptions as pika_errors

from db.backends.base import mask_uri
from mq.retry import Failures

if TYPE_CHECKING:
    from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

log = logging.getLogger(f"tactus.{__name__}")

T = TypeVar("T")

#: What pika (and the socket under it) raises when a connection or channel fails.
BROKER_ERRORS: tuple[type[BaseException], ...] = (pika_errors.AMQPError, OSError)
#: Reply codes with which the broker refuses for good, so retrying cannot help: 403
#: ACCESS_REFUSED (login, permissions), 404 NOT_FOUND, 405 RESOURCE_LOCKED, 406
#: PRECONDITION_FAILED (a queue exists with other arguments), 530 NOT_ALLOWED (unknown vhost).
PERMANENT_REPLY_CODES = frozenset({403, 404, 405, 406, 530})
#: Seconds a publish may stay blocked by a broker resource alarm before it counts as a failure
#: (pika's default waits forever), unless the URI sets ``blocked_connection_timeout``.
BLOCKED_CONNECTION_TIMEOUT = 60.0

#: Heartbeat interval (seconds) RabbitMQ proposes when the URI sets none.
DEFAULT_HEARTBEAT = 60.0

#: pika's "probable" login errors carry the broker's reply only as text: "...: (403) '...'".
_REPLY_CODE_IN_TEXT = re.compile(r"\((\d{3})\)")


def reply_code(exc: BaseException) -> int | None:
    """The AMQP reply code behind ``exc``, if the broker sent one."""
    code = getattr(exc, "reply_code", None)
    if isinstance(code, int):
        return code
    if isinstance(exc, pika_errors.AMQPConnectionError):
        match = _REPLY_CODE_IN_TEXT.search(str(exc))
        if match:
            return int(match.group(1))
    return None


def is_transient(exc: BaseException) -> bool:
    """True when reconnecting may help (connection lost, broker restarting), False when the
    broker refused for good (bad login, unknown vhost, queue declared with other arguments)."""
    if isinstance(exc, pika_errors.AuthenticationError | pika_errors.IncompatibleProtocolError):
        return False
    if reply_code(exc) in PERMANENT_REPLY_CODES:
        return False
    return isinstance(exc, BROKER_ERRORS)


def explain(exc: BaseException) -> str:
    """A short description of a pika error for logs and messages (pika never puts the password in
    its exception texts)."""
    text = str(exc).strip() or ", ".join(str(arg) or repr(arg) for arg in exc.args)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


#: How pika fails, for :class:`~mq.retry.RetryPolicy`.
FAILURES = Failures("rabbitmq", "RabbitMQ", BROKER_ERRORS, is_transient, explain)


def connection_parameters(uri: str, name: str) -> pika.URLParameters:
    """pika parameters for ``uri``, one connection attempt each (:class:`RetryPolicy` retries),
    named ``tactus <name>`` in ``rabbitmqctl list_connections``."""
    params = pika.URLParameters(uri)
    params.connection_attempts = 1
    if params.blocked_connection_timeout is None:
        params.blocked_connection_timeout = BLOCKED_CONNECTION_TIMEOUT
    params.client_properties = {
        **(params.client_properties or {}),
        "connection_name": f"tactus {name}",
    }
    return params


class Link:
    """One pika connection and its channels by role, opened on demand.

    After any failure the owner calls :meth:`reset`: the whole connection is dropped and the next
    use opens a fresh one, so no half-broken channel survives. Not thread-safe, like pika itself:
    each owner (the broker's publisher, each consumer) has its own link.

    A ``BlockingConnection`` answers heartbeats only while pika runs, so a connection left idle
    for a heartbeat interval is closed by the broker. With ``reopen_when_idle`` (the publisher's
    link) a connection idle for half an interval is replaced before use rather than found dead by
    the next publish; a consumer's link is kept alive by ``get`` and ``extend`` instead.
    """

    def __init__(self, uri: str, name: str, *, reopen_when_idle: bool = False) -> None:
        self.params = connection_parameters(uri, name)
        #: The URI with its password masked: the only form that reaches logs and messages.
        self.where = mask_uri(uri)
        self.name = name
        self._connection: BlockingConnection | None = None
        self._channels: dict[str, BlockingChannel] = {}
        heartbeat = self.params.heartbeat
        interval = heartbeat if isinstance(heartbeat, int | float) and heartbeat > 0 else None
        self._max_idle = (interval or DEFAULT_HEARTBEAT) / 2 if reopen_when_idle else None
        self._last_used = 0.0

    @property
    def is_open(self) -> bool:
        """True while the connection is open (as far as pika knows)."""
        return self._connection is not None and self._connection.is_open

    @property
    def connection(self) -> BlockingConnection:
        """The open connection, connecting first if needed (one attempt; pika errors escape)."""
        connection = self._connection
        now = time.monotonic()
        if self._max_idle is not None and now - self._last_used > self._max_idle:
            connection = None
        if connection is None or not connection.is_open:
            self.reset()
            connection = self._connection = pika.BlockingConnection(self.params)
            log.debug("rabbitmq %s: %s connected", self.where, self.name)
        self._last_used = now
        return connection

    def channel(
        self, role: str, setup: Callable[[BlockingChannel], None] | None = None
    ) -> BlockingChannel:
        """The open channel for ``role``; a new one (prepared by ``setup``) if it was closed."""
        connection = self.connection  # first: it may replace an idle connection
        channel = self._channels.get(role)
        if channel is None or not channel.is_open:
            channel = connection.channel()
            if setup is not None:
                setup(channel)
            self._channels[role] = channel
        return channel

    def reset(self) -> None:
        """Drop the connection quietly; it may already be dead."""
        connection, self._connection = self._connection, None
        self._channels.clear()
        if connection is not None and connection.is_open:
            with contextlib.suppress(*BROKER_ERRORS):
                connection.close()
