"""The broker interface: how work travels. Two backends: RabbitMQ (``mq.rabbitmq``, pika) and the
embedded queue kept in the store (``mq.store_queue``). ``tests/contract/test_broker.py`` runs the
same suite against both.

Rules every backend obeys:

- Queues are durable and declared before the first publish (``publish`` declares on first use), so
  a message published before its consumer ever ran is kept, never dropped.
- ``publish``/``publish_many`` return only once the broker has durably accepted the messages
  (publisher confirms for RabbitMQ, a committed write for the store queue).
- Delivery is at-least-once: a delivery that is neither acked nor rejected (the consumer died, its
  connection dropped, the visibility timeout passed) is delivered again. Each delivery goes to
  exactly one consumer at a time. Handlers are idempotent.
- Within one queue, messages ready at the same time are delivered in publish order to a single
  consumer (no ordering promise across redeliveries or delays).
- ``reject`` moves a message to the queue's dead-letter queue (``mq.message.dead_letter_queue``).
- Connection failures are retried with backoff; what cannot be done raises
  :class:`~db.errors.BrokerUnavailable`.

A :class:`Consumer` belongs to the thread that opened it (pika connections are not thread-safe):
a worker with concurrency N opens N consumers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from db.errors import BrokerUnavailable

if TYPE_CHECKING:
    from types import TracebackType

    from db.models import QueueSettled, QueueSettlement


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivered message; hand it back to the consumer that got it to ack, reject or requeue."""

    queue: str
    body: bytes
    #: Backend handle (delivery tag, message id); meaningless to callers.
    tag: object
    #: True when the message was delivered before and not acked.
    redelivered: bool = False


class Consumer(ABC):
    """Receives the messages of one queue, with manual acknowledgement."""

    @abstractmethod
    def get(self, timeout: float) -> Delivery | None:
        """The next message, waiting up to ``timeout`` seconds; None if none came.

        Raises:
            BrokerUnavailable: the broker stayed unreachable through the reconnect attempts.
        """

    def get_ready(self) -> Delivery | None:
        """A message that is here already, or None: never waits for one and never waits to
        reconnect. A worker looks with it, as a run ends, for the next unit of work to claim in
        the commit that records the outcome; looking must neither delay nor prevent that record.

        This default is :meth:`get` with no wait, a broker failure counting as nothing ready
        (the next :meth:`get` meets it again).
        """
        try:
            return self.get(0)
        except BrokerUnavailable:
            return None

    @abstractmethod
    def ack(self, delivery: Delivery, *, notices: Sequence[tuple[str, bytes]] = ()) -> None:
        """The message is handled: remove it for good (call only after the durable write).

        ``notices`` are (queue, body) messages to publish on the way out, before the ack: a
        worker telling the scheduler about the outcome it has just stored. They reach the broker
        ahead of the ack, but the call does not wait for the broker to make them durable
        (RabbitMQ publishes them on the consumer's own channel without a confirm), so a notice
        may be lost with a crashing broker after the ack. Use notices only for hints whose truth
        is in the store; :meth:`Broker.publish` is the durable way.

        Raises:
            BrokerUnavailable: the store queue's store stayed unavailable (RabbitMQ: a lost
                connection is logged instead, and the broker delivers the message again).
        """

    def ack_many(self, deliveries: Sequence[Delivery], *, defer: bool = False) -> None:
        """:meth:`ack` several deliveries at once (the scheduler acks the status messages it
        holds together): one store write on the store queue. This default acks each.

        With ``defer`` the acks may wait for this consumer's next claim and be written in its
        transaction (the store queue: one commit for both), at the latest by the next
        :meth:`get` that claims or finds nothing, or by :meth:`close`. Meanwhile they are
        settled for this consumer; only a crash before they are written delivers them again,
        so defer only messages whose redelivery is harmless (hints such as status messages).

        Raises:
            BrokerUnavailable: as :meth:`ack`.
        """
        for delivery in deliveries:
            self.ack(delivery)

    @abstractmethod
    def reject(self, delivery: Delivery, reason: str) -> None:
        """The message cannot be handled (malformed, names nothing): dead-letter it."""

    @abstractmethod
    def requeue(self, delivery: Delivery, delay: timedelta | None = None) -> None:
        """Give the message back, to be delivered again now or after ``delay``."""

    @abstractmethod
    def extend(self, delivery: Delivery, visibility: timedelta) -> None:
        """Keep holding a long-running delivery (no-op where the broker tracks the consumer's
        connection instead of a visibility timeout)."""

    def hand_back(self) -> int:
        """Give back the messages received ahead (prefetched) but not yet returned by
        :meth:`get`, and receive no more until the next :meth:`get`: a consumer about to be busy
        for long lets idle consumers take them. Deliveries already returned by :meth:`get` stay
        held. Returns how many went back; they come again marked ``redelivered``.

        This default is for a consumer that never receives ahead: it has nothing to give back.

        Raises:
            BrokerUnavailable: the store queue's store stayed unavailable (RabbitMQ: a lost
                connection gives them back anyway, and is logged).
        """
        return 0

    @abstractmethod
    def close(self) -> None:
        """Stop consuming; unacked deliveries go back to the queue."""

    def __enter__(self) -> Consumer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SettlingConsumer(Consumer):
    """A consumer of a broker kept in the store (the store queue): besides :meth:`ack`, it can
    hand the writes that ack a delivery to the caller's own store write, so that a worker
    records an outcome and acks its message in one commit. A worker takes that path only with
    a consumer of this kind; every other consumer acks on its own after the outcome's commit.
    """

    @abstractmethod
    def settlement(
        self,
        delivery: Delivery,
        *,
        notices: Sequence[tuple[str, bytes]] = (),
        refill: bool = False,
    ) -> QueueSettlement:
        """The queue writes that ack ``delivery`` (and put ``notices``) inside the caller's own
        store write: the caller commits them with its outcome
        (:func:`db.state_change.settle_uows`), then calls :meth:`settled`. One commit instead of
        two, and the ack can never be lost between them. With ``refill`` the same commit also
        claims the messages that ``prefetch`` leaves room for."""

    @abstractmethod
    def settled(self, delivery: Delivery, settlement: QueueSettlement, done: QueueSettled) -> None:
        """Take note of a committed :meth:`settlement`: ``delivery`` is acked, the messages
        ``done`` claimed are in hand for :meth:`get`."""

    @abstractmethod
    def take(self, message_id: str) -> Delivery | None:
        """The delivery of the message ``message_id`` if it is in hand and not handed out yet,
        handed out now (as :meth:`get` would, out of turn); else None."""


