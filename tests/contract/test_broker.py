"""The broker contract (``mq/broker.py``): the same tests on the embedded store queue and on
RabbitMQ. Each test names its queues through the ``queue`` fixture or ``broker_spec.queue`` (unique
per test) and the ``broker`` fixture deletes them afterwards."""

from __future__ import annotations

import multiprocessing
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from mq.broker import Broker, Consumer, Delivery, SettlingConsumer
from mq.message import dead_letter_queue
from tests.conftest import BrokerSpec
from tests.polling import wait_until

#: Longest wait for a message that should come (generous: CI machines stall).
DEADLINE = 15.0
#: How long "nothing comes" is watched.
QUIET = 0.4
#: Timer slack allowed when checking that a delayed message did not come early.
EARLY = 0.05


def receive(consumer: Consumer, deadline: float = DEADLINE) -> Delivery:
    """The next delivery, failing the test if none comes within ``deadline`` seconds."""
    delivery = consumer.get(deadline)
    assert delivery is not None, f"no message within {deadline}s"
    return delivery


def drain(consumer: Consumer, count: int, deadline: float = DEADLINE) -> list[bytes]:
    """Receive and ack ``count`` messages; their bodies in delivery order."""
    bodies: list[bytes] = []
    end = time.monotonic() + deadline
    while len(bodies) < count:
        remaining = end - time.monotonic()
        assert remaining > 0, f"got {len(bodies)} of {count} messages within {deadline}s"
        delivery = consumer.get(min(remaining, 1.0))
        if delivery is not None:
            bodies.append(delivery.body)
            consumer.ack(delivery)
    return bodies


def numbered(count: int, tag: str = "m") -> list[bytes]:
    return [f"{tag}{i:04d}".encode() for i in range(count)]


# -- publish and consume ---------------------------------------------------------------------


def test_round_trip(broker: Broker, queue: str):
    # given
    broker.publish(queue, b"hello")
    with broker.consumer(queue) as consumer:
        # when
        delivery = receive(consumer)
        consumer.ack(delivery)
        # then
        assert (delivery.queue, delivery.body, delivery.redelivered) == (queue, b"hello", False)
        assert consumer.get(QUIET) is None
    assert broker.depth(queue) == 0


def test_get_times_out_on_an_empty_queue(broker: Broker, queue: str):
    with broker.consumer(queue) as consumer:
        started = time.monotonic()
        assert consumer.get(0.3) is None
        assert 0.25 <= time.monotonic() - started < 5


def test_declare_is_idempotent(broker: Broker, queue: str):
    broker.declare(queue)
    broker.declare(queue)
    assert broker.depth(queue) == 0
    broker.publish(queue, b"x")
    assert broker.depth(queue) == 1


@pytest.mark.parametrize("prefetch", [1, 10])
def test_messages_of_one_queue_arrive_in_publish_order(broker: Broker, queue: str, prefetch):
    # given single publishes followed by a batch
    singles, batch = numbered(10, "s"), numbered(40, "b")
    for body in singles:
        broker.publish(queue, body)
    broker.publish_many((queue, body) for body in batch)
    # when one consumer takes them
    with broker.consumer(queue, prefetch=prefetch) as consumer:
        got = drain(consumer, 50)
    # then
    assert got == singles + batch


def test_a_message_published_before_any_consumer_existed_is_delivered(
    broker: Broker, broker_spec: BrokerSpec
):
    # given a queue nobody declared or consumed, published to by another broker instance
    queue = broker_spec.queue("never_consumed")
    with broker_spec.open() as other:
        other.publish(queue, b"early")
    # when a consumer appears afterwards
    with broker.consumer(queue) as consumer:
        # then the message was kept for it
        assert drain(consumer, 1) == [b"early"]


