"""Behaviour only the Redis broker has: publishes numbered so that one sent again after a lost
reply is added once, reconnects across dropped connections (a proxy of the test's own; the shared
server is never stopped), extend and claims under the visibility timeout, a read whose reply was
lost taken back, consumers that leave the group. The rules every broker obeys are in
tests/contract/test_broker.py; a killed server is in tests/faults/test_redis_broker.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
import redis
from redis import exceptions as redis_errors

from db.errors import BrokerUnavailable, InvalidInput
from mq import open_broker
from mq.redis import RedisBroker, RetryPolicy
from mq.redis import _consumer as consumer_module
from mq.redis._scripts import GROUP, stream_key
from tests import servers
from tests.conftest import REDIS_URI, redis_problem
from tests.faults.proxy import TcpProxy

pytestmark = pytest.mark.needs_server

#: Longest wait for a message that should come.
DEADLINE = 10.0
#: A policy for tests that expect to give up: two quick tries.
QUICK = RetryPolicy(attempts=2, base=timedelta(milliseconds=10), cap=timedelta(milliseconds=10))


@pytest.fixture
def redis_uri() -> str:
    problem = redis_problem()
    if problem:
        servers.unavailable(problem)
    return REDIS_URI


@pytest.fixture
def queue() -> str:
    return servers.unique_name() + ".q"


@pytest.fixture
def broker(redis_uri: str, queue: str) -> Iterator[RedisBroker]:
    b = RedisBroker(redis_uri, visibility=timedelta(seconds=1))
    try:
        yield b
    finally:
        b.delete(queue)
        b.close()


@pytest.fixture
def raw(redis_uri: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_uri)
    yield client
    client.close()


def lose_replies(target: object, name: str, times: int = 1) -> list[int]:
    """Wrap ``target.name``: the call reaches the server, then its reply is "lost" (a
    ConnectionError) ``times`` times. Returns a list counting the calls."""
    real = getattr(target, name)
    calls: list[int] = []

    def call(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append(1)
        if len(calls) <= times:
            raise redis_errors.ConnectionError("reply lost (test)")
        return result

    setattr(target, name, call)
    return calls


def test_open_broker_opens_redis_by_its_scheme_and_masks_the_password(redis_uri: str):
    broker = open_broker(redis_uri, store=None, visibility=timedelta(seconds=7))  # type: ignore[arg-type]
    try:
        assert isinstance(broker, RedisBroker)
        assert broker.visibility == timedelta(seconds=7)
    finally:
        broker.close()
    secret = RedisBroker("redis://:s3cret@127.0.0.1:1/0")
    assert "s3cret" not in secret.describe() and "***" in secret.describe()
    secret.close()
    with pytest.raises(InvalidInput):
        RedisBroker(redis_uri, visibility=timedelta(0))


def test_a_publish_whose_reply_was_lost_is_added_once(broker: RedisBroker, queue: str):
    # given the server runs the publish, but its reply never arrives
    calls = lose_replies(broker, "_publish_script")
    # when the broker sends it again
    broker.publish(queue, b"once")
    broker.publish_many([(queue, b"a"), (queue, b"b")])
    # then it was sent twice and is there once
    assert len(calls) == 3
    assert broker.depth(queue) == 3
    with broker.consumer(queue, prefetch=5) as consumer:
        bodies = [consumer.get(DEADLINE).body for _ in range(3)]
        assert consumer.get(0.2) is None
    assert bodies == [b"once", b"a", b"b"]


def test_the_same_batch_published_again_after_a_failure_is_added_once(redis_uri: str, queue: str):
    # given a publish that raised although the server had run it (one attempt, reply lost)
    broker = RedisBroker(redis_uri, retry=RetryPolicy(attempts=1))
    try:
        lose_replies(broker, "_publish_script")
        batch = [(queue, b"x"), (queue, b"y")]
        with pytest.raises(BrokerUnavailable):
            broker.publish_many(batch)
        # when the caller publishes the same messages again (a daemon's patient retry),
        # then something else
        broker.publish_many(batch)
        broker.publish(queue, b"z")
        # then each is there once
        assert broker.depth(queue) == 3
    finally:
        broker.delete(queue)
        broker.close()


def test_an_unreachable_redis_raises_broker_unavailable_after_the_attempts():
    broker = RedisBroker("redis://127.0.0.1:1/0", retry=QUICK)
    try:
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable) as err:
            broker.publish("q", b"x")
        assert err.value.transient
        assert "after 2 attempts" in str(err.value)
        assert time.monotonic() - started < 5
    finally:
        broker.close()


def test_a_consumer_rides_out_dropped_connections(redis_uri: str, queue: str):
    # given a consumer reaching Redis through a proxy, holding one delivery of three
    parts = urlsplit(redis_uri)
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379, name="redis") as proxy:
        uri = f"redis://127.0.0.1:{proxy.port}/0"
        broker = RedisBroker(uri)
        try:
            broker.publish_many([(queue, b"1"), (queue, b"2"), (queue, b"3")])
            with broker.consumer(queue) as consumer:
                first = consumer.get(DEADLINE)
                # when every connection is dropped, before the ack and between gets
                assert proxy.drop() >= 1
                consumer.ack(first)
                proxy.drop()
                second = consumer.get(DEADLINE)
                consumer.ack(second)
                proxy.drop()
                third = consumer.get(DEADLINE)
                consumer.ack(third)
                # then each came once, in order, and the acks held
                assert [d.body for d in (first, second, third)] == [b"1", b"2", b"3"]
                assert consumer.get(0.3) is None
            assert broker.depth(queue) == 0
        finally:
            broker.delete(queue)
            broker.close()


def test_a_read_whose_reply_was_lost_is_taken_back_from_the_consumers_own_pending(
    broker: RedisBroker, queue: str
):
    # given a message, and a consumer whose read reaches the server but whose reply is lost
    broker.publish(queue, b"lost in transit")
    with broker.consumer(queue) as consumer:
        lose_replies(consumer._client, "xreadgroup")
        # when it reads again (at once, not after the visibility timeout)
        started = time.monotonic()
        delivery = consumer.get(DEADLINE)
        # then the message is delivered, marked redelivered, and only once
        assert delivery is not None and delivery.body == b"lost in transit"
        assert delivery.redelivered
        assert time.monotonic() - started < 0.9
        consumer.ack(delivery)
        assert consumer.get(0.3) is None
    assert broker.depth(queue) == 0


def test_extend_keeps_a_long_delivery_from_being_claimed(broker: RedisBroker, queue: str):
    # given a delivery held past the 1 s visibility timeout, extended every 0.3 s
    broker.publish(queue, b"long")
    with broker.consumer(queue) as holder, broker.consumer(queue) as other:
        delivery = holder.get(DEADLINE)
        until = time.monotonic() + 2.5
        while time.monotonic() < until:
            holder.extend(delivery, timedelta(seconds=1))
            # then no other consumer claims it meanwhile
            assert other.get(0.3) is None
        # when the holder stops extending, the other claims it after the timeout
        again = other.get(DEADLINE)
        assert again is not None and again.body == b"long" and again.redelivered
        # and the first holder's late settling changes nothing
        holder.reject(delivery, "too late")
        other.ack(again)
    assert broker.depth(queue) == 0
    assert broker.depth(queue + ".dead") == 0


def test_a_closed_consumer_leaves_the_group_and_stale_ones_are_swept(
    broker: RedisBroker, queue: str, raw: redis.Redis, monkeypatch
):
    # given a ghost consumer (its process died long ago, holding nothing)
    broker.declare(queue)
    raw.xgroup_createconsumer(stream_key(queue), GROUP, "ghost")

    def names() -> set[bytes]:
        return {c["name"] for c in raw.xinfo_consumers(stream_key(queue), GROUP)}

    assert names() == {b"ghost"}
    # when a consumer looks for stale ones (at once; stale: idle over twice the visibility)
    monkeypatch.setattr(consumer_module, "SWEEP_EVERY", 0.0)
    monkeypatch.setattr(consumer_module, "STALE_CONSUMER", timedelta(milliseconds=100))
    time.sleep(2 * broker.visibility.total_seconds() + 0.1)
    broker.publish(queue, b"x")
    consumer = broker.consumer(queue)
    consumer.ack(consumer.get(DEADLINE))
    # then the ghost is gone, and the consumer itself is gone once closed
    assert names() == {consumer.name.encode()}
    consumer.close()
    assert names() == set()
