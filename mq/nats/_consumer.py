"""A JetStream consumer: pull requests on the queue's durable consumer, for one thread.

The consumer subscribes to an inbox of its own and asks the durable consumer for at most
``prefetch`` messages in hand (received and not yet settled) with pull requests
(``$JS.API.CONSUMER.MSG.NEXT``), one outstanding at a time. What arrives is buffered by the
subscription's callback on the event loop; :meth:`NatsConsumer.get` hands it out and asks for
more. A request outlives the ``get`` that sent it (up to :data:`PULL_EXPIRES`), so messages keep
arriving ahead of the next ``get``, as RabbitMQ pushes its prefetch: that is what
:meth:`NatsConsumer.get_ready` finds and :meth:`NatsConsumer.hand_back` gives back.

Settling maps onto JetStream's acks: ``ack`` is posted to the event loop without waiting (as
RabbitMQ's ``basic_ack``) and sent as ``+NXT``, JetStream's ack-next: the ack and the request
for the message that fills the room in one protocol message, whose answer the loop waits for
while the caller goes on (a plain ``+ACK``, its answer waited for, when no request can go with
it); the broker's ``depth``, ``purge`` and ``delete`` wait for posted settles first, so what
follows an ack sees the message gone.
``requeue`` a ``-NAK`` (with ``{"delay": ns}`` for a delay),
``extend`` ``+WPI`` (the AckWait starts again), ``reject`` a confirmed publish to the
dead-letter queue then ``+ACK``. An ack lost with the connection means the message comes again
after the visibility timeout, which handlers tolerate.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from db.errors import BrokerUnavailable, InvalidInput
from mq.broker import Consumer, Delivery
from mq.message import dead_letter_queue
from mq.nats._layout import MSG_ID_HEADER, place
from mq.nats._link import REQUEST_TIMEOUT, explain

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from typing import Any

    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

    from mq.nats._declared import Declared
    from mq.nats._link import Link

log = logging.getLogger(f"tactus.{__name__}")

#: Longest life of one pull request (seconds); the server answers 408 when it expires.
PULL_EXPIRES = 30.0
#: Shortest life of one pull request (seconds).
PULL_EXPIRES_MIN = 1.0
#: Seconds past its expiry a request with no answer at all is given up (the server lost it).
PULL_GRACE = 2.0
#: A buffered message held this share of the visibility timeout is not handed out: the server
#: is about to deliver it again (to another consumer, perhaps).
STALE_SHARE = 0.8
#: Seconds a settle waits for the answer to the pull request that refills the prefetch.
REFILL_WAIT = 1.0
#: Status codes of a pull request's end: no messages (404), expired or closed (408, 409).
_STATUS_DONE = frozenset({"404", "408", "409"})


@dataclass(slots=True)
class _Pull:
    """The outstanding pull request."""

    number: int
    wanted: int
    expires_at: float
    answered: bool = False
    #: Set (on the loop) by the first answer: a message or a status.
    answer: asyncio.Event = field(default_factory=asyncio.Event)


class NatsConsumer(Consumer):
    """Consumes one queue through its durable pull consumer (see the module docstring)."""

    def __init__(
        self,
        link: Link,
        declared: Declared,
        queue: str,
        *,
        prefetch: int = 1,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
            raise InvalidInput("prefetch", f"must be a positive integer (got {prefetch!r})")
        self.queue = queue
        self.prefetch = prefetch
        self._link = link
        self._declared = declared
        self._where = place(queue)
        self._dead = place(dead_letter_queue(queue))
        self._on_close = on_close
        self._stale_after = declared.visibility.total_seconds() * STALE_SHARE
        self._cond = threading.Condition()
        #: (monotonic time received, message), not yet handed out.
        self._buffer: deque[tuple[float, Msg]] = deque()
        #: Handed out by get and not settled: tag -> message.
        self._held: dict[int, Msg] = {}
        self._tags = itertools.count(1)
        self._numbers = itertools.count(1)
        self._pull: _Pull | None = None
        #: Posted settles that will ask for what they make room for: get leaves that to them.
        self._refilling = 0
        self._handed_back = False
        self._closed = False
        #: Check the durable consumer before the next pull (a request went unanswered).
        self._verify = True
        self._inbox = ""
        self._subscription = None
        self._generation = -1
        self._notice_places: set[str] = set()
        self._unhook = link.on_reconnect(self._on_reconnect)
        try:
            self._link.call(f"consume {queue}", self._ensure, reset=self._forget)
        except BaseException:
            self.close()
            raise

    # -- receiving ---------------------------------------------------------------------------------

    def get(self, timeout: float) -> Delivery | None:
        if self._closed:
            raise BrokerUnavailable(f"consumer of {self.queue} is closed", transient=False)
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._cond:
            self._handed_back = False
        while True:
            with self._cond:
                delivery = self._next()
                if delivery is not None:
                    break
                wanted = self._room()
            if wanted:
                expires = min(max(timeout, PULL_EXPIRES_MIN), PULL_EXPIRES)
                self._link.call(
                    f"consume {self.queue}",
                    functools.partial(self._request, wanted=wanted, expires=expires),
                    reset=self._forget,
                )
            elif not self._link.connected:
                # Enough asked for, but the connection is down: wait for it as any call does
                # (BrokerUnavailable if it stays down), rather than for an answer that cannot
                # come.
                self._link.call(f"consume {self.queue}", self._ensure, reset=self._forget)
            with self._cond:
                remaining = deadline - time.monotonic()
                if not self._buffer and remaining > 0:
                    self._cond.wait(min(remaining, 1.0))
                if not self._buffer and deadline - time.monotonic() <= 0:
                    return None
        self._ask_ahead()
        return delivery

    def get_ready(self) -> Delivery | None:
        """A message already received (buffered); None otherwise: never a round trip."""
        if self._closed:
            return None
        with self._cond:
            delivery = self._next()
        self._ask_ahead()
        return delivery

    def hand_back(self) -> int:
        with self._cond:
            self._handed_back = True
            returned = [msg for _, msg in self._buffer]
            self._buffer.clear()
        if returned:
            self._quietly("handing back prefetched messages", _nak_all(returned))
        return len(returned)

    # -- settling ----------------------------------------------------------------------------------

    def ack(self, delivery: Delivery, *, notices: Sequence[tuple[str, bytes]] = ()) -> None:
        msg = self._take(delivery, "ack")
        if msg is not None:
            what = "ack with notices" if notices else "ack of a delivery"
            self._post(f"{what} of {self.queue}", [msg], notices)

    def ack_many(self, deliveries: Sequence[Delivery], *, defer: bool = False) -> None:
        messages = [m for m in (self._take(d, "ack") for d in deliveries) if m is not None]
        if messages:
            self._post(f"ack of {len(messages)} deliveries of {self.queue}", messages)

    def reject(self, delivery: Delivery, reason: str) -> None:
        log.warning(
            "queue %s: dead-lettering a message (%s): %r", self.queue, reason, delivery.body[:80]
        )
        msg = self._take(delivery, "reject")
        if msg is None:
            return
        dead = self._dead
        dead_id = f"dead:{msg.metadata.stream}:{msg.metadata.sequence.stream}"

        async def copy_then_ack(nc: Client, js: JetStreamContext) -> None:
            # The copy is confirmed before the original is acked: a failure in between leaves
            # both (the same id: one dead letter), never neither.
            await self._declared.stream(js, dead)
            await js.publish(dead.ready, msg.data, headers={MSG_ID_HEADER: dead_id})
            await self._refilled(_confirmed(msg))

        try:
            self._link.call(f"dead-letter a message of {self.queue}", copy_then_ack)
        except BrokerUnavailable as exc:
            self._lost(f"dead-lettering ({exc})")

    def requeue(self, delivery: Delivery, delay: timedelta | None = None) -> None:
        msg = self._take(delivery, "requeue")
        if msg is None:
            return
        seconds = delay.total_seconds() if delay is not None else 0.0
        # nats-py sends a plain -NAK (at once) for a delay of 0
        nak = msg.nak(delay=max(seconds, 0.0))
        self._quietly(f"requeue of a delivery of {self.queue}", self._refilled(nak))

    def extend(self, delivery: Delivery, visibility: timedelta) -> None:
        # +WPI starts the durable's AckWait (the broker's visibility) again; JetStream has no
        # per-delivery timeout, so ``visibility`` itself is not sent.
        with self._cond:
            msg = self._held.get(delivery.tag)
        if msg is not None:
            self._quietly(f"extending a delivery of {self.queue}", msg.in_progress())

    def close(self) -> None:
        if self._closed:
            return
        with self._cond:
            self._closed = True
            returned = [msg for _, msg in self._buffer] + list(self._held.values())
            self._buffer.clear()
            self._held.clear()
            self._cond.notify_all()
        with contextlib.suppress(RuntimeError):  # the broker closed first: its loop is gone
            self._unhook()
        # Posted settles end first; unacked deliveries go back at once (a NAK each); the
        # subscription goes, and with it the outstanding pull request (the server drops
        # requests nobody listens to).
        self._quietly(f"closing the consumer of {self.queue}", self._shut(returned))
        if self._on_close is not None:
            self._on_close()

    # -- on the event loop -------------------------------------------------------------------------

    async def _ensure(self, nc: Client, js: JetStreamContext) -> None:
        """The stream and durable consumer exist, and our inbox is subscribed on the current
        connection."""
        await self._declared.consumer(js, self._where)
        if self._subscription is None or self._generation != self._link.generation:
            self._inbox = nc.new_inbox()
            self._subscription = await nc.subscribe(f"{self._inbox}.*", cb=self._on_msg)
            self._generation = self._link.generation
            with self._cond:
                self._pull = None
        self._verify = False

    async def _request(
        self,
        nc: Client,
        js: JetStreamContext,
        *,
        wanted: int,
        expires: float,
        no_wait: bool = False,
    ) -> _Pull | None:
        """Send a pull request for ``wanted`` messages, lasting ``expires`` seconds; with
        ``no_wait`` the server answers at once with what is there (or 404), and goes on
        waiting for nothing. None when a request is still out."""
        if self._verify or self._generation != self._link.generation:
            await self._ensure(nc, js)
        with self._cond:
            if self._closed or self._pull is not None and not self._expired(self._pull):
                return None
            pull = self._pull = _Pull(next(self._numbers), wanted, time.monotonic() + expires)
        request: dict[str, object] = {"batch": wanted}
        if no_wait:
            request["no_wait"] = True  # (with an expiry the server would wait after all)
        else:
            request["expires"] = int(expires * 1e9)
        await nc.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{self._where.stream}.{self._where.consumer}",
            json.dumps(request).encode(),
            reply=self._reply(pull),
        )
        return pull

    async def _on_msg(self, msg: Msg) -> None:
        # A status comes on the request's own reply subject; a message comes under its own
        # subject, so it is counted against the request out (there is one at a time).
        status = (msg.headers or {}).get("Status")
        give_back = False
        with self._cond:
            pull = self._pull
            if status is not None:
                if pull is not None and msg.subject == self._reply(pull):
                    pull.answered = True
                    pull.answer.set()
                    if status in _STATUS_DONE:
                        self._pull = None
                        self._cond.notify_all()  # a waiting get asks again
                return
            if pull is not None:
                pull.answered = True
                pull.answer.set()
                pull.wanted -= 1
                if pull.wanted <= 0:
                    self._pull = None
            if self._closed or self._handed_back:
                give_back = True
            else:
                self._buffer.append((time.monotonic(), msg))
                self._cond.notify_all()
        if give_back:
            await msg.nak()

    def _on_reconnect(self) -> None:
        # A restarted server forgot our pull request: ask again on the next get.
        with self._cond:
            self._pull = None
            self._cond.notify_all()

    async def _shut(self, returned: list[Msg]) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._link.posted(), REQUEST_TIMEOUT / 2)
        for msg in returned:
            await msg.nak()
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            await subscription.unsubscribe()

    # -- helpers (under self._cond unless said otherwise) ------------------------------------------

    def _next(self) -> Delivery | None:
        """The next buffered message that is still ours, handed out."""
        now = time.monotonic()
        while self._buffer:
            received, msg = self._buffer.popleft()
            if now - received > self._stale_after:
                log.info(
                    "queue %s: a prefetched message waited %.0fs; it is delivered again",
                    self.queue,
                    now - received,
                )
                continue
            tag = next(self._tags)
            self._held[tag] = msg
            return Delivery(
                queue=self.queue,
                body=msg.data,
                tag=tag,
                redelivered=msg.metadata.num_delivered > 1,
            )
        return None

    def _room(self) -> int:
        """How many more to ask for now (0: enough in hand, or a request is still out)."""
        pull = self._pull
        if self._refilling or pull is not None and not self._expired(pull):
            return 0
        if pull is not None and not pull.answered:
            self._verify = True  # not even a 408: the durable consumer may be gone
        self._pull = None
        return max(self.prefetch - len(self._held) - len(self._buffer), 0)

    def _reply(self, pull: _Pull) -> str:
        """The subject the answer to ``pull`` comes on (its status; messages carry their own)."""
        return f"{self._inbox}.{pull.number}"

    def _expired(self, pull: _Pull) -> bool:
        return time.monotonic() > pull.expires_at + PULL_GRACE

    def _ask_ahead(self) -> None:
        """Keep a request out while there is room (not under the lock; never waits)."""
        with self._cond:
            if self._handed_back or self._closed or not self._link.connected:
                return
            wanted = self._room()
        if wanted:
            self._link.spawn(self._request_quietly(wanted))

    async def _refilled(self, settle: Coroutine[Any, Any, None]) -> None:
        """``settle`` (an ack, a nak), then ask for what it made room for, as RabbitMQ sends
        the next message of the prefetch once one is acked."""
        try:
            await settle
        finally:
            with self._cond:
                wanted = 0 if self._handed_back or self._closed else self._room()
                if not wanted:
                    self._cond.notify_all()  # a get waiting for this refill asks itself
        if not wanted:
            return
        # Ask for what is there now and wait for the answer (one round trip): the message
        # that fills the room is then in hand, not counted as waiting by a depth that follows.
        pull = await self._request_quietly(wanted, no_wait=True)
        if pull is not None:
            await _answered(pull)

    async def _request_quietly(self, wanted: int, *, no_wait: bool = False) -> _Pull | None:
        try:
            nc, js = await self._link.connection()
            return await self._request(
                nc,
                js,
                wanted=wanted,
                expires=PULL_EXPIRES_MIN if no_wait else PULL_EXPIRES,
                no_wait=no_wait,
            )
        except Exception as exc:  # noqa: BLE001 - the next get asks again, and reports
            log.debug("queue %s: asking ahead failed: %s", self.queue, explain(exc))
            return None

    def _take(self, delivery: Delivery, what: str) -> Msg | None:
        """The message behind ``delivery``, no longer held (not under the lock)."""
        with self._cond:
            msg = self._held.pop(delivery.tag, None)
        if msg is None:
            log.info(
                "queue %s: %s of a delivery this consumer does not hold (settled, or closed)",
                self.queue,
                what,
            )
        return msg

    def _post(
        self, what: str, messages: list[Msg], notices: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        """Hand the ack of ``messages`` (after ``notices``) to the loop, with the request that
        refills the prefetch (:meth:`_acked`), and return at once; a failure is logged (see
        :meth:`_quietly`)."""

        async def posted() -> None:
            try:
                # (asyncio.timeout, not wait_for: no task of its own per ack)
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    await self._acked(messages, notices)
            except Exception as exc:  # noqa: BLE001 - see _quietly
                self._lost(f"{what} ({explain(exc)})")

        with self._cond:
            self._refilling += 1
        try:
            self._link.post(posted())
        except BrokerUnavailable as exc:
            with self._cond:
                self._refilling -= 1
            self._lost(f"{what} ({exc})")

    async def _acked(self, messages: list[Msg], notices: Sequence[tuple[str, bytes]]) -> None:
        """(Posted: one of ``self._refilling``, which ends here.) Publish ``notices``, then ack
        ``messages`` and ask for what that makes room for. The last ack and the request are
        one protocol message, JetStream's ack-next (``+NXT``: the server applies the ack, then
        serves the request), not an ack waited for and a pull request after it: one message
        and one answer per unit of work instead of two round trips. Its answer is waited for
        (here, not by the caller), so the message that fills the room is in hand, not counted
        as waiting by a depth that follows. One connection carries everything, in order: the
        server has the notices when it sees the ack; nothing waits for their publish acks."""
        places = [place(queue) for queue, _ in notices]
        pull: _Pull | None = None
        try:
            nc, js = await self._link.connection()
            for where in places:
                if where.stream not in self._notice_places:
                    await self._declared.stream(js, where)
                    self._notice_places.add(where.stream)
            for where, (_, body) in zip(places, notices, strict=True):
                await nc.publish(where.ready, body)
            for msg in messages[:-1]:
                await msg.ack()  # the server handles one consumer's acks in order
        except BaseException:
            with self._cond:
                self._refilling -= 1
                self._cond.notify_all()
            raise
        else:
            with self._cond:
                self._refilling -= 1
                wanted = 0 if self._handed_back or self._closed else self._room()
                if wanted and not self._verify and self._generation == self._link.generation:
                    pull = self._pull = _Pull(
                        next(self._numbers), wanted, time.monotonic() + PULL_EXPIRES_MIN
                    )
                elif not wanted:
                    self._cond.notify_all()  # a get waiting for this refill asks itself
        if pull is None:
            # Nothing to ask for, or the subscription must be made again first: a plain ack,
            # then (if room is left) a request on its own.
            await self._refilled(_confirmed(messages[-1]))
            return
        request = json.dumps({"batch": pull.wanted, "no_wait": True}).encode()
        try:
            await nc.publish(messages[-1].reply, b"+NXT " + request, reply=self._reply(pull))
        except BaseException:
            with self._cond:
                if self._pull is pull:
                    self._pull = None  # never sent: a get asks again
                    self._cond.notify_all()
            raise
        await _answered(pull)

    def _quietly(self, what: str, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run ``coroutine`` (an ack, a nak) once; a failure is logged, not raised: the server
        delivers the message again after the visibility timeout. nats-py keeps what is sent
        while it reconnects and sends it once back."""
        try:
            self._link.run(coroutine, REQUEST_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            self._lost(f"{what} ({explain(exc)})")

    def _lost(self, what: str) -> None:
        log.warning(
            "nats %s: queue %s: %s failed; the message comes again after the visibility timeout",
            self._link.where,
            self.queue,
            what,
        )

    def _forget(self) -> None:
        self._declared.forget(self._where)
        self._verify = True


async def _confirmed(msg: Msg) -> None:
    """Ack ``msg`` and wait for the server's answer: once it comes, the message is gone from
    the stream (a ``depth`` or ``purge`` that follows sees it gone)."""
    await msg.ack_sync(timeout=REQUEST_TIMEOUT)


async def _answered(pull: _Pull) -> None:
    """Wait up to :data:`REFILL_WAIT` for the first answer to ``pull``."""
    if pull.answer.is_set():
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(REFILL_WAIT):
            await pull.answer.wait()


async def _nak_all(messages: list[Msg]) -> None:
    for msg in messages:
        await msg.nak()