def test_publish_many_delivers_a_batch_of_1000(broker: Broker, queue: str):
    # given
    bodies = numbered(1000)
    # when
    broker.publish_many((queue, body) for body in bodies)
    # then every message is accepted by the time publish_many returns, and delivered in order
    assert broker.depth(queue) == 1000
    with broker.consumer(queue, prefetch=100) as consumer:
        assert drain(consumer, 1000, deadline=60) == bodies
        assert consumer.get(QUIET) is None


def test_publish_many_spans_queues(broker: Broker, broker_spec: BrokerSpec):
    a, b = broker_spec.queue("a"), broker_spec.queue("b")
    broker.publish_many([(a, b"a1"), (b, b"b1"), (a, b"a2"), (b, b"b2")])
    broker.publish_many([])
    with broker.consumer(a) as ca, broker.consumer(b) as cb:
        assert drain(ca, 2) == [b"a1", b"a2"]
        assert drain(cb, 2) == [b"b1", b"b2"]


# -- one consumer per delivery ---------------------------------------------------------------


def test_each_message_goes_to_exactly_one_of_several_consumer_threads(broker: Broker, queue: str):
    # given four consumers, each on its own thread, all consuming
    total, threads_count = 300, 4
    bodies = numbered(total)
    received: list[list[bytes]] = [[] for _ in range(threads_count)]
    errors: list[BaseException] = []
    ready = threading.Barrier(threads_count + 1)
    done = threading.Event()

    def consume(index: int) -> None:
        try:
            with broker.consumer(queue, prefetch=5) as consumer:
                ready.wait(DEADLINE)
                while not done.is_set():
                    delivery = consumer.get(0.2)
                    if delivery is not None:
                        received[index].append(delivery.body)
                        consumer.ack(delivery)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)
            ready.abort()

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(threads_count)]
    for t in threads:
        t.start()
    ready.wait(DEADLINE)
    # when
    broker.publish_many((queue, body) for body in bodies)
    try:
        wait_until(
            lambda: errors or sum(map(len, received)) >= total,
            deadline=60,
            what=f"{total} deliveries",
        )
        time.sleep(QUIET)  # a duplicate would arrive now
    finally:
        done.set()
        for t in threads:
            t.join(DEADLINE)
    # then
    assert not errors, errors
    got = [body for chunk in received for body in chunk]
    assert sorted(got) == bodies, "a message was lost or delivered twice"


def _consume_into_file(spec: BrokerSpec, queue: str, path: str, ready, stop) -> None:
    """Child process: consume ``queue``, appending each acked body as a line to ``path``."""
    with spec.open() as broker, broker.consumer(queue, prefetch=5) as consumer:
        ready.set()
        with open(path, "ab", buffering=0) as out:
            while not stop.is_set():
                delivery = consumer.get(0.2)
                if delivery is not None:
                    consumer.ack(delivery)
                    out.write(delivery.body + b"\n")


def _lines(paths: list[Path]) -> list[bytes]:
    return [line for p in paths if p.exists() for line in p.read_bytes().splitlines()]


@pytest.mark.slow
def test_each_message_goes_to_exactly_one_of_several_consumer_processes(
    broker: Broker, broker_spec: BrokerSpec, queue: str, tmp_path: Path
):
    # given three OS processes consuming the same queue
    total, count = 200, 3
    bodies = numbered(total)
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    readies = [ctx.Event() for _ in range(count)]
    paths = [tmp_path / f"consumer{i}.txt" for i in range(count)]
    procs = [
        ctx.Process(
            target=_consume_into_file, args=(broker_spec, queue, str(paths[i]), readies[i], stop)
        )
        for i in range(count)
    ]
    for p in procs:
        p.start()
    try:
        for i, ready in enumerate(readies):
            assert ready.wait(60), f"consumer process {i} did not start"
        # when
        broker.publish_many((queue, body) for body in bodies)
        wait_until(
            lambda: len(_lines(paths)) >= total or any(p.exitcode not in (None, 0) for p in procs),
            deadline=60,
            what=f"{total} deliveries",
        )
        time.sleep(QUIET)  # a duplicate would arrive now
    finally:
        stop.set()
        for p in procs:
            p.join(DEADLINE)
            if p.is_alive():
                p.kill()
    # then
    assert [p.exitcode for p in procs] == [0] * count
    assert sorted(_lines(paths)) == bodies, "a message was lost or delivered twice"


