"""A broker whose calls wait out an outage of the broker (SPEC section 15), for the daemons.

:class:`PatientBroker` wraps any :class:`~mq.broker.Broker` the way :class:`db.outage.PatientStore`
wraps a store: a call that raises a transient :class:`~db.errors.BrokerUnavailable` is reported
to the daemon's broker :class:`~db.outage.Outage`, waits (backoff with jitter, capped at
``outage_backoff_max``, cut short when another call gets through) and is tried again, for as long
as the outage lasts. Consumers it opens do the same (:class:`PatientConsumer`): a worker's slot
or the scheduler's status listener waits in ``get`` while the broker is away and goes on
consuming when it is back, instead of ending its thread.

Backends keep their own short retries (a blip is ridden out inside one call, quietly); this layer
is the one that never gives up and logs the outage once. With ``wait=False`` (mx) a call is
tried once and the outage is still tracked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from db.errors import BrokerUnavailable
from db.outage import call_patiently
from mq import open_broker
from mq.broker import Broker, Consumer, SettlingConsumer

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable, Iterable, Sequence
    from datetime import timedelta

    from db.models import QueueSettled, QueueSettlement
    from db.outage import Outage
    from db.store import Store
    from mq.broker import Delivery

T = TypeVar("T")


class _Patience:
    """The tracker, the stop event and whether to wait, shared by a broker and its consumers."""

    def __init__(self, outage: Outage, stopping: threading.Event | None, wait: bool) -> None:
        self.outage = outage
        self.stopping = stopping
        self.wait = wait

    def __call__(self, call: Callable[[], T]) -> T:
        return call_patiently(
            self.outage,
            call,
            errors=(BrokerUnavailable,),
            stopping=self.stopping,
            wait=self.wait,
        )


class PatientConsumer(Consumer):
    """A consumer whose calls wait out broker outages (see the module docstring).

    ``get`` reconnects through the wrapped consumer: RabbitMQ's drops its dead connection when it
    gives up, and the next try opens a fresh one; deliveries received on the lost connection come
    again, marked redelivered.
    """

    def __init__(self, inner: Consumer, patience: _Patience) -> None:
        self.inner = inner
        self._patience = patience

    def get(self, timeout: float) -> Delivery | None:
        return self._patience(lambda: self.inner.get(timeout))

    def get_ready(self) -> Delivery | None:
        # never waits, by contract: a failure counts as nothing ready
        return self.inner.get_ready()

    def ack(self, delivery: Delivery, *, notices: Sequence[tuple[str, bytes]] = ()) -> None:
        self._patience(lambda: self.inner.ack(delivery, notices=notices))

    def ack_many(self, deliveries: Sequence[Delivery], *, defer: bool = False) -> None:
        self._patience(lambda: self.inner.ack_many(deliveries, defer=defer))

    def reject(self, delivery: Delivery, reason: str) -> None:
        self._patience(lambda: self.inner.reject(delivery, reason))

    def requeue(self, delivery: Delivery, delay: timedelta | None = None) -> None:
        self._patience(lambda: self.inner.requeue(delivery, delay))

    def extend(self, delivery: Delivery, visibility: timedelta) -> None:
        # an extension that cannot be made now is made by the next heartbeat
        self.inner.extend(delivery, visibility)

    def hand_back(self) -> int:
        return self.inner.hand_back()

    def close(self) -> None:
        self.inner.close()


class PatientSettlingConsumer(PatientConsumer, SettlingConsumer):
    """:class:`PatientConsumer` of a :class:`~mq.broker.SettlingConsumer` (the store queue):
    its settlements pass through (they are written by the caller's patient store)."""

    inner: SettlingConsumer

    def settlement(
        self,
        delivery: Delivery,
        *,
        notices: Sequence[tuple[str, bytes]] = (),
        refill: bool = False,
    ) -> QueueSettlement:
        return self.inner.settlement(delivery, notices=notices, refill=refill)

    def settled(self, delivery: Delivery, settlement: QueueSettlement, done: QueueSettled) -> None:
        self.inner.settled(delivery, settlement, done)

    def take(self, message_id: str) -> Delivery | None:
        return self.inner.take(message_id)


def open_patient_broker(
    uri: str,
    store: Store,
    outage: Outage,
    *,
    visibility: timedelta,
    stopping: threading.Event | None = None,
) -> PatientBroker:
    """Open the broker named by ``uri`` (:func:`mq.open_broker`) for a daemon: every call, and
    every call of its consumers, waits out an outage."""
    return PatientBroker(open_broker(uri, store, visibility=visibility), outage, stopping=stopping)


class PatientBroker(Broker):
    """A broker whose calls, and whose consumers' calls, wait out broker outages."""

    def __init__(
        self,
        broker: Broker,
        outage: Outage,
        *,
        stopping: threading.Event | None = None,
        wait: bool = True,
    ) -> None:
        self.inner = broker
        self.outage = outage
        self.backend = broker.backend
        self.exact_delay = broker.exact_delay
        self._patience = _Patience(outage, stopping, wait)

    def declare(self, queue: str) -> None:
        self._patience(lambda: self.inner.declare(queue))

    def publish(self, queue: str, body: bytes, *, delay: timedelta | None = None) -> None:
        self._patience(lambda: self.inner.publish(queue, body, delay=delay))

    def publish_many(self, messages: Iterable[tuple[str, bytes]]) -> None:
        batch = list(messages)  # tried again as a whole: the iterable may be a generator
        self._patience(lambda: self.inner.publish_many(batch))

    def consumer(self, queue: str, *, prefetch: int = 1) -> Consumer:
        inner = self._patience(lambda: self.inner.consumer(queue, prefetch=prefetch))
        if isinstance(inner, SettlingConsumer):
            return PatientSettlingConsumer(inner, self._patience)
        return PatientConsumer(inner, self._patience)

    def depth(self, queue: str) -> int:
        return self._patience(lambda: self.inner.depth(queue))

    def depths(self, queues: Iterable[str]) -> dict[str, int]:
        names = list(queues)
        return self._patience(lambda: self.inner.depths(names))

    def purge(self, queue: str) -> int:
        return self._patience(lambda: self.inner.purge(queue))

    def delete(self, queue: str) -> None:
        self._patience(lambda: self.inner.delete(queue))

    def close(self) -> None:
        self.inner.close()

    def describe(self) -> str:
        return self.inner.describe()
