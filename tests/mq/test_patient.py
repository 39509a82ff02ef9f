"""The patient broker (mq/patient.py): publishes and consumers wait out a broker outage."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from db.errors import BrokerUnavailable
from db.outage import Outage
from mq.broker import Broker, Consumer, Delivery
from mq.patient import PatientBroker


class Down:
    """Shared switch of the fake broker: how many more calls fail."""

    def __init__(self, failures: int) -> None:
        self.failures = failures

    def hit(self) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise BrokerUnavailable("connection refused")


class FakeConsumer(Consumer):
    def __init__(self, down: Down, queue: list[bytes]) -> None:
        self.down = down
        self.queue = queue
        self.acked: list[object] = []

    def get(self, timeout):
        self.down.hit()
        return Delivery("q", self.queue.pop(0), tag=1) if self.queue else None

    def ack(self, delivery, *, notices=()):
        self.down.hit()
        self.acked.append(delivery.tag)

    def reject(self, delivery, reason):
        self.down.hit()

    def requeue(self, delivery, delay=None):
        self.down.hit()

    def extend(self, delivery, visibility):
        pass

    def close(self):
        pass


class FakeBroker(Broker):
    backend = "fake"

    def __init__(self, down: Down) -> None:
        self.down = down
        self.published: list[tuple[str, bytes]] = []
        self.queue: list[bytes] = [b"m1"]
        self.consumers = 0

    def declare(self, queue):
        self.down.hit()

    def publish(self, queue, body, *, delay=None):
        self.down.hit()
        self.published.append((queue, body))

    def publish_many(self, messages):
        self.down.hit()
        self.published.extend(messages)

    def consumer(self, queue, *, prefetch=1):
        self.down.hit()
        self.consumers += 1
        return FakeConsumer(self.down, self.queue)

    def depth(self, queue):
        self.down.hit()
        return len(self.queue)

    def purge(self, queue):
        return 0

    def delete(self, queue):
        pass

    def close(self):
        pass


def _quick_outage() -> Outage:
    return Outage("broker", base=timedelta(milliseconds=1), backoff_max=timedelta(milliseconds=5))


def test_publish_and_publish_many_wait_out_the_outage():
    down = Down(failures=6)
    broker = PatientBroker(FakeBroker(down), _quick_outage())
    broker.publish("q", b"a")
    broker.publish_many(iter([("q", b"b"), ("q", b"c")]))  # a generator is tried again whole
    assert broker.inner.published == [("q", b"a"), ("q", b"b"), ("q", b"c")]
    assert broker.outage.up and broker.outage.outages >= 1


def test_a_consumer_opens_and_gets_through_the_outage():
    down = Down(failures=3)
    broker = PatientBroker(FakeBroker(down), _quick_outage())
    consumer = broker.consumer("q")
    down.failures = 4
    delivery = consumer.get(0.1)
    assert delivery is not None and delivery.body == b"m1"
    down.failures = 2
    consumer.ack(delivery)
    assert consumer.inner.acked == [1]


def test_without_waiting_the_error_is_raised_and_tracked():
    down = Down(failures=1)
    broker = PatientBroker(FakeBroker(down), Outage("broker"), wait=False)
    with pytest.raises(BrokerUnavailable):
        broker.publish("q", b"a")
    assert not broker.outage.up
    broker.publish("q", b"a")
    assert broker.outage.up


def test_a_refusal_is_not_waited_for():
    class Refusing(FakeBroker):
        def publish(self, queue, body, *, delay=None):
            raise BrokerUnavailable("ACCESS_REFUSED", transient=False)

    broker = PatientBroker(Refusing(Down(0)), _quick_outage())
    with pytest.raises(BrokerUnavailable, match="ACCESS_REFUSED"):
        broker.publish("q", b"a")


def test_stopping_ends_the_wait():
    stopping = threading.Event()
    broker = PatientBroker(
        FakeBroker(Down(failures=10**9)),
        Outage("broker", base=timedelta(seconds=1)),
        stopping=stopping,
    )
    threading.Timer(0.2, stopping.set).start()
    with pytest.raises(BrokerUnavailable):
        broker.depth("q")
