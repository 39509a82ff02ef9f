"""A RabbitMQ consumer: one connection and channel for the thread that owns it."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from db.errors import BrokerUnavailable, InvalidInput
from mq.broker import Consumer, Delivery
from mq.rabbitmq._link import BROKER_ERRORS, FAILURES, Link, explain
from mq.rabbitmq._publisher import (
    DELAY_QUEUE_GRACE,
    PERSISTENT,
    Outgoing,
    TxPublisher,
    declare_queue,
    delay_millis,
)
from mq.retry import RetryPolicy

if TYPE_CHECKING:
    from pika.adapters.blocking_connection import BlockingChannel

log = logging.getLogger(f"tactus.{__name__}")


class RabbitConsumer(Consumer):
    """Consumes one queue with manual acks and ``prefetch`` unacked messages in flight.

    After a lost connection the next :meth:`get` reconnects (with the broker's retry policy) and
    consumes again; deliveries received on the lost connection can no longer be acked, and the
    broker delivers them again (``redelivered=True``). ``ack``, ``reject`` and ``requeue`` of such
    a stale delivery do nothing.
    """

    def __init__(
        self,
        uri: str,
        queue: str,
        *,
        prefetch: int = 1,
        retry: RetryPolicy | None = None,
        delay_queue_grace: timedelta = DELAY_QUEUE_GRACE,
        on_delay_queue: Callable[[str, str], None] | None = None,
    ) -> None:
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
            raise InvalidInput("prefetch", f"must be a positive integer (got {prefetch!r})")
        self.queue = queue
        self.prefetch = prefetch
        self._retry = retry or RetryPolicy()
        self._link = Link(uri, f"consumer {queue}")
        # requeue(delay) publishes its copy on a second channel of this consumer's connection.
        self._publisher = TxPublisher(
            self._link, grace=delay_queue_grace, on_delay_queue=on_delay_queue
        )
        self._buffer: deque[Delivery] = deque()
        #: The channel's consumer; None after :meth:`hand_back` cancelled it.
        self._consumer_tag: str | None = None
        #: Queues declared for notices on this connection (see :meth:`ack`).
        self._notice_queues: set[str] = set()
        self._channel: BlockingChannel | None = None
        #: Counts the channels consumed on; a delivery's tag is (epoch, delivery tag), so a tag
        #: from a lost channel is recognised and never sent on its successor.
        self._epoch = 0
        self._closed = False
        self._retry.run(
            FAILURES, self._link.where, f"consume {queue}", self._open, lambda exc: self._drop()
        )

    def get(self, timeout: float) -> Delivery | None:
        deadline = time.monotonic() + max(timeout, 0.0)
        losses = 0
        while True:
            if self._buffer:
                return self._buffer.popleft()
            remaining = deadline - time.monotonic()
            channel = self._ensure_open()
            if self._consumer_tag is None:
                self._consume_again(channel)
                continue
            try:
                self._link.connection.process_data_events(time_limit=max(remaining, 0.0))
            except BROKER_ERRORS as exc:
                losses += 1
                if losses > self._retry.attempts:
                    self._drop()
                    raise BrokerUnavailable(
                        f"RabbitMQ at {self._link.where}: consuming {self.queue} keeps failing: "
                        f"{explain(exc)}"
                    ) from exc
                self._lost("consuming", exc)
                continue
            if not channel.is_open:
                # The broker closed only this channel (consumer timeout, for one): the
                # connection's event loop does not raise for that, so look; the next pass
                # opens a new channel.
                log.warning("queue %s: the broker closed the consumer's channel", self.queue)
                self._drop()
            if not self._buffer and remaining <= 0:
                return None

    def get_ready(self) -> Delivery | None:
        """A delivery received ahead, or one already arrived on the socket; None otherwise,
        and after :meth:`hand_back` (consuming again would cost a round trip) or with the
        connection down (the next :meth:`get` reconnects)."""
        if self._buffer:
            return self._buffer.popleft()
        channel = self._channel
        if (
            self._closed
            or self._consumer_tag is None
            or channel is None
            or not channel.is_open
            or not self._link.is_open
        ):
            return None
        try:
            self._link.connection.process_data_events(time_limit=0)
        except BROKER_ERRORS as exc:
            self._lost("looking for a delivery", exc)
            return None
        return self._buffer.popleft() if self._buffer else None

    def hand_back(self) -> int:
        channel = self._channel
        if self.prefetch == 1 or channel is None or not channel.is_open:
            # Nothing comes ahead of a prefetch of 1; a lost channel gives everything back.
            self._buffer.clear()
            return 0
        try:
            if self._consumer_tag is not None:
                # No more deliveries until the next get() consumes again. (A per-consumer
                # prefetch cannot be lowered on a live consumer.) pika rejects, requeueing, what
                # the broker sent before it saw the cancel.
                channel.basic_cancel(self._consumer_tag)
                self._consumer_tag = None
            returned = list(self._buffer)
            self._buffer.clear()
            for delivery in returned:
                channel.basic_reject(delivery.tag[1], requeue=True)
        except BROKER_ERRORS as exc:
            self._lost("handing back prefetched deliveries", exc)
            return 0
        return len(returned)

    def ack(self, delivery: Delivery, *, notices: Sequence[tuple[str, bytes]] = ()) -> None:
        if not notices:
            self._settle(delivery, "ack", lambda channel, tag: channel.basic_ack(tag))
            return

        def publish_then_ack(channel: BlockingChannel, tag: int) -> None:
            # The same channel carries both, and a channel's methods take effect in order: the
            # broker has routed the notices when it sees the ack. Nothing waits for a confirm.
            for queue, body in notices:
                if queue not in self._notice_queues:
                    declare_queue(channel, queue)
                    self._notice_queues.add(queue)
                channel.basic_publish("", queue, body, PERSISTENT, mandatory=True)
            channel.basic_ack(tag)

        self._settle(delivery, "ack", publish_then_ack)

    def reject(self, delivery: Delivery, reason: str) -> None:
        log.warning(
            "queue %s: dead-lettering a message (%s): %r", self.queue, reason, delivery.body[:80]
        )
        self._settle(
            delivery, "reject", lambda channel, tag: channel.basic_reject(tag, requeue=False)
        )

    def requeue(self, delivery: Delivery, delay: timedelta | None = None) -> None:
        millis = delay_millis(delay)
        if not millis:
            self._settle(
                delivery, "requeue", lambda channel, tag: channel.basic_reject(tag, requeue=True)
            )
            return

        def send_copy_then_ack(channel: BlockingChannel, tag: int) -> None:
            # The copy is committed before the original is acked: a failure in between leaves
            # both (a duplicate, which handlers tolerate), never neither.
            self._publisher.publish([Outgoing(self.queue, delivery.body, millis)])
            channel.basic_ack(tag)

        self._settle(delivery, "requeue", send_copy_then_ack)

    def extend(self, delivery: Delivery, visibility: timedelta) -> None:
        # RabbitMQ holds an unacked delivery for as long as the connection lives, so there is no
        # claim to extend. A BlockingConnection answers heartbeats only while pika runs, though:
        # let it run, so a long handler that calls extend() keeps its connection (and delivery).
        if self._link.is_open:
            try:
                self._link.connection.process_data_events(time_limit=0)
            except BROKER_ERRORS as exc:
                self._lost("keeping the connection alive", exc)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        self._channel = None
        # Closing the connection hands every unacked delivery back to the queue.
        self._link.reset()

    def _open(self) -> BlockingChannel:
        channel = self._link.channel("consume")
        declare_queue(channel, self.queue)
        channel.basic_qos(prefetch_count=self.prefetch)
        channel.add_on_cancel_callback(self._on_cancelled)
        channel.add_on_return_callback(self._on_returned)
        self._consumer_tag = channel.basic_consume(self.queue, self._on_message, auto_ack=False)
        self._epoch += 1
        self._channel = channel
        return channel

    def _ensure_open(self) -> BlockingChannel:
        if self._closed:
            raise BrokerUnavailable(f"consumer of {self.queue} is closed", transient=False)
        channel = self._channel
        if channel is None or not self._link.is_open or not channel.is_open:
            self._drop()
            channel = self._retry.run(
                FAILURES,
                self._link.where,
                f"consume {self.queue}",
                self._open,
                lambda exc: self._drop(),
            )
        return channel

    def _on_message(self, _channel: Any, method: Any, _properties: Any, body: bytes) -> None:
        self._buffer.append(
            Delivery(
                queue=self.queue,
                body=body,
                tag=(self._epoch, method.delivery_tag),
                redelivered=bool(method.redelivered),
            )
        )

    def _consume_again(self, channel: BlockingChannel) -> None:
        """After :meth:`hand_back`: consume on the same channel, so held deliveries stay ours."""
        try:
            self._consumer_tag = channel.basic_consume(self.queue, self._on_message, auto_ack=False)
        except BROKER_ERRORS as exc:
            self._lost("consuming again", exc)

    def _on_returned(self, _channel: Any, method: Any, _properties: Any, body: bytes) -> None:
        # A notice whose queue vanished since it was declared (deleted by hand): it is lost,
        # which a notice may be; declare the queue again before the next one.
        log.warning(
            "queue %s: a notice to %s came back unroutable: %r",
            self.queue,
            method.routing_key,
            body[:80],
        )
        self._notice_queues.discard(method.routing_key)

    def _on_cancelled(self, _frame: Any) -> None:
        # The broker cancelled the consumer (its queue was deleted): consume afresh, which
        # declares the queue again.
        log.warning("queue %s: consumer cancelled by the broker; consuming again", self.queue)
        self._channel = None

    def _settle(
        self, delivery: Delivery, what: str, action: Callable[[BlockingChannel, int], None]
    ) -> None:
        epoch, tag = delivery.tag
        channel = self._channel
        if epoch != self._epoch or channel is None or not channel.is_open:
            log.info(
                "queue %s: %s of delivery %s skipped: its connection was lost, so the broker "
                "delivers it again",
                self.queue,
                what,
                tag,
            )
            return
        try:
            action(channel, tag)
        except BROKER_ERRORS as exc:
            self._lost(f"{what} of delivery {tag}", exc)

    def _lost(self, what: str, exc: BaseException) -> None:
        log.warning(
            "rabbitmq %s: queue %s: connection lost while %s (%s); unacked deliveries come back",
            self._link.where,
            self.queue,
            what,
            explain(exc),
        )
        self._drop()

    def _drop(self) -> None:
        self._buffer.clear()
        self._consumer_tag = None
        self._notice_queues.clear()
        self._channel = None
        self._link.reset()
