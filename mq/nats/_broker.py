"""The NATS JetStream broker: publishing, queue administration and the consumers' movers."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING

from nats.js import errors as js_errors

from db.errors import InvalidInput
from mq.broker import Broker
from mq.message import dead_letter_queue
from mq.nats._consumer import NatsConsumer
from mq.nats._declared import Declared
from mq.nats._layout import DELAY_HEADER, MSG_ID_HEADER, Place, place
from mq.nats._link import REQUEST_TIMEOUT, Link
from mq.nats._mover import move_delayed
from mq.retry import RetryPolicy

if TYPE_CHECKING:
    import concurrent.futures

    from nats.aio.client import Client
    from nats.js import JetStreamContext

    from db.store import Store

log = logging.getLogger(f"tactus.{__name__}")

#: The visibility timeout (AckWait) when none is given: the ``visibility_timeout`` default.
DEFAULT_VISIBILITY = timedelta(seconds=60)
#: Messages of one pipelined batch of :meth:`NatsBroker.publish_many`.
BATCH = 1000
#: Depth requests of :meth:`NatsBroker.depths` in flight at once.
DEPTHS_IN_FLIGHT = 64


def delay_millis(delay: timedelta | None) -> int:
    """``delay`` in whole milliseconds, rounded up (never early); 0 for none."""
    if delay is None or delay <= timedelta(0):
        return 0
    return math.ceil(delay / timedelta(milliseconds=1))


class NatsBroker(Broker):
    """Durable queues on NATS JetStream through nats-py (see the package docstring).

    One connection, on one event loop thread, carries everything this broker and its consumers
    do; any thread may publish, and each consumer is used by the thread that opened it.

    Args:
        uri: ``nats://[user:password@]host:4222``.
        store: ignored (the embedded queue's store; JetStream keeps its own messages).
        visibility: how long a delivery neither acked nor extended stays with its consumer
            before JetStream delivers it again (the durable consumers' AckWait).
        retry: how hard one call tries before it raises ``BrokerUnavailable``.
        attempts: ``retry`` with this many attempts (mx passes 1).
    """

    backend = "nats"

    def __init__(
        self,
        uri: str,
        *,
        store: Store | None = None,
        visibility: timedelta = DEFAULT_VISIBILITY,
        retry: RetryPolicy | None = None,
        attempts: int | None = None,
    ) -> None:
        del store
        if visibility <= timedelta(0):
            raise InvalidInput("visibility", f"must be positive (got {visibility})")
        if retry is None:
            retry = RetryPolicy() if attempts is None else RetryPolicy(attempts=attempts)
        self._link = Link(uri, "broker", retry=retry)
        self._declared = Declared(visibility)
        #: Queue -> (the mover task, how many of this broker's consumers of it are open).
        self._movers: dict[str, tuple[concurrent.futures.Future[None], int]] = {}
        self._movers_lock = threading.Lock()

    def describe(self) -> str:
        return f"nats {self._link.where}"

    def declare(self, queue: str) -> None:
        where = place(queue)

        async def action(nc: Client, js: JetStreamContext) -> None:
            await self._declared.stream(js, where)

        self._call(f"declare {queue}", action, where)

    def publish(self, queue: str, body: bytes, *, delay: timedelta | None = None) -> None:
        self._send([(queue, body, delay_millis(delay))])

    def publish_many(self, messages: Iterable[tuple[str, bytes]]) -> None:
        items = [(queue, body, 0) for queue, body in messages]
        for start in range(0, len(items), BATCH):
            self._send(items[start : start + BATCH])

    def consumer(self, queue: str, *, prefetch: int = 1) -> NatsConsumer:
        consumer = NatsConsumer(
            self._link,
            self._declared,
            queue,
            prefetch=prefetch,
            on_close=lambda: self._release_mover(queue),
        )
        self._hold_mover(queue)
        return consumer

    def depth(self, queue: str) -> int:
        where = place(queue)

        async def action(nc: Client, js: JetStreamContext) -> int:
            return await _depth(js, where)

        return self._call(f"depth of {queue}", action, where)

    def depths(self, queues: Iterable[str]) -> dict[str, int]:
        """:meth:`depth` of each queue, their requests in flight together (at most
        :data:`DEPTHS_IN_FLIGHT` at a time): ``/metrics`` reads every process queue, and one
        round trip after the other took about 0.2 s for 1,000 queues."""
        wheres = {queue: place(queue) for queue in dict.fromkeys(queues)}

        async def action(nc: Client, js: JetStreamContext) -> dict[str, int]:
            await self._link.posted()
            gate = asyncio.Semaphore(DEPTHS_IN_FLIGHT)

            async def one(where: Place) -> int:
                async with gate:
                    return await _depth(js, where)

            counts = await asyncio.gather(*(one(where) for where in wheres.values()))
            return dict(zip(wheres, counts, strict=True))

        def reset() -> None:
            for where in wheres.values():
                self._declared.forget(where)

        return self._link.call(f"depth of {len(wheres)} queues", action, reset=reset)

    def purge(self, queue: str) -> int:
        where = place(queue)

        async def action(nc: Client, js: JetStreamContext) -> int:
            return sum([await _purge(nc, where, s) for s in (where.ready, where.delayed)])

        purged = self._call(f"purge {queue}", action, where)
        log.info("nats %s: purged %d message(s) of %s", self._link.where, purged, queue)
        return purged

    def delete(self, queue: str) -> None:
        places = [place(queue), place(dead_letter_queue(queue))]

        async def action(nc: Client, js: JetStreamContext) -> None:
            for where in places:
                for name in (where.consumer, where.mover):
                    try:
                        await js.delete_consumer(where.stream, name)
                    except js_errors.NotFoundError:
                        pass
                for subject in (where.ready, where.delayed):
                    await _purge(nc, where, subject)
                self._declared.forget(where)

        self._call(f"delete {queue}", action, places[0])

    def delete_installation(self, prefix: str) -> None:
        """Delete the stream of the queues named ``<prefix>.…``, every message and consumer in
        it (tests clean up with it; an operator retiring an installation may too)."""
        where = place(f"{prefix}.x")

        async def action(nc: Client, js: JetStreamContext) -> None:
            try:
                await js.delete_stream(where.stream)
            except js_errors.NotFoundError:
                pass
            self._declared.forget()

        self._call(f"delete the stream {where.stream}", action, where)

    def close(self) -> None:
        with self._movers_lock:
            movers = [future for future, _ in self._movers.values()]
            self._movers.clear()
        for future in movers:
            future.cancel()
        self._link.close()

    def _send(self, items: list[tuple[str, bytes, int]]) -> None:
        """Publish ``items`` (queue, body, delay in ms), pipelined, and wait for every publish
        ack. Each message gets its id once, so a batch tried again after a failure (some of it
        stored, some not) is stored once: JetStream drops the repeats within its duplicate
        window."""
        outgoing = []
        for queue, body, delay_ms in items:
            where = place(queue)
            headers = {MSG_ID_HEADER: uuid.uuid4().hex}
            if delay_ms:
                headers[DELAY_HEADER] = str(delay_ms)
            outgoing.append((where, where.delayed if delay_ms else where.ready, body, headers))
        places = {where.stream: where for where, *_ in outgoing}

        async def action(nc: Client, js: JetStreamContext) -> None:
            for where in places.values():
                await self._declared.stream(js, where)
            if len(outgoing) == 1:
                _, subject, body, headers = outgoing[0]
                await js.publish(subject, body, headers=headers)
                return
            acks = [
                await js.publish_async(subject, body, headers=headers)
                for _, subject, body, headers in outgoing
            ]
            await asyncio.gather(*acks)

        queues = sorted({where.queue for where, *_ in outgoing})
        what = f"publish {len(items)} message(s) to {', '.join(queues[:3])}"
        if len(queues) > 3:
            what += f" and {len(queues) - 3} more queue(s)"
        timeout = REQUEST_TIMEOUT * max(1, len(items) // 200)
        self._link.call(what, action, timeout=timeout, reset=self._declared.forget)

    def _call(self, what: str, action, where: Place):
        """``action`` once this process's posted settles have ended (an ack is not waited for
        by its caller: a depth or purge after it must still see its message gone)."""

        async def after_settles(nc: Client, js: JetStreamContext):
            await self._link.posted()
            return await action(nc, js)

        return self._link.call(what, after_settles, reset=lambda: self._declared.forget(where))

    def _hold_mover(self, queue: str) -> None:
        """Start the mover of ``queue``'s delayed messages with this broker's first consumer of
        it (``_mover.py``)."""
        with self._movers_lock:
            future, count = self._movers.get(queue, (None, 0))
            if future is None or future.done():
                future = self._link.spawn(move_delayed(self._link, self._declared, place(queue)))
            self._movers[queue] = (future, count + 1)

    def _release_mover(self, queue: str) -> None:
        """Stop the mover with this broker's last consumer of ``queue``."""
        with self._movers_lock:
            future, count = self._movers.get(queue, (None, 0))
            if future is None:
                return
            if count > 1:
                self._movers[queue] = (future, count - 1)
                return
            del self._movers[queue]
        future.cancel()


async def _depth(js: JetStreamContext, where: Place) -> int:
    """Messages of ``where`` not yet delivered or given back with a delay (0: no stream)."""
    try:
        info = await js.stream_info(where.stream, subjects_filter=where.both)
    except js_errors.NotFoundError:
        return 0
    counts = info.state.subjects or {}
    try:
        # not yet delivered: neither in a consumer's hands nor given back with a delay
        ready = (await js.consumer_info(where.stream, where.consumer)).num_pending
    except js_errors.NotFoundError:
        ready = counts.get(where.ready, 0)  # never consumed: every message waits
    return ready + counts.get(where.delayed, 0)


async def _purge(nc: Client, where: Place, subject: str) -> int:
    """Purge ``subject`` of ``where``'s stream; how many messages went (0: no stream)."""
    request = json.dumps({"filter": subject}).encode()
    reply = await nc.request(
        f"$JS.API.STREAM.PURGE.{where.stream}", request, timeout=REQUEST_TIMEOUT
    )
    answer = json.loads(reply.data)
    if "error" in answer:
        error = js_errors.APIError.from_error(answer["error"])
        if isinstance(error, js_errors.NotFoundError):
            return 0
        raise error
    return int(answer.get("purged", 0))