def _take_and_hang(spec: BrokerSpec, queue: str, got) -> None:
    """Child process: take one message, never ack it, wait to be killed."""
    with spec.open(visibility=timedelta(seconds=2)) as broker:
        consumer = broker.consumer(queue)
        if consumer.get(60) is not None:
            got.set()
        time.sleep(120)


@pytest.mark.slow
def test_a_delivery_comes_back_when_its_consumer_dies_without_ack(
    broker: Broker, broker_spec: BrokerSpec, queue: str
):
    # given a consumer process holding the only message (store queue: 2 s visibility)
    broker.publish(queue, b"job")
    ctx = multiprocessing.get_context("spawn")
    got = ctx.Event()
    child = ctx.Process(target=_take_and_hang, args=(broker_spec, queue, got))
    child.start()
    try:
        assert got.wait(60), "the consumer process did not get the message"
        with broker.consumer(queue) as consumer:
            # then nobody else gets it while the holder lives
            assert consumer.get(0.3) is None
            # when the holder dies (kill -9: no ack, no goodbye)
            child.kill()
            child.join(DEADLINE)
            # then it is delivered again, marked as such
            delivery = receive(consumer)
            consumer.ack(delivery)
    finally:
        if child.is_alive():
            child.kill()
            child.join(DEADLINE)
    assert (delivery.body, delivery.redelivered) == (b"job", True)


def test_close_gives_unacked_deliveries_back(broker: Broker, queue: str):
    # given
    broker.publish(queue, b"job")
    first = broker.consumer(queue)
    assert receive(first).body == b"job"
    # when the consumer closes without acking
    first.close()
    # then another consumer gets the message
    with broker.consumer(queue) as second:
        delivery = receive(second)
        second.ack(delivery)
    assert (delivery.body, delivery.redelivered) == (b"job", True)


def test_ack_many_removes_the_deliveries_held_and_only_those(broker: Broker, queue: str):
    # given five deliveries in hand
    broker.publish_many((queue, body) for body in numbered(6))
    with broker.consumer(queue, prefetch=6) as consumer:
        held = [receive(consumer) for _ in range(5)]
        # when four are acked together and one is left unacked
        consumer.ack_many(held[:4])
        consumer.ack_many([])
    # then only the unacked one and the one never taken come back
    with broker.consumer(queue, prefetch=6) as consumer:
        again = sorted(drain(consumer, 2))
        assert consumer.get(QUIET) is None
    assert again == sorted([held[4].body, numbered(6)[5]])


def test_deferred_acks_hold_through_the_next_claim_and_a_close(broker: Broker, queue: str):
    # given four messages, the first two acked with defer
    broker.publish_many((queue, body) for body in numbered(4))
    with broker.consumer(queue, prefetch=2) as consumer:
        first = [receive(consumer), receive(consumer)]
        consumer.ack_many(first, defer=True)
        # when the consumer claims the next ones (written with the acks) and acks them so too
        rest = [receive(consumer), receive(consumer)]
        assert [d.body for d in first + rest] == numbered(4)
        consumer.ack_many(rest, defer=True)
    # then after the close none of the four is left anywhere (purge counts claimed ones too)
    with broker.consumer(queue, prefetch=4) as again:
        assert again.get(QUIET) is None
    assert broker.purge(queue) == 0


def test_get_ready_gives_what_is_here_without_waiting(broker: Broker, queue: str):
    with broker.consumer(queue, prefetch=2) as consumer:
        # given an empty queue: nothing, at once
        started = time.monotonic()
        assert consumer.get_ready() is None
        assert time.monotonic() - started < QUIET
        # given two messages, the first taken by get: the second is ready without a wait
        broker.publish_many([(queue, b"first"), (queue, b"second")])
        assert receive(consumer).body == b"first"
        ready = wait_until(consumer.get_ready, deadline=DEADLINE, what="the second ready")
        assert ready.body == b"second"
        consumer.ack_many([ready])
        assert consumer.get_ready() is None


