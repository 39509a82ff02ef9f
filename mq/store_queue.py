"""The embedded broker (``broker_uri = store``, the default): queues kept in the store.

Messages are rows (documents) of the store's queue (the ``QueueStore.queue_*`` methods, :class:`db.store.QueueStore`), so the broker
needs no server of its own and a publish is durable once its write commits. A delivery is a
claim that expires after the visibility timeout: a consumer that dies, or hangs longer than that
without calling :meth:`StoreConsumer.extend`, loses its messages to the next claim, which counts
them as redelivered. The store makes each claim atomic across threads and OS processes (see
``db/backends/*/queue.py``), so each delivery goes to exactly one consumer at a time.

There is nothing to push messages to a consumer, so consumers poll, adaptively: while messages
flow a consumer claims again at once; when the queue is empty it pauses 2 ms, doubling up to
100 ms. A publish through the same broker object also wakes that queue's waiting consumers at
once (a :class:`threading.Condition`), so dispatch within one process takes milliseconds; other
processes see a message published for now within one pause.

An idle consumer does not claim blindly: each look is one read of the earliest availability
among the queue's unclaimed messages (``QueueStore.queue_next_available``), and it sleeps until
that time when it comes before the end of its pause, then claims. A delayed message (a freerun
fire prepared ahead and published with the delay to its instant, a retry, a delayed task) is
therefore claimed within milliseconds of its time by a consumer in any process or on any host,
as long as it was published at least one pause (100 ms) before that time. Idle, a look is a
plain read, never a write, so idle consumers cost less than a claim each pause.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from db.backoff import backoff
from db.clock import SystemClock
from db.errors import BrokerUnavailable, InvalidInput, StoreUnavailable
from db.models import QueueSettlement
from mq.broker import Broker, Delivery, SettlingConsumer
from mq.message import dead_letter_queue, valid_queue_name

if TYPE_CHECKING:
    from datetime import datetime

    from db.clock import Clock
    from db.models import QueuedMessage, QueueSettled
    from db.store import QueueStore

log = logging.getLogger(f"tactus.{__name__}")

T = TypeVar("T")

#: How long a delivery stays claimed before it is delivered again (unless extended).
DEFAULT_VISIBILITY = timedelta(seconds=60)
#: An idle consumer's first pause between empty polls (seconds); doubled after each one.
POLL_START = 0.002
#: An idle consumer's longest pause between looks (seconds): the latency across processes of a
#: message published for now (one published ahead is claimed at its time).
POLL_CAP = 0.1
#: Longest queue name: the store keys queues in 191 characters, and ``.dead`` is appended.
MAX_QUEUE_NAME = 180
#: Store calls are tried this often (pauses from ``db.backoff``) before BrokerUnavailable.
STORE_ATTEMPTS = 4
#: First pause before trying a failed store call again; doubles, with jitter.
STORE_RETRY_BASE = timedelta(milliseconds=250)


def check_queue_name(queue: object) -> str:
    """:func:`mq.message.valid_queue_name` with this broker's ``MAX_QUEUE_NAME``."""
    return valid_queue_name(queue, MAX_QUEUE_NAME)


def _check_visibility(visibility: timedelta) -> timedelta:
    if not isinstance(visibility, timedelta) or visibility <= timedelta(0):
        raise InvalidInput("visibility", f"must be a positive timedelta (got {visibility!r})")
    return visibility


def _check_delay(delay: timedelta | None) -> timedelta:
    if delay is None:
        return timedelta(0)
    if not isinstance(delay, timedelta) or delay < timedelta(0):
        raise InvalidInput("delay", f"must be a timedelta of zero or more (got {delay!r})")
    return delay


