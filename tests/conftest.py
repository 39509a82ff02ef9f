"""Shared fixtures: the clock, and a store per backend for the contract suite."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from db.clock import FakeClock
from tests import servers

if TYPE_CHECKING:
    from mq.broker import Broker

#: Backends of the store contract suite, in the order they are reported.
STORE_BACKENDS = ["sqlite", "postgresql", "mariadb", "mongomock", "mongodb"]
#: Backends whose atomic operations hold across threads and OS processes.
CONCURRENT_BACKENDS = ["sqlite", "postgresql", "mariadb", "mongodb"]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A dependency that ``CI=true`` requires and the machine lacks (:func:`servers.unavailable`
    in a fixture) fails the test: reported as its failure, not as an error of the set-up."""
    report = yield
    if call.when == "setup" and call.excinfo is not None:
        if call.excinfo.errisinstance(servers.Missing):
            report.when = "call"
    return report


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 1, 5, 13, 0, tzinfo=UTC))


@pytest.fixture(scope="session")
def nx_server():
    server = servers.NxServer()
    server.start()
    yield server
    server.stop()


def _sql_server(name: str) -> servers.SqlServer:
    return servers.POSTGRES if name == "postgresql" else servers.MARIADB


@contextlib.contextmanager
def fresh_store_uri(backend: str, tmp_path, nx_server) -> Iterator[str]:
    """A fresh, empty store URI on ``backend`` (one reachable from other OS processes); the
    database is dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'tactus.db'}"
    elif backend in ("postgresql", "mariadb"):
        server = _sql_server(backend)
        problem = server.available()
        if problem:
            servers.unavailable(problem)
        database, uri = server.create_database()
        try:
            yield uri
        finally:
            server.drop_database(database)
    elif backend == "mongodb":
        if nx_server.problem:
            servers.unavailable(nx_server.problem)
        database = servers.unique_name()
        yield f"{nx_server.uri}{database}"
        import pymongo

        client = pymongo.MongoClient(nx_server.uri)
        client.drop_database(database)
        client.close()
    else:  # pragma: no cover - a typo in a parametrize list
        raise ValueError(backend)


def _open(backend: str, uri: str | None):
    from db import open_store

    if backend == "mongomock":
        import mongomock

        from db.backends.mongo import MongoStore

        return MongoStore(client=mongomock.MongoClient(tz_aware=True), database="tactus_test")
    return open_store(uri)


@pytest.fixture(params=STORE_BACKENDS)
def store(request, tmp_path, nx_server):
    """An initialised, empty store on each backend; closed afterwards with no leaked
    connection."""
    backend = request.param
    with contextlib.ExitStack() as stack:
        uri = None
        if backend != "mongomock":
            uri = stack.enter_context(fresh_store_uri(backend, tmp_path, nx_server))
        s = _open(backend, uri)
        try:
            s.init_schema()
            yield s
            # before close(): disposing the engine replaces its pool, which would hide a leak
            engine = getattr(s, "engine", None)
            if engine is not None:
                assert engine.pool.checkedout() == 0, "a connection was not returned to the pool"
        finally:
            s.close()


@pytest.fixture(params=CONCURRENT_BACKENDS)
def concurrent_store_uri(request, tmp_path, nx_server):
    """A store URI, schema created, for backends that are atomic across threads and processes."""
    with fresh_store_uri(request.param, tmp_path, nx_server) as uri:
        s = _open(request.param, uri)
        s.init_schema()
        s.close()
        yield uri


# -- brokers: the broker contract suite --------------------------------------------------------

#: Backends of the broker contract suite, in the order they are reported.
BROKER_BACKENDS = ["store_queue", "rabbitmq", "redis", "nats"]
#: Where the test suite finds RabbitMQ; override for a machine with other credentials.
RABBITMQ_URI = os.environ.get("TACTUS_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/%2F")
#: Where the test suite finds Redis (shared: tests use unique queue names and delete their keys).
REDIS_URI = os.environ.get("TACTUS_TEST_REDIS", "redis://127.0.0.1:6379/0")
#: The contract suite's Redis visibility timeout when a test sets none: short enough that a dead
#: consumer's delivery comes back within a test's deadline.
REDIS_TEST_VISIBILITY = timedelta(seconds=5)
NATS_URI = os.environ.get("TACTUS_TEST_NATS", "nats://127.0.0.1:4222")
#: The AckWait of the contract suite's NATS queues when a test gives no visibility: JetStream's
#: AckWait belongs to the durable consumer, and the last broker to open a consumer sets it, so
#: the dying-consumer test's 2 s holder is followed by this one, well inside its 15 s.
NATS_TEST_VISIBILITY = timedelta(seconds=5)


def rabbitmq_problem() -> str | None:
    """None if the test RabbitMQ accepts connections, else why not."""
    return _unreachable("RabbitMQ", RABBITMQ_URI, 5672, "scripts/test-services starts it")


def nats_problem() -> str | None:
    """None if the test NATS server accepts connections, else why not."""
    return _unreachable("NATS", NATS_URI, 4222, "nats-server -js; scripts/test-services")


def _unreachable(name: str, uri: str, default_port: int, hint: str) -> str | None:
    parts = urlsplit(uri)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    if not servers.port_open(host, port):
        return f"{name} not reachable on {host}:{port} ({hint})"
    return None


def redis_problem() -> str | None:
    """None if the test Redis accepts connections, else why not."""
    parts = urlsplit(REDIS_URI)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    if not servers.port_open(host, port):
        return f"Redis not reachable on {host}:{port}"
    return None


def drop_redis_queues(prefix: str) -> None:
    """Delete the Redis keys of every queue whose name starts with ``prefix`` (a test's unique
    queue prefix): the server is shared."""
    import redis

    from mq.redis import queue_key_pattern

    client = redis.Redis.from_url(REDIS_URI)
    try:
        keys = list(client.scan_iter(match=queue_key_pattern(prefix), count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@dataclass(frozen=True)
class BrokerSpec:
    """How to open the broker under test again, in another thread or OS process (picklable)."""

    backend: str
    #: Unique prefix of this test's queue names (``<prefix>.<name>``).
    prefix: str
    #: The embedded queue's store (``store_queue``); None for RabbitMQ and NATS.
    store_uri: str | None = None
    #: Queue names handed out by :meth:`queue`, deleted after the test.
    names: set[str] = field(default_factory=set, compare=False)

    def queue(self, name: str = "q") -> str:
        """This test's queue ``name`` (unique to the test run)."""
        queue = f"{self.prefix}.{name}"
        self.names.add(queue)
        return queue

    @contextlib.contextmanager
    def open(self, *, visibility: timedelta | None = None) -> Iterator[Broker]:
        """A new broker instance, closed afterwards.

        Args:
            visibility: the store queue's and Redis's visibility timeout and NATS's AckWait
                (RabbitMQ has none: it redelivers when the consumer's connection drops).
        """
        if self.backend == "redis":
            from mq.redis import RedisBroker

            broker = RedisBroker(REDIS_URI, visibility=visibility or REDIS_TEST_VISIBILITY)
            try:
                yield broker
            finally:
                broker.close()
            return
        if self.backend == "nats":
            from mq.nats import NatsBroker

            broker = NatsBroker(NATS_URI, visibility=visibility or NATS_TEST_VISIBILITY)
            try:
                yield broker
            finally:
                broker.close()
            return
        if self.backend == "rabbitmq":
            from mq.rabbitmq import RabbitBroker

            broker = RabbitBroker(RABBITMQ_URI)
            try:
                yield broker
            finally:
                broker.close()
            return
        from db import open_store
        from mq.store_queue import StoreBroker

        store = open_store(self.store_uri)
        try:
            options = {} if visibility is None else {"visibility": visibility}
            broker = StoreBroker("store", store=store, **options)
            try:
                yield broker
            finally:
                broker.close()
            engine = getattr(store, "engine", None)
            if engine is not None:
                assert engine.pool.checkedout() == 0, "a store connection was not returned"
        finally:
            store.close()


