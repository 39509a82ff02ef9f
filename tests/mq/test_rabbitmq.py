"""Behaviour only the RabbitMQ broker has: reconnects across an outage (every connection
dropped by a proxy of the test's own, the shared server never stopped), transactional publish
confirmation, delay queues that expire, failures translated to BrokerUnavailable. The rules every
broker obeys are in tests/contract/test_broker.py."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from urllib.parse import urlsplit

import pika
import pytest
from pika import exceptions as pika_errors
from pika.adapters.blocking_connection import BlockingChannel

from db.errors import BrokerUnavailable
from db.outage import Outage
from mq import open_broker
from mq.patient import PatientBroker
from mq.rabbitmq import RabbitBroker, RetryPolicy
from tests import servers
from tests.conftest import RABBITMQ_URI, rabbitmq_problem
from tests.faults.proxy import TcpProxy
from tests.mq.riding import ride_out_an_outage
from tests.polling import wait_until

#: Longest wait for a message that should come.
DEADLINE = 20.0
#: A policy for tests that expect to give up: two quick tries.
QUICK = RetryPolicy(attempts=2, base=timedelta(milliseconds=10), cap=timedelta(milliseconds=10))


@pytest.fixture
def rabbit_uri() -> str:
    problem = rabbitmq_problem()
    if problem:
        servers.unavailable(problem)
    return RABBITMQ_URI


@pytest.fixture
def names() -> Iterator[list[str]]:
    """Queue names for this test, deleted afterwards."""
    yield [servers.unique_name() + ".q"]


@pytest.fixture
def rabbit(rabbit_uri: str, names: list[str]) -> Iterator[RabbitBroker]:
    broker = RabbitBroker(rabbit_uri)
    try:
        yield broker
    finally:
        for name in names:
            broker.delete(name)
        broker.close()


@pytest.fixture
def raw_channel(rabbit_uri: str) -> Iterator[BlockingChannel]:
    """A plain pika channel, to look at the broker without going through RabbitBroker."""
    connection = pika.BlockingConnection(pika.URLParameters(rabbit_uri))
    try:
        yield connection.channel()
    finally:
        connection.close()


@pytest.fixture
def proxy(rabbit_uri: str) -> Iterator[TcpProxy]:
    """A TCP proxy of this test in front of the shared RabbitMQ: an outage is made by dropping
    every connection through it and refusing new ones, never by stopping the shared server."""
    parts = urlsplit(rabbit_uri)
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672, name="amqp-proxy") as proxy:
        yield proxy


@pytest.fixture
def patient(rabbit_uri: str, proxy: TcpProxy, names: list[str]) -> Iterator[PatientBroker]:
    """RabbitMQ through the proxy, as the daemons use it: waiting out outages."""
    host, port = proxy.address
    uri = rabbit_uri.replace(f"@{urlsplit(rabbit_uri).netloc.split('@')[-1]}", f"@{host}:{port}")
    outage = Outage("broker", base=timedelta(milliseconds=100), backoff_max=timedelta(seconds=1))
    broker = PatientBroker(RabbitBroker(uri), outage)
    try:
        yield broker
    finally:
        direct = RabbitBroker(rabbit_uri)
        for name in names:
            direct.delete(name)
        direct.close()
        broker.close()


@pytest.fixture
def broker_outage(proxy: TcpProxy) -> Iterator[Callable[[Callable[[], None] | None], None]]:
    """``outage(during)``: every connection through the proxy dropped and new ones refused,
    ``during`` run meanwhile, then the broker reachable again."""
    down = False

    def outage(during: Callable[[], None] | None = None) -> None:
        nonlocal down
        proxy.down()
        down = True
        if during is not None:
            during()
        proxy.up()
        down = False

    yield outage
    if down:
        proxy.up()


def message_count(channel: BlockingChannel, queue: str) -> int:
    return channel.queue_declare(queue, passive=True).method.message_count


# -- confirms ----------------------------------------------------------------------------------


@pytest.mark.needs_server
def test_publish_returns_only_once_the_broker_holds_the_message(rabbit, names, raw_channel):
    queue = names[0]
    # when
    rabbit.publish(queue, b"one")
    # then another connection sees it at once: the commit was the confirmation
    assert message_count(raw_channel, queue) == 1
    rabbit.publish_many((queue, b"%d" % i) for i in range(500))
    assert message_count(raw_channel, queue) == 501


@pytest.mark.needs_server
def test_publish_many_waits_for_one_commit_per_batch(rabbit, names, monkeypatch):
    queue = names[0]
    calls = Counter()
    real_commit, real_publish = BlockingChannel.tx_commit, BlockingChannel.basic_publish

    def tx_commit(self):
        calls["commit"] += 1
        return real_commit(self)

    def basic_publish(self, *args, **kwargs):
        calls["publish"] += 1
        return real_publish(self, *args, **kwargs)

    monkeypatch.setattr(BlockingChannel, "tx_commit", tx_commit)
    monkeypatch.setattr(BlockingChannel, "basic_publish", basic_publish)
    # when
    rabbit.publish_many((queue, b"%d" % i) for i in range(1000))
    # then one round trip confirmed them all
    assert calls == {"publish": 1000, "commit": 1}
    # and a single publish is confirmed too
    rabbit.publish(queue, b"single")
    assert calls == {"publish": 1001, "commit": 2}


@pytest.mark.needs_server
@pytest.mark.slow
def test_confirmed_messages_survive_a_broker_outage(patient, names, broker_outage):
    # given messages confirmed in a batch and singly, one of them delivered but never acked
    rabbit = patient
    queue = names[0]
    bodies = [b"batch-%02d" % i for i in range(20)] + [b"single"]
    rabbit.publish_many((queue, body) for body in bodies[:-1])
    rabbit.publish(queue, bodies[-1])
    with rabbit.consumer(queue) as consumer:
        held = consumer.get(DEADLINE)
        assert held is not None and held.body == bodies[0]
        # when the broker goes away (every connection dropped) and comes back
        broker_outage(lambda: time.sleep(1.0))
        # then acking the delivery of the lost connection is a harmless no-op
        consumer.ack(held)
        # and the same consumer reconnects and gets everything, the held one again first
        got = []
        while len(got) < len(bodies):
            delivery = consumer.get(DEADLINE)
            assert delivery is not None, f"got {len(got)} of {len(bodies)}"
            got.append(delivery)
            consumer.ack(delivery)
        assert consumer.get(0.5) is None
    assert [d.body for d in got] == bodies
    assert got[0].redelivered


@pytest.mark.needs_server
@pytest.mark.slow
def test_publisher_and_consumer_ride_out_a_broker_outage(patient, names, broker_outage):
    ride_out_an_outage(patient, names[0], broker_outage)


# -- delay queues ------------------------------------------------------------------------------


@pytest.mark.needs_server
def test_an_idle_delay_queue_expires(rabbit_uri, names, raw_channel):
    # given a broker whose delay queues outlive their delay by 0.5 s
    queue = names[0]
    broker = RabbitBroker(rabbit_uri, delay_queue_grace=timedelta(milliseconds=500))
    try:
        broker.publish(queue, b"later", delay=timedelta(milliseconds=200))
        assert message_count(raw_channel, f"{queue}.delay.200") == 1
        with broker.consumer(queue) as consumer:
            delivery = consumer.get(DEADLINE)
            assert delivery is not None and delivery.body == b"later"
            consumer.ack(delivery)

        # then the holding queue disappears by itself
        def gone() -> bool:
            channel = raw_channel.connection.channel()
            try:
                channel.queue_declare(f"{queue}.delay.200", passive=True)
            except pika_errors.ChannelClosedByBroker as exc:
                return exc.reply_code == 404
            channel.close()
            return False

        # (a passive declare renews the lease too, so look less often than it expires)
        wait_until(gone, deadline=DEADLINE, interval=1.5, what="the delay queue to expire")
    finally:
        broker.delete(queue)
        broker.close()


@pytest.mark.needs_server
def test_a_consumer_carries_on_after_its_queue_is_deleted(rabbit, names):
    queue = names[0]
    with rabbit.consumer(queue) as consumer:
        # when the queue is deleted under the consumer and published to again
        rabbit.delete(queue)
        rabbit.publish(queue, b"after delete")
        # then the consumer, cancelled by the broker, consumes the new queue
        delivery = consumer.get(DEADLINE)
        assert delivery is not None and delivery.body == b"after delete"
        consumer.ack(delivery)


@pytest.mark.needs_server
@pytest.mark.slow
def test_extend_keeps_a_long_handlers_connection_alive(rabbit_uri, rabbit, names):
    # given a 1 s heartbeat, which a BlockingConnection answers only while pika runs
    queue = names[0]
    rabbit.publish(queue, b"long job")
    broker = RabbitBroker(f"{rabbit_uri}?heartbeat=1")
    try:
        with broker.consumer(queue) as consumer:
            delivery = consumer.get(DEADLINE)
            assert delivery is not None
            # when the handler runs for several heartbeat intervals, extending as it goes
            for _ in range(8):
                time.sleep(0.4)
                consumer.extend(delivery, timedelta(seconds=60))
            consumer.ack(delivery)
            # then the ack landed on the live connection: nothing comes back
            assert consumer.get(0.5) is None
    finally:
        broker.close()
    assert rabbit.depth(queue) == 0


# -- failures ----------------------------------------------------------------------------------


def test_unreachable_broker_raises_broker_unavailable_without_the_password(caplog):
    broker = RabbitBroker("amqp://tactus:s3cret@127.0.0.1:1/%2F", retry=QUICK)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(BrokerUnavailable) as info:
        broker.publish("tactus_test.q", b"x")
    with pytest.raises(BrokerUnavailable):
        broker.consumer("tactus_test.q")
    broker.close()
    assert "tactus:***@127.0.0.1:1" in str(info.value)
    assert "failed after 2 attempts" in str(info.value)
    assert "s3cret" not in str(info.value) and "s3cret" not in caplog.text
    assert "s3cret" not in broker.describe()


@pytest.mark.needs_server
def test_a_refused_login_fails_at_once(rabbit_uri):
    slow = RetryPolicy(attempts=5, base=timedelta(seconds=2))
    uri = rabbit_uri.replace("guest:guest@", "guest:wrong-password@", 1)
    broker = RabbitBroker(uri, retry=slow)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="refused"):
        broker.publish("tactus_test.q", b"x")
    assert time.monotonic() - started < 2, "a permanent refusal must not be retried"
    broker.close()


def test_open_broker_builds_a_rabbit_broker_for_amqp_uris():
    broker = open_broker("amqp://guest:pw@127.0.0.1:5672/%2F", None)
    assert isinstance(broker, RabbitBroker) and broker.backend == "rabbitmq"
    assert broker.describe() == "rabbitmq amqp://guest:***@127.0.0.1:5672/%2F"
    broker.close()
