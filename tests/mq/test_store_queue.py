"""Behaviour only the store broker has: wake-ups within a process, claims given back on close,
visibility timeouts. The rules every broker obeys are in tests/contract/test_broker.py."""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from db import open_store
from db.errors import BrokerUnavailable, InvalidInput
from mq import open_broker, store_queue
from mq.store_queue import StoreBroker
from tests.polling import wait_until

VISIBILITY = timedelta(seconds=60)


@pytest.fixture
def store(concurrent_store_uri):
    s = open_store(concurrent_store_uri)
    yield s
    s.close()


@pytest.fixture
def store_broker(store, clock):
    with StoreBroker("store", store=store, visibility=VISIBILITY, clock=clock) as broker:
        yield broker


def test_open_broker_store_builds_the_store_broker(store):
    broker = open_broker("store", store)
    assert isinstance(broker, StoreBroker) and broker.backend == "store"
    assert broker.describe().startswith("store queue in ")
    with pytest.raises(InvalidInput) as err:
        StoreBroker("amqp://localhost", store=store)
    assert err.value.field == "broker_uri"


@pytest.mark.parametrize("name", ["", "a b", "tab\there", "x" * 181, None])
def test_store_broker_refuses_bad_queue_names(store_broker, name):
    with pytest.raises(InvalidInput) as err:
        store_broker.publish(name, b"m")
    assert err.value.field == "queue"


def test_store_broker_publish_wakes_a_waiting_consumer_at_once(store, clock, monkeypatch):
    # given a consumer idle at its slowest pace, made so slow (pauses of 1 s, then 2 s) that a
    # consumer sleeping out its pause cannot pass for one woken by the publish, even on a loaded
    # machine where a claim query alone may take a good part of 100 ms
    monkeypatch.setattr(store_queue, "POLL_START", 1.0)
    monkeypatch.setattr(store_queue, "POLL_CAP", 2.0)
    broker = StoreBroker("store", store=store, clock=clock)
    consumer = broker.consumer("q")
    received: list[float] = []
    done = threading.Event()

    def consume() -> None:
        while not done.is_set():
            delivery = consumer.get(timeout=30)
            if delivery is not None:
                received.append(time.monotonic())
                consumer.ack(delivery)

    thread = threading.Thread(target=consume)
    thread.start()
    latencies = []
    try:
        for i in range(3):
            wait_until(lambda: consumer._pause >= 2.0, what="the consumer to idle")
            # when
            sent = time.monotonic()
            broker.publish("q", f"m{i}".encode())
            wait_until(lambda i=i: len(received) > i, deadline=5, interval=0.001)
            latencies.append(received[i] - sent)
    finally:
        done.set()
        broker.publish("q", b"stop")  # wakes the consumer so that it sees `done`
        thread.join(5)
        consumer.close()
    # then the consumer did not sleep out its 2 s pause
    assert max(latencies) < 1.0, latencies
    assert not thread.is_alive()


def _consume_elsewhere(uri: str, count: int, pace: float, out) -> None:
    """(A spawned process.) Consume ``count`` messages of ``q`` with a SystemClock, pausing
    ``pace`` seconds between empty looks; send (body, wall time of the delivery) for each."""
    store_queue.POLL_START = store_queue.POLL_CAP = pace
    store = open_store(uri)
    try:
        consumer = StoreBroker("store", store=store).consumer("q")
        out.put(("ready", time.time()))
        deadline = time.monotonic() + 60
        while count and time.monotonic() < deadline:
            delivery = consumer.get(timeout=1)
            if delivery is not None:
                out.put((delivery.body.decode(), time.time()))
                consumer.ack(delivery)
                count -= 1
        consumer.close()
    finally:
        store.close()


def test_an_idle_consumer_in_another_process_claims_a_delayed_message_at_its_time(
    concurrent_store_uri,
):
    # given a consumer in another OS process, idle, whose blind pause between looks is 1 s
    # (ten times POLL_CAP: a consumer that slept it out would be up to a second late)
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    pace, count = 1.0, 3
    child = context.Process(
        target=_consume_elsewhere, args=(concurrent_store_uri, count, pace, out), daemon=True
    )
    child.start()
    store = open_store(concurrent_store_uri)
    broker = StoreBroker("store", store=store)
    try:
        assert out.get(timeout=60)[0] == "ready"
        # when messages are published here, each due 1.5 s later (more than the pause)
        due = {}
        for i in range(count):
            due[f"m{i}"] = datetime.now(UTC) + timedelta(seconds=1.5)
            broker.publish("q", f"m{i}".encode(), delay=timedelta(seconds=1.5))
            received = out.get(timeout=30)
            # then the other process gets each within a few ms of its time, not a pause later
            body, at = received
            late = at - due[body].timestamp()
            assert body == f"m{i}" and late < 0.1, (received, late)
            if not concurrent_store_uri.startswith("mongodb"):  # nx-27017: to the second
                assert late > -0.01, (received, late)
    finally:
        child.join(30)
        if child.is_alive():
            child.kill()
        store.close()
    assert child.exitcode == 0


