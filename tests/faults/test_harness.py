"""The fault harness against the real servers: an outage made by a proxy is an outage the store
and the broker clients see, and it ends when the proxy comes back. Without this, a fault test
whose proxy sat beside the connection instead of in it would pass without any fault."""

from __future__ import annotations

import pytest

from db import open_store
from db.errors import BrokerUnavailable, StoreUnavailable
from mq.rabbitmq import RabbitBroker, RetryPolicy

pytestmark = pytest.mark.needs_server


def test_pg_proxy_outage_is_seen_by_the_store(pg):
    # given a store on the private cluster, through the proxy
    store = open_store(pg.uri)
    try:
        store.init_schema()
        store.ping()
        assert pg.proxy.connections_seen >= 1
        # when the proxy is down, then the store cannot be reached
        with pg.proxy.outage():
            with pytest.raises(StoreUnavailable):
                store.ping()
        # and once it is back, the same store object works again
        store.ping()
        # while the direct URI never went through the proxy
        direct = open_store(pg.direct_uri)
        seen = pg.proxy.connections_seen
        direct.ping()
        direct.close()
        assert pg.proxy.connections_seen == seen
    finally:
        store.close()


def test_private_cluster_restart_is_an_outage_too(pg):
    # given a store on the private cluster, through the proxy
    store = open_store(pg.uri)
    try:
        store.ping()
        # when the cluster itself is stopped as in a crash, then the store cannot be reached
        pg.cluster.stop("immediate")
        try:
            with pytest.raises(StoreUnavailable):
                store.ping()
        finally:
            pg.cluster.start()
        # and after the start it works again
        store.ping()
    finally:
        store.close()


def test_amqp_proxy_outage_is_seen_by_the_broker(rabbit):
    # given a broker client through the proxy that gives up quickly
    queue = f"{rabbit.prefix}.harness"
    rabbit.queues.add(queue)
    broker = RabbitBroker(rabbit.uri, retry=RetryPolicy(attempts=2))
    try:
        broker.publish(queue, b"one")
        # when the proxy is down, then publishing fails
        with rabbit.proxy.outage():
            with pytest.raises(BrokerUnavailable):
                broker.publish(queue, b"two")
        # and once it is back, publishing works, and nothing else reached the queue
        broker.publish(queue, b"three")
        assert broker.depth(queue) == 2
    finally:
        broker.close()