# -- acks with notices -----------------------------------------------------------------------


def test_ack_with_notices_publishes_them_and_removes_the_delivery(
    broker: Broker, broker_spec: BrokerSpec, queue: str
):
    # given a delivery being handled, and a queue nobody declared yet for its notices
    status = broker_spec.queue("status")
    broker.publish(queue, b"job")
    with broker.consumer(queue) as consumer:
        delivery = receive(consumer)
        # when it is acked with two notices
        consumer.ack(delivery, notices=[(status, b"done 1"), (status, b"done 2")])
        # then the delivery is gone for good
        assert consumer.get(QUIET) is None
    assert broker.depth(queue) == 0
    # and the notices wait in their queue, in order
    with broker.consumer(status) as consumer:
        assert drain(consumer, 2) == [b"done 1", b"done 2"]
        assert consumer.get(QUIET) is None


def test_ack_with_notices_sends_each_notice_once_per_ack(
    broker: Broker, broker_spec: BrokerSpec, queue: str
):
    # given a consumer acking a stream of deliveries, each with its notice
    status = broker_spec.queue("status")
    broker.publish_many((queue, body) for body in numbered(20))
    with broker.consumer(queue, prefetch=5) as consumer:
        for _ in range(20):
            delivery = receive(consumer)
            consumer.ack(delivery, notices=[(status, b"done " + delivery.body)])
        assert consumer.get(QUIET) is None
    # then every notice arrived exactly once
    with broker.consumer(status, prefetch=20) as consumer:
        assert sorted(drain(consumer, 20)) == sorted(b"done " + b for b in numbered(20))
        assert consumer.get(QUIET) is None


def test_a_settlement_acks_in_the_store_write_and_refills_or_is_left_to_ack(
    broker: Broker, broker_spec: BrokerSpec, queue: str
):
    # given three messages, two in hand (one delivered, one prefetched)
    status = broker_spec.queue("status")
    broker.publish_many((queue, body) for body in numbered(3))
    with broker.consumer(queue, prefetch=2) as consumer:
        delivery = receive(consumer)
        # when the first is settled with a notice and a refill
        # (the store queue hands its writes to the caller's store write; the others ack)
        assert isinstance(consumer, SettlingConsumer) == (broker.backend == "store")
        if not isinstance(consumer, SettlingConsumer):
            consumer.ack(delivery, notices=[(status, b"done")])
        else:
            settlement = consumer.settlement(delivery, notices=[(status, b"done")], refill=True)
            assert settlement.claim_limit == 1
            _, settled = broker.store.settle_uows([], settlement)  # type: ignore[attr-defined]
            consumer.settled(delivery, settlement, settled)
        # then the other two are in hand, in order, and nothing waits in the queue
        assert broker.depth(queue) == 0
        assert drain(consumer, 2) == numbered(3)[1:]
        assert consumer.get(QUIET) is None
    # and the first is gone for good, its notice sent once
    with broker.consumer(queue) as consumer:
        assert consumer.get(QUIET) is None
    with broker.consumer(status) as consumer:
        assert drain(consumer, 1) == [b"done"]
        assert consumer.get(QUIET) is None


def test_hand_back_lets_another_consumer_take_what_was_prefetched(broker: Broker, queue: str):
    # given a consumer holding one delivery, with more prefetched behind it
    broker.publish_many((queue, body) for body in numbered(3))
    busy = broker.consumer(queue, prefetch=3)
    try:
        held = receive(busy)
        time.sleep(0.2)  # let the prefetched ones arrive
        # when it hands them back (a long run begins)
        assert busy.hand_back() <= 2
        # then another consumer gets them, while the first keeps the one it holds
        with broker.consumer(queue, prefetch=3) as idle:
            assert sorted(drain(idle, 2)) == numbered(3)[1:]
            assert idle.get(QUIET) is None
        busy.ack(held)
        assert held.body == numbered(3)[0]
        assert busy.get(QUIET) is None
    finally:
        busy.close()
    assert broker.depth(queue) == 0