def test_store_consumer_close_gives_back_buffered_and_unacked_claims(store_broker):
    # given a consumer that claimed five messages and handed out one
    for i in range(5):
        store_broker.publish("q", f"m{i}".encode())
    consumer = store_broker.consumer("q", prefetch=5)
    first = consumer.get(timeout=1)
    assert first.body == b"m0"
    assert store_broker.depth("q") == 0  # all five are claimed
    # when it closes without acking
    consumer.close()
    # then all five are deliverable again, in order, to the next consumer
    assert store_broker.depth("q") == 5
    with store_broker.consumer("q", prefetch=5) as other:
        again = [other.get(timeout=1) for _ in range(5)]
    assert [d.body for d in again] == [f"m{i}".encode() for i in range(5)]
    assert again[0].redelivered
    with pytest.raises(BrokerUnavailable):
        consumer.get(timeout=0)


def test_store_consumer_that_dies_loses_its_delivery_after_the_visibility_timeout(
    concurrent_store_uri, clock
):
    # given a consumer in a store connection that goes away without acking or closing
    dying_store = open_store(concurrent_store_uri)
    dying = StoreBroker("store", store=dying_store, visibility=VISIBILITY, clock=clock)
    dying.publish("q", b"work")
    assert dying.consumer("q").get(timeout=1).body == b"work"
    dying_store.close()
    survivor_store = open_store(concurrent_store_uri)
    survivor = StoreBroker("store", store=survivor_store, visibility=VISIBILITY, clock=clock)
    try:
        with survivor.consumer("q") as consumer:
            # when / then: nobody gets it while the claim runs
            assert consumer.get(timeout=0.05) is None
            clock.advance(VISIBILITY - timedelta(seconds=1))
            assert consumer.get(timeout=0.05) is None
            # and once the claim expires it is delivered again
            clock.advance(timedelta(seconds=1))
            delivery = consumer.get(timeout=1)
            assert delivery.body == b"work" and delivery.redelivered
            consumer.ack(delivery)
        assert survivor.depth("q") == 0
    finally:
        survivor_store.close()


def test_store_consumer_settling_a_lost_claim_changes_nothing(store_broker, clock, caplog):
    # given a slow consumer whose claim expired and went to another consumer
    store_broker.publish("q", b"m")
    slow = store_broker.consumer("q")
    late = slow.get(timeout=1)
    clock.advance(VISIBILITY)
    fast = store_broker.consumer("q")
    taken = fast.get(timeout=1)
    assert taken.body == b"m" and taken.redelivered
    # when the slow consumer acks, extends or rejects
    with caplog.at_level(logging.WARNING, logger="tactus.mq.store_queue"):
        slow.extend(late, timedelta(minutes=5))
        slow.ack(late)
        slow.reject(late, "too late")
    # then the message stays with the fast consumer, and each attempt was logged
    assert sum("the claim was lost" in r.getMessage() for r in caplog.records) == 3
    assert store_broker.depth("q") == 0 and store_broker.depth("q.dead") == 0
    fast.ack(taken)
    for c in (slow, fast):
        c.close()


def test_store_consumer_extend_keeps_a_long_delivery(store_broker, clock):
    store_broker.publish("q", b"long")
    with store_broker.consumer("q") as worker, store_broker.consumer("q") as other:
        delivery = worker.get(timeout=1)
        clock.advance(VISIBILITY - timedelta(seconds=5))
        worker.extend(delivery, VISIBILITY)
        clock.advance(timedelta(seconds=30))
        assert other.get(timeout=0.05) is None
        worker.ack(delivery)
    assert store_broker.depth("q") == 0


def test_store_consumer_renews_buffered_claims_before_handing_them_out(store_broker, clock):
    # given two messages claimed together; the second waits in the buffer
    store_broker.publish_many([("q", b"a"), ("q", b"b")])
    with store_broker.consumer("q", prefetch=2) as worker, store_broker.consumer("q") as other:
        first = worker.get(timeout=1)
        # when the first takes most of the visibility timeout
        clock.advance(VISIBILITY - timedelta(seconds=5))
        worker.ack(first)
        second = worker.get(timeout=1)
        # then the second's claim was renewed: it is not delivered twice meanwhile
        clock.advance(timedelta(seconds=30))
        assert other.get(timeout=0.05) is None
        assert second.body == b"b" and not second.redelivered
        worker.ack(second)
