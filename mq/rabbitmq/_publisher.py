"""Queue layout on RabbitMQ and the transactional publisher.

Every queue ``q`` is durable and dead-letters through the default exchange to ``q.dead``
(``mq.message.dead_letter_queue``), so ``reject`` is ``basic_reject(requeue=False)``. Delayed
messages wait in a holding queue ``q.delay.<ms>`` whose ``x-message-ttl`` is the delay and whose
dead-letter target is ``q`` itself; it has no consumer, and ``x-expires`` removes it once nothing
has been published to it for a while. No plugin is needed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pika

from db.errors import BrokerUnavailable
from mq.message import dead_letter_queue

if TYPE_CHECKING:
    from pika.adapters.blocking_connection import BlockingChannel

    from mq.rabbitmq._link import Link

log = logging.getLogger(f"tactus.{__name__}")

#: How long a delay queue outlives the last message that can be in it. Its ``x-expires`` is the
#: delay plus this grace; publishers declare it again (renewing the lease) at least every half
#: grace, so a queue never expires while a message waits in it.
DELAY_QUEUE_GRACE = timedelta(minutes=10)
#: Durable on disk (delivery_mode 2); no other property: messages carry ids only.
PERSISTENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)

_DEAD_SUFFIX = dead_letter_queue("")


def is_dead_letter_queue(queue: str) -> bool:
    """True for ``q.dead``: it is declared without a dead-letter target of its own."""
    return queue.endswith(_DEAD_SUFFIX)


def delay_queue_prefix(queue: str) -> str:
    """What the names of ``queue``'s delay queues start with."""
    return f"{queue}.delay."


def delay_queue(queue: str, millis: int) -> str:
    """The holding queue for messages to ``queue`` delayed by ``millis``."""
    return f"{delay_queue_prefix(queue)}{millis}"


def delay_millis(delay: timedelta | None) -> int:
    """``delay`` in whole milliseconds, rounded up (never early); 0 for none."""
    if delay is None or delay <= timedelta(0):
        return 0
    return math.ceil(delay / timedelta(milliseconds=1))


def queue_arguments(queue: str) -> dict[str, Any] | None:
    """``queue``'s declaration arguments: dead-letter to ``<queue>.dead`` (none for a DLQ)."""
    if is_dead_letter_queue(queue):
        return None
    return {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead_letter_queue(queue)}


def delay_queue_arguments(queue: str, millis: int, grace: timedelta) -> dict[str, Any]:
    """A delay queue's arguments: hold each message ``millis``, then dead-letter it to
    ``queue``; vanish after ``millis + grace`` without a declaration."""
    grace_ms = math.ceil(grace / timedelta(milliseconds=1))
    return {
        "x-message-ttl": millis,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue,
        "x-expires": millis + grace_ms,
    }


def declare_queue(channel: BlockingChannel, queue: str) -> None:
    """Declare ``queue`` and, unless it is one itself, its dead-letter queue (idempotent)."""
    if not is_dead_letter_queue(queue):
        channel.queue_declare(dead_letter_queue(queue), durable=True)
    channel.queue_declare(queue, durable=True, arguments=queue_arguments(queue))


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish: to ``queue``, through its delay queue when ``delay_ms`` > 0."""

    queue: str
    body: bytes
    delay_ms: int = 0

    @property
    def routing_key(self) -> str:
        return delay_queue(self.queue, self.delay_ms) if self.delay_ms else self.queue


class TxPublisher:
    """Publishes batches on a transactional channel of one :class:`Link`: every message of the
    batch with ``basic_publish`` (no wait), then one ``tx_commit``. RabbitMQ answers
    ``Tx.CommitOk`` only once every persistent message of the transaction is routed to its
    durable queue and written to disk, so the commit is the batch's publisher confirm.

    Queues are declared on first use and remembered. A message whose queue has vanished since (a
    ``delete`` elsewhere, an expired delay queue) is published ``mandatory`` and comes back as
    ``Basic.Return`` before ``Tx.CommitOk``; it is declared again and published once more.

    One attempt per call: pika errors escape, the owner's :class:`RetryPolicy` decides.
    """

    def __init__(
        self,
        link: Link,
        *,
        grace: timedelta = DELAY_QUEUE_GRACE,
        on_delay_queue: Callable[[str, str], None] | None = None,
    ) -> None:
        self._link = link
        self._grace = grace
        self._redeclare_after = grace.total_seconds() / 2
        self._on_delay_queue = on_delay_queue
        self._declared: set[str] = set()
        #: Delay queue -> monotonic time of its last declaration (which renews ``x-expires``).
        self._delay_declared: dict[str, float] = {}
        self._returned: list[tuple[str, bytes]] = []

    def publish(self, items: Sequence[Outgoing]) -> None:
        """Publish ``items`` in one transaction; returns once RabbitMQ has them on disk.

        Raises:
            BrokerUnavailable: a queue keeps refusing messages after being declared again.
        """
        returned = self._publish_once(items)
        if returned:
            queues = sorted({item.routing_key for item in returned})
            log.warning(
                "rabbitmq %s: %d message(s) returned unroutable by %s; declaring again",
                self._link.where,
                len(returned),
                ", ".join(queues),
            )
            for item in returned:
                self.forget(item.queue)
            returned = self._publish_once(returned)
            if returned:
                raise BrokerUnavailable(
                    f"RabbitMQ at {self._link.where}: {returned[0].routing_key} "
                    f"drops messages published to it"
                )

    def mark_declared(self, queue: str) -> None:
        """``queue`` was declared elsewhere on this connection's broker: skip declaring it."""
        self._declared.add(queue)

    def forget(self, queue: str) -> None:
        """Declare ``queue`` and its delay queues again before the next publish to them."""
        self._declared.discard(queue)
        prefix = delay_queue_prefix(queue)
        for name in [n for n in self._delay_declared if n.startswith(prefix)]:
            del self._delay_declared[name]

    def _setup(self, channel: BlockingChannel) -> None:
        channel.tx_select()
        channel.add_on_return_callback(self._on_return)

    def _on_return(self, _channel: Any, method: Any, _properties: Any, body: bytes) -> None:
        self._returned.append((method.routing_key, body))

    def _publish_once(self, items: Sequence[Outgoing]) -> list[Outgoing]:
        channel = self._link.channel("publish", self._setup)
        self._declare(channel, items)
        self._returned.clear()
        for item in items:
            channel.basic_publish("", item.routing_key, item.body, PERSISTENT, mandatory=True)
        channel.tx_commit()
        # A Basic.Return arrives before Tx.CommitOk, but pika only hands it to the callback when
        # events are dispatched: do that now, without waiting for anything.
        self._link.connection.process_data_events(time_limit=0)
        if not self._returned:
            return []
        by_key = {item.routing_key: item for item in items}
        returned = [
            Outgoing(by_key[key].queue, body, by_key[key].delay_ms) for key, body in self._returned
        ]
        self._returned.clear()
        return returned

    def _declare(self, channel: BlockingChannel, items: Sequence[Outgoing]) -> None:
        now = time.monotonic()
        for item in items:
            if item.queue not in self._declared:
                declare_queue(channel, item.queue)
                self._declared.add(item.queue)
            if item.delay_ms:
                name = item.routing_key
                last = self._delay_declared.get(name)
                if last is None or now - last > self._redeclare_after:
                    channel.queue_declare(
                        name,
                        durable=True,
                        arguments=delay_queue_arguments(item.queue, item.delay_ms, self._grace),
                    )
                    self._delay_declared[name] = now
                    if self._on_delay_queue is not None:
                        self._on_delay_queue(item.queue, name)
