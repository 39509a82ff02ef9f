"""Behaviour only the NATS JetStream broker has: queue names mapped to subjects, the event loop
thread that closes without a trace, AckWait and ``+WPI``, the delay subject's movers, reconnects
across an outage (every connection dropped by a proxy of the test's own, the shared server never
stopped), failures translated to BrokerUnavailable. The rules every broker obeys are in
tests/contract/test_broker.py."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from urllib.parse import urlsplit

import pytest

from db.errors import BrokerUnavailable
from db.outage import Outage
from mq import open_broker
from mq.nats import NatsBroker, RetryPolicy
from mq.nats._layout import place, token
from mq.patient import PatientBroker
from tests import servers
from tests.conftest import NATS_URI, nats_problem
from tests.faults.pgcluster import free_port
from tests.faults.proxy import TcpProxy
from tests.mq.riding import ride_out_an_outage
from tests.polling import wait_until

#: Longest wait for a message that should come.
DEADLINE = 20.0
#: A policy for tests that expect to give up: two quick tries.
QUICK = RetryPolicy(attempts=2, base=timedelta(milliseconds=10), cap=timedelta(milliseconds=10))


@pytest.fixture
def nats_uri() -> str:
    problem = nats_problem()
    if problem:
        servers.unavailable(problem)
    return NATS_URI


@pytest.fixture
def prefix(nats_uri: str) -> Iterator[str]:
    """This test's installation (queue prefix); its stream is deleted afterwards."""
    name = servers.unique_name()
    yield name
    with NatsBroker(nats_uri) as broker:
        broker.delete_installation(name)


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("nats-loop")]


def tasks_of(broker: NatsBroker) -> int:
    """How many tasks run on the broker's event loop."""

    async def count() -> int:
        return len(asyncio.all_tasks()) - 1  # not this one

    return broker._link.run(count())


# -- names -------------------------------------------------------------------------------------


def test_each_queue_is_one_token_and_no_two_queues_share_one():
    names = ["tactus.etl", "tactus.etl.dead", "tactus-etl", "tactus_etl", "a.b-c", "a-b.c", "é.x"]
    tokens = [token(n) for n in names]
    assert len(set(tokens)) == len(names)
    for tok in tokens:
        assert not set(tok) & set(". *>/\\\t")
    where = place("tactus.etl.dead")
    assert where.stream == "tactus_tactus"
    assert where.ready == "tactus.tactus.q.tactus-etl-dead"
    assert (where.consumer, where.mover) == ("q_tactus-etl-dead", "d_tactus-etl-dead")
    assert place("tactus.etl").stream == where.stream, "one stream per installation"


def test_open_broker_builds_a_nats_broker_with_the_visibility_as_ack_wait():
    # no server needed: the broker connects on first use
    broker = open_broker("nats://tactus:pw@127.0.0.1:4222", None, visibility=timedelta(seconds=7))
    try:
        assert isinstance(broker, NatsBroker) and broker.backend == "nats"
        assert broker.describe() == "nats nats://tactus:***@127.0.0.1:4222"
        assert broker._declared.visibility == timedelta(seconds=7)
    finally:
        broker.close()
    assert not loop_threads()


# -- the event loop thread ---------------------------------------------------------------------


@pytest.mark.needs_server
def test_close_leaves_no_thread_and_no_task(nats_uri, prefix):
    # given a broker that has talked to the server (nats-py's own tasks run)
    before = set(threading.enumerate())
    broker = NatsBroker(nats_uri)
    queue = f"{prefix}.q"
    broker.publish(queue, b"x")
    baseline = tasks_of(broker)
    # when a consumer (and its queue's mover) comes and goes
    consumer = broker.consumer(queue, prefetch=3)
    delivery = consumer.get(DEADLINE)
    assert delivery is not None
    assert tasks_of(broker) > baseline
    consumer.close()
    # then its tasks are gone, and the message is back for the next consumer
    wait_until(lambda: tasks_of(broker) == baseline, deadline=5, what="the consumer's tasks gone")
    assert broker.depth(queue) == 1
    # and closing the broker stops the loop and joins its thread
    broker.close()
    assert set(threading.enumerate()) == before
    assert broker._link.loop.is_closed()


# -- AckWait, +WPI, delays ---------------------------------------------------------------------


