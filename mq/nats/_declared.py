"""Streams and durable consumers made sure of once per broker, on its event loop."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from nats.js import errors as js_errors

from mq.nats._layout import Place, consumer_config, mover_config, stream_config

if TYPE_CHECKING:
    from nats.js import JetStreamContext

log = logging.getLogger(f"tactus.{__name__}")

#: JetStream's error code for "stream name already in use" (another process created it first).
STREAM_NAME_IN_USE = 10058


class Declared:
    """What this broker has made sure exists on the server, so that each is asked for once.

    Every method runs on the broker's event loop. :meth:`forget` (from any thread, after a
    failure) makes the next use ask again: a stream or consumer deleted on the server since
    is then made anew.

    Args:
        visibility: the AckWait of the queues' durable consumers.
    """

    def __init__(self, visibility: timedelta) -> None:
        self.visibility = visibility
        self._streams: set[str] = set()
        self._consumers: set[tuple[str, str]] = set()

    async def stream(self, js: JetStreamContext, where: Place) -> None:
        """The installation's stream exists (made if missing)."""
        if where.stream in self._streams:
            return
        try:
            await js.stream_info(where.stream)
        except js_errors.NotFoundError:
            try:
                await js.add_stream(stream_config(where))
                log.info("nats: stream %s created for %s", where.stream, where.subjects)
            except js_errors.BadRequestError as exc:
                if exc.err_code != STREAM_NAME_IN_USE:
                    raise
        self._streams.add(where.stream)

    async def consumer(self, js: JetStreamContext, where: Place) -> None:
        """The queue's durable consumer exists, with this broker's visibility as its AckWait
        (JetStream updates the AckWait of an existing durable: the last broker to open a
        consumer sets it; every daemon of an installation has the same setting)."""
        await self._durable(js, where, where.consumer, consumer_config(where, self.visibility))

    async def mover(self, js: JetStreamContext, where: Place) -> None:
        """The durable consumer of the queue's delayed messages exists."""
        await self._durable(js, where, where.mover, mover_config(where))

    async def _durable(self, js: JetStreamContext, where: Place, name: str, config) -> None:
        key = (where.stream, name)
        if key in self._consumers:
            return
        await self.stream(js, where)
        try:
            await js.add_consumer(where.stream, config)
        except js_errors.NotFoundError:
            # the stream was deleted behind our back: make it again, then the consumer
            self._streams.discard(where.stream)
            await self.stream(js, where)
            await js.add_consumer(where.stream, config)
        self._consumers.add(key)

    def forget(self, where: Place | None = None) -> None:
        """Ask the server again before the next use (of ``where``, or of everything)."""
        if where is None:
            self._streams.clear()
            self._consumers.clear()
            return
        self._streams.discard(where.stream)
        self._consumers.discard((where.stream, where.consumer))
        self._consumers.discard((where.stream, where.mover))