# -- delays, requeue, dead letters -----------------------------------------------------------


def test_a_delayed_message_is_delivered_after_its_delay_and_not_before(broker: Broker, queue: str):
    # given
    delay = timedelta(seconds=1)
    published = time.monotonic()
    broker.publish(queue, b"later", delay=delay)
    broker.publish(queue, b"now")
    # then a delayed message counts as waiting
    assert broker.depth(queue) == 2
    with broker.consumer(queue) as consumer:
        # then the undelayed one comes first, the delayed one not before its time
        assert drain(consumer, 1) == [b"now"]
        assert consumer.get(0.5) is None
        delivery = receive(consumer)
        arrived = time.monotonic() - published
        consumer.ack(delivery)
    assert delivery.body == b"later"
    assert delay.total_seconds() - EARLY <= arrived < delay.total_seconds() + 10


def test_requeue_with_a_delay_delivers_again_after_the_delay(broker: Broker, queue: str):
    # given
    broker.publish(queue, b"retry me")
    with broker.consumer(queue) as consumer:
        first = receive(consumer)
        # when
        requeued = time.monotonic()
        consumer.requeue(first, timedelta(seconds=1))
        # then
        assert consumer.get(0.5) is None
        again = receive(consumer)
        arrived = time.monotonic() - requeued
        consumer.ack(again)
        assert again.body == b"retry me"
        assert 1.0 - EARLY <= arrived < 11
        # and exactly once: the original is gone
        assert consumer.get(QUIET) is None
    assert broker.depth(queue) == 0


def test_requeue_without_a_delay_delivers_again_now(broker: Broker, queue: str):
    broker.publish(queue, b"again")
    with broker.consumer(queue) as consumer:
        consumer.requeue(receive(consumer))
        delivery = receive(consumer, deadline=5)
        consumer.ack(delivery)
        assert delivery.body == b"again"
        assert consumer.get(QUIET) is None


def test_reject_moves_the_message_to_the_dead_letter_queue(
    broker: Broker, broker_spec: BrokerSpec, queue: str
):
    # given
    broker.publish(queue, b"not json")
    with broker.consumer(queue) as consumer:
        # when
        consumer.reject(receive(consumer), "malformed message")
        # then
        assert consumer.get(QUIET) is None
    dead = dead_letter_queue(queue)
    wait_until(lambda: broker.depth(dead) == 1, deadline=DEADLINE, what="a dead letter")
    assert broker.depth(queue) == 0
    with broker.consumer(dead) as consumer:
        assert drain(consumer, 1) == [b"not json"]


# -- depth and purge -------------------------------------------------------------------------


def test_depth_counts_waiting_messages_and_purge_drops_them(broker: Broker, queue: str):
    # given three ready messages and one delayed
    assert broker.depth(queue) == 0
    broker.publish_many([(queue, b"1"), (queue, b"2"), (queue, b"3")])
    broker.publish(queue, b"later", delay=timedelta(minutes=5))
    assert broker.depth(queue) == 4
    with broker.consumer(queue) as consumer:
        # when one is being handled it does not count
        delivery = receive(consumer)
        wait_until(lambda: broker.depth(queue) == 3, deadline=DEADLINE, what="depth 3")
        # and several queues read together count the same (a queue never used counts 0)
        other = f"{queue}.other"
        try:
            assert broker.depths([queue, other, queue]) == {queue: 3, other: 0}
        finally:
            broker.delete(other)
        consumer.ack(delivery)
    # when
    purged = broker.purge(queue)
    # then ready and delayed messages are gone
    assert purged == 3
    assert broker.depth(queue) == 0
    assert broker.purge(queue) == 0
    with broker.consumer(queue) as consumer:
        assert consumer.get(QUIET) is None
