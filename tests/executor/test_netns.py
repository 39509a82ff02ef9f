"""An executor in a network namespace of its own that reaches mx's port and nothing else
(SPEC section 11): the store (PostgreSQL) and the broker (RabbitMQ) are unreachable from it, as
failed connects prove, and freerun and managed units of work run there to processed.

The namespace and its veth pair are made and removed by the test (``ip netns``, root). mx
listens on the host's end of the pair; PostgreSQL and RabbitMQ listen on the host's loopback,
which is not the namespace's. Where namespaces cannot be made, or the servers are missing, the
test is skipped with the reason, and fails when ``CI=true`` (tests/servers.py).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest

from db.models import JobQuery
from db.states import JobState, UowState
from mq.message import process_queue, status_queue
from mq.rabbitmq import RabbitBroker
from tests import servers
from tests.conftest import RABBITMQ_URI, rabbitmq_problem
from tests.executor.rig import ExecutorRig

#: The namespace's side reaches the host's side at HOST (mx listens there) from GUEST.
SUBNET = "10.231.{n}.{host}"

PROBE = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
try:
    socket.create_connection((host, port), timeout=2).close()
except OSError as exc:
    print(f"refused {exc}")
    sys.exit(1)
print("connected")
"""


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


class Namespace:
    """A network namespace joined to the host by a veth pair (host side ``host_ip``)."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        n = int(tag[:2], 16) % 250 + 1
        self.name = f"tactus-{tag}"
        self.host_link, self.guest_link = f"tx{tag}h", f"tx{tag}g"
        self.host_ip = SUBNET.format(n=n, host=1)
        self.guest_ip = SUBNET.format(n=n, host=2)

    def create(self) -> str | None:
        """Make it; None, or why it cannot be made."""
        if os.geteuid() != 0 or shutil.which("ip") is None:
            return "network namespaces need root and iproute2 (ip netns)"
        steps = [
            ("netns", "add", self.name),
            ("link", "add", self.host_link, "type", "veth", "peer", "name", self.guest_link),
            ("link", "set", self.guest_link, "netns", self.name),
            ("addr", "add", f"{self.host_ip}/24", "dev", self.host_link),
            ("link", "set", self.host_link, "up"),
            (
                "netns",
                "exec",
                self.name,
                "ip",
                "addr",
                "add",
                f"{self.guest_ip}/24",
                "dev",
                self.guest_link,
            ),
            ("netns", "exec", self.name, "ip", "link", "set", self.guest_link, "up"),
            ("netns", "exec", self.name, "ip", "link", "set", "lo", "up"),
        ]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                return (
                    f"cannot make a network namespace (ip {' '.join(step)}): {done.stderr.strip()}"
                )
        return None

    def remove(self) -> None:
        _ip("link", "del", self.host_link)
        _ip("netns", "del", self.name)

    def connects(self, host: str, port: int) -> tuple[bool, str]:
        """Whether a TCP connect from inside the namespace succeeds, and what it said."""
        done = subprocess.run(
            ["ip", "netns", "exec", self.name, sys.executable, "-c", PROBE, host, str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return done.returncode == 0, (done.stdout + done.stderr).strip()


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    space = Namespace()
    problem = space.create()
    if problem:
        space.remove()
        servers.unavailable(problem)
    try:
        yield space
    finally:
        space.remove()


@pytest.fixture
def postgres_uri() -> Iterator[str]:
    problem = servers.POSTGRES.available()
    if problem:
        servers.unavailable(problem)
    database, uri = servers.POSTGRES.create_database()
    try:
        yield uri
    finally:
        servers.POSTGRES.drop_database(database)


@pytest.fixture
def rabbitmq() -> str:
    problem = rabbitmq_problem()
    if problem:
        servers.unavailable(problem)
    return RABBITMQ_URI


def test_an_executor_in_its_own_network_namespace_runs_freerun_and_managed_units(
    tmp_path, namespace, postgres_uri, rabbitmq
):
    rig = ExecutorRig(
        tmp_path, store_uri=postgres_uri, broker_uri=rabbitmq, mx_host=namespace.host_ip
    )
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    managed = rig.counting("hourly", kind="managed", time_qualifier="hourly", lag=0)
    for field in ("trigger", "max_active"):
        managed.pop(field)
    managed["start_timeperiod"] = (hour - timedelta(hours=2)).strftime("%Y%m%d%H")
    try:
        rig.up(rig.counting("adhoc_fires"), managed)
        # given: from the namespace, mx's port answers; the store's and the broker's do not
        store = urlsplit(postgres_uri)
        broker = urlsplit(rabbitmq)
        reached, said = namespace.connects(namespace.host_ip, rig.mx_port)
        assert reached, said
        for host in (store.hostname, namespace.host_ip):
            for port in (store.port or 5432, broker.port or 5672):
                reached, said = namespace.connects(host, port)
                assert not reached, f"{host}:{port} is reachable from the namespace: {said}"
        # when an executor runs there, with nothing but mx's URL and a token
        rig.executor("caged", "--slots", "2", "--box", "cage", "--insecure", netns=namespace.name)
        fired = rig.trigger("adhoc_fires", 3)
        # then the freerun units of work and the managed jobs' units run there to processed
        rig.wait(lambda: rig.all_processed(fired), 60, "the freerun units processed")
        jobs = rig.wait(lambda: _processed_jobs(rig, 2), 90, "two hourly jobs processed")
        for uow_id in [*fired, *(job.uow_id for job in jobs)]:
            uow = rig.store.get_uow(uow_id)
            assert uow.worker_id.startswith("http:caged@cage:") and uow.box_id == "cage"
        counts = rig.run_counts()
        assert all(counts[u] == 1 for u in fired)
    finally:
        rig.stop()
        _delete_queues(rig.queue_prefix, ("adhoc_fires", "hourly", "adhoc"))


def _processed_jobs(rig: ExecutorRig, count: int):
    jobs = rig.store.find_jobs(JobQuery(process="hourly"), limit=10).items
    done = [j for j in jobs if j.state is JobState.PROCESSED and j.uow_id]
    if len(done) < count:
        return None
    assert all(rig.store.get_uow(j.uow_id).state is UowState.PROCESSED for j in done)
    return done


def _delete_queues(prefix: str, processes: tuple[str, ...]) -> None:
    queues = [process_queue(prefix, p) for p in processes] + [status_queue(prefix)]
    broker = RabbitBroker(RABBITMQ_URI)
    try:
        for queue in queues:
            broker.delete(queue)  # with its dead-letter and delay queues
    finally:
        broker.close()