@pytest.fixture(
    params=[
        pytest.param("store_queue", id="store_queue"),
        pytest.param("rabbitmq", id="rabbitmq", marks=pytest.mark.needs_server),
        pytest.param("redis", id="redis", marks=pytest.mark.needs_server),
        pytest.param("nats", id="nats", marks=pytest.mark.needs_server),
    ]
)
def broker_spec(request, tmp_path) -> BrokerSpec:
    """Which broker the contract test runs on, with a unique queue prefix; reachable or skipped
    (a failure when CI=true)."""
    prefix = servers.unique_name()
    if request.param in ("rabbitmq", "redis"):
        problem = rabbitmq_problem() if request.param == "rabbitmq" else redis_problem()
        if problem:
            servers.unavailable(problem)
        return BrokerSpec(request.param, prefix)
    if request.param == "nats":
        problem = nats_problem()
        if problem:
            servers.unavailable(problem)
        request.addfinalizer(lambda: _drop_nats_installation(prefix))
        return BrokerSpec("nats", prefix)
    from db import open_store

    store_uri = f"sqlite:///{tmp_path / 'tactus.db'}"
    store = open_store(store_uri)
    store.init_schema()
    store.close()
    return BrokerSpec("store_queue", prefix, store_uri)


def _drop_nats_installation(prefix: str) -> None:
    """Delete the test's stream (after the ``broker`` fixture deleted its queues)."""
    from mq.nats import NatsBroker

    with NatsBroker(NATS_URI) as broker:
        broker.delete_installation(prefix)


@pytest.fixture
def broker(broker_spec: BrokerSpec) -> Iterator[Broker]:
    """The broker under test. Queues named through ``broker_spec.queue`` (or the ``queue``
    fixture) are deleted afterwards (with their dead-letter and delay queues), and consumers the
    test left open (a failing test) are closed."""
    with broker_spec.open() as b:
        opened = []
        open_consumer = b.consumer

        def consumer(queue: str, **options):
            c = open_consumer(queue, **options)
            opened.append(c)
            return c

        b.consumer = consumer  # record, to close what a failing test left open
        try:
            yield b
        finally:
            for c in opened:
                c.close()
            for name in sorted(broker_spec.names):
                b.delete(name)


@pytest.fixture
def queue(broker_spec: BrokerSpec) -> str:
    """A fresh queue name for this test (deleted by the ``broker`` fixture)."""
    return broker_spec.queue("q")