class _Wakeup:
    """Publishes through one broker wake the consumers of that queue waiting on it."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        #: Queue -> publishes seen so far; a waiter sleeps until its queue's count moves.
        self._published: Counter[str] = Counter()

    def mark(self, queue: str) -> int:
        """The queue's publish count, read before polling so no later publish is missed."""
        with self._condition:
            return self._published[queue]

    def notify(self, queues: Iterable[str]) -> None:
        with self._condition:
            for queue in queues:
                self._published[queue] += 1
            self._condition.notify_all()

    def wait(self, queue: str, mark: int, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds; True if a publish to ``queue`` came after ``mark``."""
        with self._condition:
            return self._condition.wait_for(lambda: self._published[queue] != mark, timeout)


class StoreBroker(Broker):
    """The broker on the store's embedded queue; see the module docstring.

    Any thread may publish; each consumer belongs to the thread that opened it. Share one broker
    per process so publishes wake that process's consumers.

    Args:
        uri: ``store`` (the ``broker_uri`` setting).
        store: holds the queues; the caller owns and closes it.
        visibility: how long a delivery stays claimed without an ack or an extend.
        clock: time source for delays and claims (tests use a fake one).

    Raises:
        InvalidInput: ``uri`` is not ``store`` (``broker_uri``), or ``visibility`` not positive.
    """

    backend = "store"
    exact_delay = True  # see the module doc: an idle consumer sleeps until the next message

    def __init__(
        self,
        uri: str = "store",
        *,
        store: QueueStore,
        visibility: timedelta = DEFAULT_VISIBILITY,
        clock: Clock | None = None,
        attempts: int = STORE_ATTEMPTS,
    ) -> None:
        if uri != "store" and urlsplit(uri).scheme.lower() != "store":
            raise InvalidInput("broker_uri", f"{uri!r} is not the store queue (use store)")
        if attempts < 1:
            raise InvalidInput("attempts", f"must be at least 1 (got {attempts})")
        self.attempts = attempts
        self.store = store
        self.visibility = _check_visibility(visibility)
        self.clock: Clock = clock or SystemClock()
        self.wakeup = _Wakeup()

    def describe(self) -> str:
        return f"store queue in {self.store.describe()}"

    def declare(self, queue: str) -> None:
        """Nothing to create (a queue exists while it holds messages); checks the name."""
        check_queue_name(queue)

    def publish(self, queue: str, body: bytes, *, delay: timedelta | None = None) -> None:
        check_queue_name(queue)
        at = self.clock.now() + _check_delay(delay)
        self.call(
            f"publish to {queue}", lambda: self.store.queue_put(queue, [body], available_at=at)
        )
        self.wakeup.notify([queue])

    def publish_many(self, messages: Iterable[tuple[str, bytes]]) -> None:
        """One write per queue, in publish order (a failure leaves earlier queues' writes)."""
        by_queue: dict[str, list[bytes]] = {}
        for queue, body in messages:
            by_queue.setdefault(check_queue_name(queue), []).append(body)
        now = self.clock.now()
        for queue, bodies in by_queue.items():
            self.call(
                f"publish {len(bodies)} message(s) to {queue}",
                lambda q=queue, b=bodies: self.store.queue_put(q, b, available_at=now),
            )
        self.wakeup.notify(by_queue)

    def consumer(self, queue: str, *, prefetch: int = 1) -> StoreConsumer:
        return StoreConsumer(self, check_queue_name(queue), prefetch=prefetch)

    def depth(self, queue: str) -> int:
        now = self.clock.now()
        counts = self.call(f"depth of {queue}", lambda: self.store.queue_depth(queue, now=now))
        return counts["ready"] + counts["delayed"]

    def depths(self, queues: Iterable[str]) -> dict[str, int]:
        names = [check_queue_name(queue) for queue in dict.fromkeys(queues)]
        now = self.clock.now()
        counts = self.call(
            f"depth of {len(names)} queues", lambda: self.store.queue_depths(names, now=now)
        )
        return {name: c["ready"] + c["delayed"] for name, c in counts.items()}

    def purge(self, queue: str) -> int:
        purged = self.call(f"purge {queue}", lambda: self.store.queue_purge(queue))
        log.info("%s: purged %d message(s) of %s", self.describe(), purged, queue)
        return purged

    def delete(self, queue: str) -> None:
        """Drop the messages of ``queue`` and of its dead-letter queue (nothing else exists)."""
        for name in (queue, dead_letter_queue(queue)):
            self.call(f"delete {name}", lambda n=name: self.store.queue_purge(n))

    def close(self) -> None:
        """Nothing to release: the store belongs to the caller; consumers close themselves."""

    def call(self, what: str, action: Callable[[], T]) -> T:
        """Run a store call, trying again while the store is unavailable.

        Raises:
            BrokerUnavailable: the store stayed unavailable through ``STORE_ATTEMPTS`` tries.
        """
        attempt = 1
        while True:
            try:
                return action()
            except StoreUnavailable as exc:
                if attempt >= self.attempts or not exc.transient:
                    raise BrokerUnavailable(
                        f"{self.describe()}: {what} failed: {exc}", transient=exc.transient
                    ) from exc
                pause = backoff(STORE_RETRY_BASE, attempt, jitter=0.2)
                # quiet: a daemon's store waits out outages itself (db.outage) and logs them once
                log.debug(
                    "%s: %s failed (%s); trying again in %.2f s (attempt %d of %d)",
                    self.describe(),
                    what,
                    exc,
                    pause.total_seconds(),
                    attempt + 1,
                    self.attempts,
                )
                time.sleep(pause.total_seconds())
                attempt += 1


class StoreConsumer(SettlingConsumer):
    """Claims messages of one queue for one thread, up to ``prefetch`` unsettled at a time.

    A delivery's tag is its message id; ack, reject, requeue and extend are compare-and-set on
    this consumer's claim, so settling a delivery whose claim was lost (it expired and another
    consumer took the message) changes nothing and is logged.
    """

    def __init__(self, broker: StoreBroker, queue: str, *, prefetch: int = 1) -> None:
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
            raise InvalidInput("prefetch", f"must be a positive integer (got {prefetch!r})")
        self.queue = queue
        self.prefetch = prefetch
        #: Names this consumer's claims: unique per consumer, readable in the store.
        self.consumer_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"
        self._broker = broker
        self._store = broker.store
        #: Claimed and not yet handed out, oldest first.
        self._buffer: deque[QueuedMessage] = deque()
        #: Handed out and not yet settled, by id.
        self._held: dict[str, QueuedMessage] = {}
        #: Acked with ``defer``: deleted in the transaction of the next claim.
        self._deferred: list[str] = []
        self._pause = POLL_START
        #: Claim without a look first: messages came at the last claim, a publish through this
        #: broker woke us, or the next message's time has come; False after an empty claim.
        self._claim_next = True
        self._closed = False

    def get(self, timeout: float) -> Delivery | None:
        if self._closed:
            raise BrokerUnavailable(f"consumer of {self.queue} is closed", transient=False)
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            message = self._next_buffered()
            if message is not None:
                return self._hand_out(message)
            mark = self._broker.wakeup.mark(self.queue)
            # Idle, a read tells when the next message comes (the claim is a write); busy, woken
            # or at that time, claim at once.
            ahead = 0.0 if self._claim_next else self._ahead()
            if ahead == 0.0:
                if self._claim():
                    continue
                self._claim_next, ahead = False, None  # nothing to claim: look before claiming
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            pause = self._pause if ahead is None else min(self._pause, ahead)
            if self._broker.wakeup.wait(self.queue, mark, min(pause, remaining)):
                self._pause, self._claim_next = POLL_START, True
            else:
                # slept until the next message's time: claim it now, with no look first
                self._claim_next = ahead is not None and ahead <= min(self._pause, remaining)
                self._pause = min(self._pause * 2, POLL_CAP)

    def ack(self, delivery: Delivery, *, notices: Sequence[tuple[str, bytes]] = ()) -> None:
        notices = [(check_queue_name(queue), body) for queue, body in notices]
        message_id = self._settle(delivery)
        now = self._broker.clock.now()
        # The notices are written in the ack's own transaction: one commit for both.
        self._on_claim(
            "ack",
            message_id,
            lambda: self._store.queue_ack(
                message_id, self.consumer_id, then_put=notices, available_at=now
            ),
        )
        if notices:
            self._broker.wakeup.notify({queue for queue, _ in notices})

    def take(self, message_id: str) -> Delivery | None:
        for message in self._buffer:
            if message.id == message_id:
                self._buffer.remove(message)
                return self._hand_out(message)
        return None

    def _hand_out(self, message: QueuedMessage) -> Delivery:
        self._held[message.id] = message
        return Delivery(
            queue=self.queue,
            body=message.body,
            tag=message.id,
            redelivered=message.deliveries > 1,
        )

    def settlement(
        self,
        delivery: Delivery,
        *,
        notices: Sequence[tuple[str, bytes]] = (),
        refill: bool = False,
    ) -> QueueSettlement:
        """The ack of ``delivery``, the ``notices`` and, with ``refill``, the claim of what
        ``prefetch`` leaves room for once it is acked: for the caller's store write."""
        if self._closed:
            raise BrokerUnavailable(f"consumer of {self.queue} is closed", transient=False)
        message_id = str(delivery.tag)
        put = tuple((check_queue_name(queue), body) for queue, body in notices)
        room = 0
        if refill:
            still_held = len(self._held) - (message_id in self._held)
            room = max(self.prefetch - still_held - len(self._buffer), 0)
        return QueueSettlement(
            consumer=self.consumer_id,
            ack=(message_id,),
            put=put,
            claim_queue=self.queue if room else None,
            claim_limit=room,
            now=self._broker.clock.now(),
            visibility=self._broker.visibility,
        )

    def settled(self, delivery: Delivery, settlement: QueueSettlement, done: QueueSettled) -> None:
        message_id = self._settle(delivery)
        if done.acked < len(settlement.ack):
            self._claim_lost("ack", message_id)
        self._take(done.claimed)
        if settlement.put:
            self._broker.wakeup.notify({queue for queue, _ in settlement.put})

    def ack_many(self, deliveries: Sequence[Delivery], *, defer: bool = False) -> None:
        ids = [self._settle(delivery) for delivery in deliveries]
        if not ids:
            return
        if defer:
            self._deferred.extend(ids)  # deleted with the next claim (see _claim)
            return
        acked = self._call(
            f"ack {len(ids)} messages", lambda: self._store.queue_ack_many(ids, self.consumer_id)
        )
        if acked < len(ids):
            log.warning(
                "queue %s: %d of %d acks by %s did nothing: their claims were lost (the "
                "visibility timeout passed and another consumer has them, or they were purged)",
                self.queue,
                len(ids) - acked,
                len(ids),
                self.consumer_id,
            )

    def reject(self, delivery: Delivery, reason: str) -> None:
        message_id = self._settle(delivery)
        dead = dead_letter_queue(self.queue)
        log.warning(
            "queue %s: dead-lettering message %s to %s (%s): %r",
            self.queue,
            message_id,
            dead,
            reason,
            delivery.body[:80],
        )
        self._release(message_id, "reject", timedelta(0), to_queue=dead)

    def requeue(self, delivery: Delivery, delay: timedelta | None = None) -> None:
        message_id = self._settle(delivery)
        self._release(message_id, "requeue", _check_delay(delay))

    def extend(self, delivery: Delivery, visibility: timedelta) -> None:
        until = self._broker.clock.now() + _check_visibility(visibility)
        self._renew(str(delivery.tag), until)

    def hand_back(self) -> int:
        """Release the buffered claims (the store queue claims only inside :meth:`get`, so none
        come until the next one)."""
        buffered = [m.id for m in self._buffer]
        self._buffer.clear()
        now = self._broker.clock.now()
        released = sum(
            self._on_claim(
                "hand back",
                message_id,
                lambda m=message_id: self._store.queue_release(
                    m, self.consumer_id, available_at=now
                ),
            )
            for message_id in buffered
        )
        if released:
            self._broker.wakeup.notify([self.queue])
        return released

    def close(self) -> None:
        """Give back every claim not acked: buffered ones and deliveries still held."""
        if self._closed:
            return
        self._closed = True
        unsettled = [m.id for m in self._buffer] + list(self._held)
        deferred, self._deferred = self._deferred, []
        self._buffer, self._held = deque(), {}
        now = self._broker.clock.now()
        try:
            if deferred:
                self._store.queue_ack_many(deferred, self.consumer_id)
            for message_id in unsettled:
                self._store.queue_release(message_id, self.consumer_id, available_at=now)
        except StoreUnavailable as exc:
            log.warning(
                "queue %s: %s kept %d claim(s) on close (%s); they expire after the visibility",
                self.queue,
                self.consumer_id,
                len(unsettled),
                exc,
            )
        if unsettled:
            self._broker.wakeup.notify([self.queue])

    def _claim(self) -> bool:
        """Claim as many messages as prefetch allows into the buffer; whether any came."""
        room = self.prefetch - len(self._held) - len(self._buffer)
        if room <= 0:
            return False
        now = self._broker.clock.now()
        if self._deferred:
            claimed = self._claim_acking(now, room)
        else:
            claimed = self._call(
                f"claim from {self.queue}",
                lambda: self._store.queue_claim(
                    self.queue,
                    self.consumer_id,
                    now=now,
                    visibility=self._broker.visibility,
                    limit=room,
                ),
            )
        self._take(claimed)
        return bool(claimed)

    def _ahead(self) -> float | None:
        """Seconds until a message of the queue can be claimed (0.0: now), None when none
        waits: the earliest availability of the unclaimed ones (one read, no write)."""
        now = self._broker.clock.now()
        at = self._call(
            f"look at {self.queue}",
            lambda: self._store.queue_next_available(self.queue, now=now),
        )
        if at is None:
            return None
        # from the end of the read (about a millisecond), so the sleep ends at the time itself
        return max((at - self._broker.clock.now()).total_seconds(), 0.0)

    def _take(self, claimed: Sequence[QueuedMessage]) -> None:
        """Messages claimed for this consumer: in hand for :meth:`get`, and polling goes on
        at its quickest while they come."""
        if claimed:
            self._buffer.extend(claimed)
            self._pause = POLL_START
            self._claim_next = True

    def _claim_acking(self, now: datetime, room: int) -> list[QueuedMessage]:
        """The claim with the deferred acks in its transaction (:meth:`ack_many` ``defer``)."""
        ids, self._deferred = self._deferred, []
        settlement = QueueSettlement(
            consumer=self.consumer_id,
            ack=tuple(ids),
            claim_queue=self.queue,
            claim_limit=room,
            now=now,
            visibility=self._broker.visibility,
        )
        try:
            _, done = self._call(
                f"ack {len(ids)} and claim from {self.queue}",
                lambda: self._store.settle_uows([], settlement),
            )
        except BrokerUnavailable:
            self._deferred = ids + self._deferred  # written with a later claim, or on close
            raise
        return list(done.claimed)

    def _next_buffered(self) -> QueuedMessage | None:
        """The oldest buffered message still ours; a claim less than half left is renewed."""
        while self._buffer:
            message = self._buffer.popleft()
            now = self._broker.clock.now()
            if message.claimed_until is None or (
                message.claimed_until - now >= self._broker.visibility / 2
            ):
                return message
            if self._renew(message.id, now + self._broker.visibility):
                return message
        return None

    def _settle(self, delivery: Delivery) -> str:
        self._held.pop(str(delivery.tag), None)
        return str(delivery.tag)

    def _renew(self, message_id: str, until: datetime) -> bool:
        return self._on_claim(
            "extend",
            message_id,
            lambda: self._store.queue_extend(message_id, self.consumer_id, until=until),
        )

    def _release(
        self, message_id: str, what: str, delay: timedelta, *, to_queue: str | None = None
    ) -> None:
        at = self._broker.clock.now() + delay
        released = self._on_claim(
            what,
            message_id,
            lambda: self._store.queue_release(
                message_id, self.consumer_id, available_at=at, to_queue=to_queue
            ),
        )
        if released and not delay:
            self._broker.wakeup.notify([to_queue or self.queue])

    def _on_claim(self, what: str, message_id: str, action: Callable[[], bool]) -> bool:
        """Run a compare-and-set on this consumer's claim; log when the claim was lost."""
        if self._call(f"{what} {message_id}", action):
            return True
        self._claim_lost(what, message_id)
        return False

    def _claim_lost(self, what: str, message_id: str) -> None:
        log.warning(
            "queue %s: %s of message %s by %s did nothing: the claim was lost (the visibility "
            "timeout passed and another consumer has it, or it was purged)",
            self.queue,
            what,
            message_id,
            self.consumer_id,
        )

    def _call(self, what: str, action: Callable[[], T]) -> T:
        return self._broker.call(f"queue {self.queue}: {what}", action)
