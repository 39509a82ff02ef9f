"""Fixtures of the fault suite: a private PostgreSQL cluster, proxies in front of it and of
RabbitMQ, and an installation of real daemons that reaches both through the proxies.

The suite needs the PostgreSQL server binaries (``initdb``, ``pg_ctl``) and a RabbitMQ on
127.0.0.1:5672: without them it skips with the reason, and fails when ``CI=true``
(``tests/servers.py``). The shared servers are never stopped or reconfigured: each test gets its
own database in the private cluster and its own queue prefix on RabbitMQ, both removed afterwards.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pika
import pytest

from tests import servers
from tests.conftest import RABBITMQ_URI, rabbitmq_problem
from tests.faults.counting import RunLog
from tests.faults.installation import FaultInstallation
from tests.faults.pgcluster import PgCluster, find_bin_dir
from tests.faults.proxy import TcpProxy

#: Every queue of this test session starts with it; the session's end deletes what is left.
SESSION_PREFIX = f"fault{secrets.token_hex(3)}"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """The private cluster of this session (initdb in a temporary folder)."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        servers.unavailable(
            "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin"
            " (set TACTUS_TEST_PG_BIN): the fault suite runs a private cluster"
        )
    cluster = PgCluster(bin_dir)
    try:
        cluster.create()
    except (RuntimeError, OSError, subprocess.TimeoutExpired, KeyError) as exc:
        cluster.destroy()
        servers.unavailable(f"cannot start a private PostgreSQL cluster: {exc}")
    yield cluster
    cluster.destroy()


@dataclass
class ProxiedStore:
    """One test's database: the URI the daemons get (through :attr:`proxy`) and the direct one
    the test reads with."""

    cluster: PgCluster
    database: str
    proxy: TcpProxy

    @property
    def uri(self) -> str:
        return self.cluster.uri(self.database, port=self.proxy.port)

    @property
    def direct_uri(self) -> str:
        return self.cluster.uri(self.database)


@pytest.fixture
def pg(pg_cluster: PgCluster) -> Iterator[ProxiedStore]:
    """A fresh database in the private cluster, behind a proxy; dropped afterwards."""
    database = pg_cluster.create_database()
    proxy = TcpProxy("127.0.0.1", pg_cluster.port, name="pg-proxy").start()
    try:
        yield ProxiedStore(pg_cluster, database, proxy)
    finally:
        proxy.close()
        if not pg_cluster.running:  # a test that stopped the cluster and failed before its start
            pg_cluster.start()
        pg_cluster.drop_database(database)


@dataclass
class ProxiedRabbit:
    """RabbitMQ behind a proxy, with this test's queue prefix."""

    proxy: TcpProxy
    prefix: str
    #: Queues to delete after the test (with their dead-letter and delay queues).
    queues: set[str] = field(default_factory=set)

    @property
    def uri(self) -> str:
        """The broker URI the daemons get: the proxy's address, as an operator writes it."""
        return f"amqp://guest:guest@127.0.0.1:{self.proxy.port}/%2F"

    def channel(self) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
        """A plain pika channel straight to RabbitMQ (not through the proxy)."""
        return _raw_channel()


@contextlib.contextmanager
def _raw_channel() -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URI))
    try:
        yield connection.channel()
    finally:
        with contextlib.suppress(Exception):
            connection.close()


_counter = iter(range(1, 1_000_000))


@pytest.fixture
def rabbit() -> Iterator[ProxiedRabbit]:
    """A proxy in front of the shared RabbitMQ and a queue prefix unique to this test; the
    test's queues are deleted afterwards."""
    problem = rabbitmq_problem()
    if problem:
        servers.unavailable(problem)
    parts = urlsplit(RABBITMQ_URI)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672, name="amqp-proxy").start()
    link = ProxiedRabbit(proxy, f"{SESSION_PREFIX}_{next(_counter)}")
    try:
        yield link
    finally:
        proxy.close()
        from mq.rabbitmq import RabbitBroker

        broker = RabbitBroker(RABBITMQ_URI)
        try:
            for queue in sorted(link.queues):
                broker.delete(queue)
        finally:
            broker.close()


@pytest.fixture(scope="session", autouse=True)
def _no_queue_left_behind() -> Iterator[None]:
    """At the end of the session, delete any queue of this session a failed test left."""
    yield
    if shutil.which("rabbitmqctl") is None or rabbitmq_problem():
        return
    listed = subprocess.run(
        ["rabbitmqctl", "list_queues", "-q", "--no-table-headers", "name"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    names = [n for n in listed.stdout.split() if n.startswith(SESSION_PREFIX)]
    if names:
        with _raw_channel() as channel:
            for name in names:
                channel.queue_delete(name)


@pytest.fixture
def runs(tmp_path: Path) -> RunLog:
    """This test's runs file (see ``counting.py``)."""
    return RunLog(tmp_path / "runs.txt")


@pytest.fixture
def installation(tmp_path: Path, pg: ProxiedStore, rabbit: ProxiedRabbit):
    """An installation on the proxied store and broker, not started yet; every daemon and
    worker is stopped afterwards, and every queue of its processes deleted."""
    root = tmp_path / "inst"
    root.mkdir()
    inst = FaultInstallation(
        root,
        store_uri=pg.uri,
        direct_store_uri=pg.direct_uri,
        broker_uri=rabbit.uri,
        queue_prefix=rabbit.prefix,
        pg=pg,
        rabbit=rabbit,
    )
    try:
        yield inst
    finally:
        try:
            with contextlib.suppress(Exception):
                for record in inst.store.list_processes():
                    rabbit.queues.add(f"{rabbit.prefix}.{record.name}")
            rabbit.queues.add(f"{rabbit.prefix}.uow_status")
        finally:
            inst.stop()