@pytest.mark.needs_server
def test_extend_holds_a_delivery_past_the_ack_wait_and_then_it_comes_back(nats_uri, prefix):
    # given a delivery held by one consumer, AckWait 1 s
    queue = f"{prefix}.q"
    with NatsBroker(nats_uri, visibility=timedelta(seconds=1)) as broker:
        broker.publish(queue, b"long")
        holder, other = broker.consumer(queue), broker.consumer(queue)
        try:
            held = holder.get(DEADLINE)
            assert held is not None and not held.redelivered
            # when the holder extends it for three times the AckWait
            until = time.monotonic() + 3.0
            while time.monotonic() < until:
                holder.extend(held, timedelta(seconds=1))
                # then nobody else gets it
                assert other.get(0.3) is None
            # when it stops extending (a handler stuck, a process frozen)
            started = time.monotonic()
            again = other.get(DEADLINE)
            # then it comes to the other consumer after the AckWait, marked redelivered
            assert again is not None and (again.body, again.redelivered) == (b"long", True)
            assert 0.5 <= time.monotonic() - started < 5
            other.ack(again)
        finally:
            holder.close()
            other.close()


@pytest.mark.needs_server
def test_a_delayed_message_waits_for_a_consumer_and_is_moved_by_its_broker(nats_uri, prefix):
    # given a message delayed by a broker that closes at once (no mover runs)
    queue = f"{prefix}.q"
    with NatsBroker(nats_uri) as publisher:
        publisher.publish(queue, b"later", delay=timedelta(seconds=1))
        published = time.monotonic()
    time.sleep(1.2)
    # when a consumer of another broker appears after the delay
    with NatsBroker(nats_uri) as broker:
        assert broker.depth(queue) == 1, "a delayed message counts as waiting"
        with broker.consumer(queue) as consumer:
            delivery = consumer.get(DEADLINE)
            # then its mover delivers it, once
            assert delivery is not None and delivery.body == b"later"
            assert time.monotonic() - published >= 1.0
            consumer.ack(delivery)
            assert consumer.get(0.5) is None
        assert broker.depth(queue) == 0


@pytest.mark.needs_server
def test_a_batch_sent_again_with_its_ids_is_stored_once(nats_uri, prefix, monkeypatch):
    # given message ids that repeat, as in a batch tried again after a failure
    ids = itertools.cycle([uuid.UUID(int=i + 1) for i in range(20)])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(ids))
    queue = f"{prefix}.q"
    with NatsBroker(nats_uri) as broker:
        # when the same batch is sent twice
        broker.publish_many((queue, b"m%02d" % i) for i in range(20))
        broker.publish_many((queue, b"m%02d" % i) for i in range(20))
        # then JetStream kept one copy of each
        assert broker.depth(queue) == 20


# -- failures ----------------------------------------------------------------------------------


def test_unreachable_server_raises_broker_unavailable_without_the_password(caplog):
    port = free_port()
    broker = NatsBroker(f"nats://tactus:s3cret@127.0.0.1:{port}", retry=QUICK)
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(BrokerUnavailable) as info:
            broker.publish("tactus_test.q", b"x")
        with pytest.raises(BrokerUnavailable):
            broker.consumer("tactus_test.q")
    finally:
        broker.close()
    assert f"tactus:***@127.0.0.1:{port}" in str(info.value)
    assert "failed after 2 attempts" in str(info.value)
    assert "s3cret" not in str(info.value) and "s3cret" not in caplog.text
    assert not loop_threads()


@pytest.fixture
def proxy(nats_uri: str) -> Iterator[TcpProxy]:
    """A TCP proxy of this test in front of the shared NATS server: an outage is made by
    dropping every connection through it and refusing new ones, never by stopping the server."""
    parts = urlsplit(nats_uri)
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 4222, name="nats-proxy") as proxy:
        yield proxy


@pytest.fixture
def patient(proxy: TcpProxy, prefix: str) -> Iterator[PatientBroker]:
    """NATS through the proxy, as the daemons use it: waiting out outages."""
    host, port = proxy.address
    outage = Outage("broker", base=timedelta(milliseconds=100), backoff_max=timedelta(seconds=1))
    broker = PatientBroker(NatsBroker(f"nats://{host}:{port}"), outage)
    try:
        yield broker
    finally:
        broker.close()


def outage_of(proxy: TcpProxy) -> Callable[[Callable[[], None]], None]:
    def outage(during: Callable[[], None]) -> None:
        proxy.down()
        try:
            during()
        finally:
            proxy.up()

    return outage


@pytest.mark.needs_server
@pytest.mark.slow
def test_publisher_and_consumer_ride_out_an_outage(patient, proxy, prefix):
    ride_out_an_outage(patient, f"{prefix}.q", outage_of(proxy))
