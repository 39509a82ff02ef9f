"""The RabbitMQ broker: publishing and queue administration on one connection."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar

from pika import exceptions as pika_errors

from mq.broker import Broker
from mq.message import dead_letter_queue
from mq.rabbitmq._consumer import RabbitConsumer
from mq.rabbitmq._link import FAILURES, Link, reply_code
from mq.rabbitmq._publisher import (
    DELAY_QUEUE_GRACE,
    Outgoing,
    TxPublisher,
    declare_queue,
    delay_millis,
)
from mq.retry import RetryPolicy

if TYPE_CHECKING:
    from pika.adapters.blocking_connection import BlockingChannel

    from db.store import Store

log = logging.getLogger(f"tactus.{__name__}")

T = TypeVar("T")


class RabbitBroker(Broker):
    """Durable queues on RabbitMQ through pika, publishes confirmed by a transaction per batch.

    Publishing and administration share one connection guarded by a lock, so any thread may call
    them; each :meth:`consumer` opens its own connection for the thread that uses it.

    AMQP cannot list queues, so :meth:`depth`, :meth:`purge` and :meth:`delete` reach the delay
    queues this broker and its consumers published to; a delay queue used only by another process
    is not counted, and vanishes by itself (``x-expires``) once idle.

    Args:
        uri: ``amqp://user:password@host:5672/vhost`` (``%2F`` is the default vhost); pika's
            query options (``heartbeat``, ``blocked_connection_timeout``, ...) apply.
        store: ignored (the embedded queue's store; RabbitMQ keeps its own messages).
        retry: reconnect attempts and backoff, for publishing and consuming alike.
        delay_queue_grace: how long an idle delay queue outlives its delay (``x-expires``).
    """

    backend = "rabbitmq"

    def __init__(
        self,
        uri: str,
        *,
        store: Store | None = None,
        retry: RetryPolicy | None = None,
        attempts: int | None = None,
        delay_queue_grace: timedelta = DELAY_QUEUE_GRACE,
    ) -> None:
        del store
        self._uri = uri
        if retry is None:
            retry = RetryPolicy() if attempts is None else RetryPolicy(attempts=attempts)
        self._retry = retry
        self._grace = delay_queue_grace
        self._link = Link(uri, "publisher", reopen_when_idle=True)
        self._lock = threading.Lock()
        #: Queue -> its delay queues published to through this broker or its consumers, so
        #: that depth, purge and delete reach them (others expire by themselves).
        self._delay_queues: dict[str, set[str]] = {}
        self._delay_lock = threading.Lock()
        self._publisher = TxPublisher(
            self._link, grace=delay_queue_grace, on_delay_queue=self._remember_delay_queue
        )

    def describe(self) -> str:
        return f"rabbitmq {self._link.where}"

    def declare(self, queue: str) -> None:
        def action() -> None:
            declare_queue(self._link.channel("admin"), queue)
            self._publisher.mark_declared(queue)

        self._locked(f"declare {queue}", action)

    def publish(self, queue: str, body: bytes, *, delay: timedelta | None = None) -> None:
        self._send([Outgoing(queue, body, delay_millis(delay))])

    def publish_many(self, messages: Iterable[tuple[str, bytes]]) -> None:
        items = [Outgoing(queue, body) for queue, body in messages]
        if items:
            self._send(items)

    def consumer(self, queue: str, *, prefetch: int = 1) -> RabbitConsumer:
        return RabbitConsumer(
            self._uri,
            queue,
            prefetch=prefetch,
            retry=self._retry,
            delay_queue_grace=self._grace,
            on_delay_queue=self._remember_delay_queue,
        )

    def depth(self, queue: str) -> int:
        # A passive declare counts the ready messages only: unacked ones are being handled.
        names = [queue, *self._known_delay_queues(queue)]
        return self._locked(f"depth of {queue}", lambda: sum(self._count(n) for n in names))

    def purge(self, queue: str) -> int:
        names = [queue, *self._known_delay_queues(queue)]

        def action() -> int:
            return sum(self._on_existing(n, self._purge_one) for n in names)

        purged = self._locked(f"purge {queue}", action)
        log.info("rabbitmq %s: purged %d message(s) of %s", self._link.where, purged, queue)
        return purged

    def delete(self, queue: str) -> None:
        names = [queue, dead_letter_queue(queue), *self._known_delay_queues(queue)]

        def action() -> None:
            channel = self._link.channel("admin")
            for name in names:
                channel.queue_delete(name)
            self._publisher.forget(queue)

        self._locked(f"delete {queue}", action)
        with self._delay_lock:
            self._delay_queues.pop(queue, None)

    def close(self) -> None:
        with self._lock:
            self._link.reset()

    def _send(self, items: list[Outgoing]) -> None:
        queues = sorted({item.routing_key for item in items})
        what = f"publish {len(items)} message(s) to {', '.join(queues[:3])}"
        if len(queues) > 3:
            what += f" and {len(queues) - 3} more queue(s)"
        self._locked(what, lambda: self._publisher.publish(items))

    def _locked(self, what: str, action: Callable[[], T]) -> T:
        with self._lock:
            return self._retry.run(
                FAILURES, self._link.where, what, action, lambda exc: self._link.reset()
            )

    def _count(self, name: str) -> int:
        return self._on_existing(name, self._count_one)

    def _count_one(self, channel: BlockingChannel, name: str) -> int:
        return channel.queue_declare(name, passive=True).method.message_count

    def _purge_one(self, channel: BlockingChannel, name: str) -> int:
        return channel.queue_purge(name).method.message_count

    def _on_existing(self, name: str, action: Callable[[BlockingChannel, str], int]) -> int:
        """``action`` on queue ``name``; 0 when the queue does not exist (the broker then closes
        the channel, which the next use reopens)."""
        try:
            return action(self._link.channel("admin"), name)
        except pika_errors.ChannelClosedByBroker as exc:
            if reply_code(exc) != 404:
                raise
            return 0

    def _remember_delay_queue(self, queue: str, name: str) -> None:
        with self._delay_lock:
            self._delay_queues.setdefault(queue, set()).add(name)

    def _known_delay_queues(self, queue: str) -> list[str]:
        with self._delay_lock:
            return sorted(self._delay_queues.get(queue, ()))
