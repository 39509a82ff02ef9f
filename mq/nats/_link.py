"""The bridge between nats-py's asyncio client and Tactus's threads.

A :class:`Link` owns one event loop, run by one daemon thread, and one NATS connection made on
it. Callers on any thread hand it coroutines (:meth:`Link.call`, :meth:`Link.run`) through
``asyncio.run_coroutine_threadsafe`` and wait for the result with a timeout; callbacks of
subscriptions run on the loop. :meth:`Link.close` closes the connection, cancels what is still
scheduled, stops the loop and joins the thread: nothing is left behind.

nats-py reconnects by itself (and subscribes again) once connected; meanwhile a call fails at
once rather than wait for a request that cannot be answered, and :meth:`Link.call` tries again
with backoff (:class:`RetryPolicy`), then raises :class:`~db.errors.BrokerUnavailable`.
A connection that nats-py closed for good is replaced by the next call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from nats import errors as nats_errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js import errors as js_errors

from db.backends.base import mask_uri
from db.errors import BrokerUnavailable
from mq.retry import Failures, RetryPolicy

log = logging.getLogger(f"tactus.{__name__}")

T = TypeVar("T")

#: Seconds one request to the server (a publish's ack, a JetStream API call) may take.
REQUEST_TIMEOUT = 5.0
#: Seconds a first connection may take (nats-py's own attempt loop is cut short there).
CONNECT_TIMEOUT = 3.0
#: Seconds between nats-py's reconnect attempts once a connection was made.
RECONNECT_WAIT = 0.5
#: Seconds :meth:`Link.close` waits for the connection to close and the thread to end.
CLOSE_TIMEOUT = 5.0


class Disconnected(Exception):
    """The connection is down (nats-py is reconnecting): fail now, try again later."""


#: What a failed call of nats-py raises when the server is away or slow.
_TRANSIENT: tuple[type[BaseException], ...] = (
    Disconnected,
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
    concurrent.futures.TimeoutError,
    nats_errors.TimeoutError,
    nats_errors.ConnectionClosedError,
    nats_errors.NoServersError,
    nats_errors.NoRespondersError,
    nats_errors.StaleConnectionError,
    nats_errors.OutboundBufferLimitError,
    nats_errors.FlushTimeoutError,
    js_errors.ServiceUnavailableError,
    js_errors.NoStreamResponseError,
)


def is_transient(exc: BaseException) -> bool:
    """True when trying again may help: the server is away, restarting, or JetStream answered
    5xx (not ready yet after a restart). A refusal (bad login, a request the server rejects)
    is not."""
    if isinstance(exc, _TRANSIENT):
        return True
    if isinstance(exc, js_errors.APIError):
        return (exc.code or 0) >= 500
    return False


def explain(exc: BaseException) -> str:
    """A short description of a nats-py error for logs and messages."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


#: How nats-py fails, for :class:`~mq.retry.RetryPolicy` (a call's coroutine may raise
#: anything: what is not transient is a refusal).
FAILURES = Failures("nats", "NATS", (Exception,), is_transient, explain)