class Broker(ABC):
    """Publishes to and opens consumers on durable queues."""

    #: ``rabbitmq`` or ``store``, for health checks and logs.
    backend: str = "abstract"
    #: True when a delayed message reaches an idle consumer in any process within milliseconds
    #: of its time (the store queue: each message keeps its availability time, and an idle
    #: consumer sleeps until the earliest one). The scheduler then publishes a freerun fire
    #: prepared ahead at once, with the delay to its instant, instead of holding it until then.
    exact_delay: bool = False

    @abstractmethod
    def declare(self, queue: str) -> None:
        """Create ``queue`` and its dead-letter queue if missing. Idempotent."""

    @abstractmethod
    def publish(self, queue: str, body: bytes, *, delay: timedelta | None = None) -> None:
        """Publish one durable message, delivered after ``delay`` if given.

        Raises:
            BrokerUnavailable: it could not be durably accepted after retries.
        """

    @abstractmethod
    def publish_many(self, messages: Iterable[tuple[str, bytes]]) -> None:
        """Publish (queue, body) pairs, confirmed as a batch (one round trip, not one each).

        Raises:
            BrokerUnavailable: they could not be durably accepted after retries.
        """

    @abstractmethod
    def consumer(self, queue: str, *, prefetch: int = 1) -> Consumer:
        """Open a consumer on ``queue`` (declared if missing) for the calling thread."""

    @abstractmethod
    def depth(self, queue: str) -> int:
        """Messages waiting in ``queue`` (ready or delayed, not counting those being handled)."""

    def depths(self, queues: Iterable[str]) -> dict[str, int]:
        """:meth:`depth` of several queues (``/metrics`` reads every process queue). This
        default asks one queue at a time; the store queue reads them together."""
        return {queue: self.depth(queue) for queue in dict.fromkeys(queues)}

    @abstractmethod
    def purge(self, queue: str) -> int:
        """Drop every message of ``queue``; returns how many."""

    @abstractmethod
    def delete(self, queue: str) -> None:
        """Remove ``queue`` and its dead-letter (and delay) queues (tests clean up with it)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections this broker opened."""

    def describe(self) -> str:
        """The broker's address with any password masked."""
        return self.backend

    def __enter__(self) -> Broker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