class Link:
    """One NATS connection on its own event loop thread (see the module docstring).

    Args:
        uri: ``nats://[user:password@]host:port``.
        name: the connection's name on the server (``tactus <name>``) and the thread's.
        retry: how hard :meth:`call` tries.
    """

    def __init__(self, uri: str, name: str, *, retry: RetryPolicy | None = None) -> None:
        self.uri = uri
        #: The URI with its password masked: the only form that reaches logs and messages.
        self.where = mask_uri(uri)
        self.name = name
        self.retry = retry or RetryPolicy()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"nats-loop {name}", daemon=True
        )
        self._thread.start()
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        #: Called on the loop after nats-py reconnected (pull requests died with the server).
        self._on_reconnect: list[Callable[[], None]] = []
        #: Bumped whenever a new connection replaces a closed one (its subscriptions are gone).
        self.generation = 0
        self._closed = False
        #: Posted coroutines not yet done (touched on the loop only).
        self._posted: set[asyncio.Task[None]] = set()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def on_reconnect(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` on the loop after each reconnect; returns a function that stops it."""
        self._on_reconnect.append(callback)
        return lambda: self._loop.call_soon_threadsafe(self._forget, callback)

    def _forget(self, callback: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._on_reconnect.remove(callback)

    # -- calls from other threads ------------------------------------------------------------------

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = REQUEST_TIMEOUT) -> T:
        """Run ``coroutine`` on the loop, once; its errors escape (a late one is cancelled and
        raises :class:`TimeoutError`)."""
        if self._closed:
            coroutine.close()
            raise BrokerUnavailable(f"NATS at {self.where}: {self.name} is closed", transient=False)
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer within {timeout:g}s") from None

    def call(
        self,
        what: str,
        action: Callable[[Client, JetStreamContext], Awaitable[T]],
        *,
        timeout: float = REQUEST_TIMEOUT,
        attempts: int | None = None,
        reset: Callable[[], None] | None = None,
    ) -> T:
        """``action(connection, jetstream)`` on the loop, tried again with backoff while it fails
        for a transient reason; ``reset`` runs after each failure (forget what was ensured).

        Raises:
            BrokerUnavailable: a refusal, or ``attempts`` (default: the policy's) failures.
        """
        return self.retry.run(
            FAILURES,
            self.where,
            what,
            lambda: self.run(self._connected(action, timeout), timeout + CONNECT_TIMEOUT),
            None if reset is None else lambda exc: reset(),
            attempts=attempts,
        )

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> concurrent.futures.Future[None]:
        """Start ``coroutine`` as a task on the loop (a mover); :meth:`close` cancels it."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def post(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Start ``coroutine`` on the loop and return at once (it handles its own errors).

        Posts from one thread start in their order, and before anything that thread hands the
        loop afterwards; :meth:`posted` waits for them to end, so a depth or a purge that
        follows an ack sees the message gone, as it would after a waited ack.
        """
        if self._closed:
            coroutine.close()
            raise BrokerUnavailable(f"NATS at {self.where}: {self.name} is closed", transient=False)
        self._loop.call_soon_threadsafe(self._start_posted, coroutine)

    def _start_posted(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coroutine)
        self._posted.add(task)
        task.add_done_callback(self._posted.discard)

    async def posted(self) -> None:
        """(On the loop.) Wait until what was posted before has ended."""
        if self._posted:
            await asyncio.wait(list(self._posted))

    @property
    def connected(self) -> bool:
        """True while the connection is up (as far as nats-py knows)."""
        nc = self._nc
        return nc is not None and nc.is_connected

    def close(self) -> None:
        """Close the connection, cancel what is left on the loop, stop it and join its thread."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(CLOSE_TIMEOUT)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(CLOSE_TIMEOUT)
        if not self._thread.is_alive():
            self._loop.close()
        else:  # pragma: no cover - a loop stuck in a callback: leave it to the process's end
            log.error("nats %s: the event loop of %s did not stop", self.where, self.name)

    # -- on the loop -------------------------------------------------------------------------------

    async def _connected(
        self, action: Callable[[Client, JetStreamContext], Awaitable[T]], timeout: float
    ) -> T:
        nc, js = await self.connection()
        return await asyncio.wait_for(action(nc, js), timeout)

    async def connection(self) -> tuple[Client, JetStreamContext]:
        """The open connection and its JetStream context (on the loop), connecting first if
        there is none.

        Raises:
            Disconnected: nats-py is reconnecting it.
        """
        nc = self._nc
        if nc is not None and nc.is_closed:
            nc = self._nc = self._js = None
        if nc is None:
            nc = Client()
            try:
                await asyncio.wait_for(
                    nc.connect(
                        servers=[self.uri],
                        name=f"tactus {self.name}",
                        connect_timeout=CONNECT_TIMEOUT,
                        allow_reconnect=True,
                        max_reconnect_attempts=-1,
                        reconnect_time_wait=RECONNECT_WAIT,
                        ping_interval=5,
                        max_outstanding_pings=3,
                        error_cb=self._on_error,
                        disconnected_cb=self._on_disconnected,
                        reconnected_cb=self._on_reconnected,
                    ),
                    CONNECT_TIMEOUT,
                )
            except BaseException:
                # nats-py's close waits for its reconnect loop, which a refused first
                # connection keeps going: give it a moment, not the caller's whole timeout
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(nc.close(), RECONNECT_WAIT)
                raise
            self._nc, self._js = nc, nc.jetstream(timeout=REQUEST_TIMEOUT)
            self.generation += 1
            log.debug("nats %s: %s connected", self.where, self.name)
        if not nc.is_connected:
            raise Disconnected("the connection is down; nats-py is reconnecting")
        assert self._js is not None
        return nc, self._js

    async def _shutdown(self) -> None:
        # posted acks first: a closing worker's last settles reach the server
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.posted(), CLOSE_TIMEOUT / 4)
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), CLOSE_TIMEOUT / 2)
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _on_error(self, exc: Exception) -> None:
        log.debug("nats %s: %s: %s", self.where, self.name, explain(exc))

    async def _on_disconnected(self) -> None:
        log.debug("nats %s: %s disconnected; reconnecting", self.where, self.name)

    async def _on_reconnected(self) -> None:
        log.info("nats %s: %s reconnected", self.where, self.name)
        for callback in list(self._on_reconnect):
            callback()
