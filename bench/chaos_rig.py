"""The two installations bench/chaos.py runs on, built from the fault suite's tools
(``tests/faults/``), and everything they leave behind removed afterwards.

- ``pg``: a private PostgreSQL cluster (``PgCluster``: initdb in a temporary folder, as the
  ``postgres`` user, on a free port) and the shared RabbitMQ, each behind a ``TcpProxy`` this
  bench owns; the daemons only know the proxies' addresses. Queues carry a unique prefix and are
  deleted at the end (then any queue left with that prefix, found with ``rabbitmqctl``).
- ``embedded``: the default installation, a SQLite file and the store queue
  (``broker_uri = store``).

:class:`Rig` also holds the workload: the registration file and the counting command's runs file.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pika

from db.clock import SystemClock
from db.timeperiod import Timeperiod
from mq import open_broker
from mq.message import process_queue, status_queue
from mq.rabbitmq import RabbitBroker
from tests.conftest import RABBITMQ_URI, rabbitmq_problem
from tests.faults.conftest import ProxiedRabbit, ProxiedStore
from tests.faults.counting import COUNT_RUN, RunLog, command
from tests.faults.installation import FaultInstallation
from tests.faults.pgcluster import PgCluster, find_bin_dir
from tests.faults.proxy import TcpProxy

INSTALLATIONS = ("pg", "embedded")
#: What each installation is, for the report.
DESCRIPTIONS = {
    "pg": "PostgreSQL (private cluster, through a proxy) + RabbitMQ (shared server, through a proxy)",
    "embedded": "embedded default: SQLite file + the store queue (`broker_uri = store`)",
}

#: The freerun that is mid-run at most faults: fires every FLOW_EVERY s, runs FLOW_SECONDS.
FLOW_EVERY, FLOW_SECONDS = 3, 2.0
#: The short freerun: fires every TICK_EVERY s, runs TICK_SECONDS.
TICK_EVERY, TICK_SECONDS = 2, 0.2
#: Days of hourly periods behind now when the run starts: the catch-up backlog.
BACKLOG_DAYS = 2
#: Managed jobs of the hourly process running at once.
HOURLY_MAX_ACTIVE = 2
#: Seconds a daily job's command runs.
DAILY_SECONDS = 1.0
#: Worker processes per process (the built-in ``adhoc`` keeps its own one).
WORKERS = 2
#: Attempts after the first: enough that a few faults landing on one unit of work do not give it
#: up (a unit canceled with its retries spent counts as lost).
RETRIES = 5
#: Seconds an ad-hoc task runs.
TASK_SECONDS = 1.0


def hourly_seconds(minutes: float, periods: int) -> float:
    """How long each hourly job's command runs so that the backlog lasts about 80 % of the run
    (``HOURLY_MAX_ACTIVE`` at a time), between 0.5 and 12 s."""
    return round(min(12.0, max(0.5, minutes * 60 * 0.8 * HOURLY_MAX_ACTIVE / periods)), 1)


@dataclass
class Workload:
    """The processes registered, and which process names each kind of work counts."""

    entries: list[dict[str, Any]]
    backlog_start: Timeperiod
    hourly_periods: int
    hourly_seconds: float
    freerun: tuple[str, ...] = ("flow", "tick")
    managed: tuple[str, ...] = ("hourly", "daily")
    adhoc: tuple[str, ...] = ("adhoc",)

    @property
    def processes(self) -> list[str]:
        return [*self.freerun, *self.managed, *self.adhoc]

    def workers(self) -> dict[str, int]:
        """Worker processes per process (the supervisor starts them)."""
        counts = {e["name"]: e["workers"] for e in self.entries}
        counts["adhoc"] = 1
        return counts


def workload(runs: RunLog, minutes: float) -> Workload:
    """Two freeruns, an hourly process under a daily one in a tree (the daily job of a day runs
    once its 24 hourly children are done), ``BACKLOG_DAYS`` days behind; every command counts
    its runs in ``runs``."""
    clock = SystemClock()
    start_day = Timeperiod.containing("daily", clock.now()).previous(BACKLOG_DAYS)
    first_hour = start_day.cast("hourly")
    periods = 0
    hour = first_hour
    while hour.end <= clock.now():
        periods += 1
        hour = hour.next()
    seconds = hourly_seconds(minutes, periods)
    shared = {"retries": RETRIES, "retry_delay": 1, "workers": WORKERS}
    entries = [
        {
            "name": "flow",
            "kind": "freerun",
            "trigger": f"every {FLOW_EVERY}",
            "max_active": 3,
            "command": command(runs.path, FLOW_SECONDS),
            **shared,
        },
        {
            "name": "tick",
            "kind": "freerun",
            "trigger": f"every {TICK_EVERY}",
            "max_active": 3,
            "command": command(runs.path, TICK_SECONDS),
            **shared,
        },
        {
            "name": "hourly",
            "kind": "managed",
            "tree": "chaos",
            "time_qualifier": "hourly",
            "start_timeperiod": str(first_hour),
            "lag": 0,
            "trigger": "every 10",
            "max_active": HOURLY_MAX_ACTIVE,
            "command": command(runs.path, seconds),
            **shared,
        },
        {
            "name": "daily",
            "kind": "managed",
            "tree": "chaos",
            "time_qualifier": "daily",
            "start_timeperiod": str(start_day),
            "lag": 0,
            "trigger": "every 10",
            "max_active": 1,
            "command": command(runs.path, DAILY_SECONDS),
            **shared,
        },
    ]
    return Workload(entries, start_day, periods, seconds)


def task_command(runs: RunLog) -> str:
    """An ad-hoc task's shell command: the counting command, its ids from the environment."""
    return (
        f"{sys.executable} {COUNT_RUN} {runs.path} "
        f'"$TACTUS_UOW_ID" "$TACTUS_ATTEMPT" {TASK_SECONDS}'
    )


@dataclass
class Rig:
    """One installation under test, with what its faults act on."""

    name: str
    root: Path
    inst: FaultInstallation
    runs: RunLog
    work: Workload
    #: ``pg``: the private cluster and the two proxies.
    cluster: PgCluster | None = None
    pg: ProxiedStore | None = None
    rabbit: ProxiedRabbit | None = None
    #: ``embedded``: the SQLite file.
    sqlite_path: Path | None = None
    notes: list[str] = field(default_factory=list)

    def queues(self) -> list[str]:
        """Every process queue and the status queue."""
        prefix = self.inst.queue_prefix
        return [process_queue(prefix, p) for p in self.work.processes] + [status_queue(prefix)]

    @contextlib.contextmanager
    def direct_broker(self) -> Iterator[Any]:
        """The installation's broker reached without a proxy: RabbitMQ itself, or the store queue
        over a connection of the bench's own."""
        if self.name == "pg":
            broker = open_broker(RABBITMQ_URI, self.inst.store)
        else:
            broker = open_broker("store", self.inst.store)
        try:
            yield broker
        finally:
            broker.close()


def problem(name: str) -> str | None:
    """Why installation ``name`` cannot run here, or None."""
    if name == "pg":
        if find_bin_dir() is None:
            return "PostgreSQL server binaries (initdb, pg_ctl) not found"
        return rabbitmq_problem()
    return None


@contextlib.contextmanager
def rig(name: str, minutes: float, *, keep: bool) -> Iterator[Rig]:
    """Build installation ``name`` (not started) in a temporary folder; on exit stop every
    process, delete the queues, the private cluster and the folder (the folder and the cluster's
    data are kept with ``keep``)."""
    folder = Path(tempfile.mkdtemp(prefix=f"tactus-chaos-{name}-"))
    root = folder / "inst"
    root.mkdir()
    runs = RunLog(folder / "runs.txt")
    work = workload(runs, minutes)
    prefix = f"chaos{secrets.token_hex(4)}"
    made: Rig | None = None
    cluster: PgCluster | None = None
    proxies: list[TcpProxy] = []
    try:
        if name == "pg":
            bin_dir = find_bin_dir()
            assert bin_dir is not None
            cluster = PgCluster(bin_dir).create()
            database = cluster.create_database()
            pg_proxy = TcpProxy("127.0.0.1", cluster.port, name="pg-proxy").start()
            proxies.append(pg_proxy)
            parts = urlsplit(RABBITMQ_URI)
            amqp = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672, name="amqp-proxy")
            proxies.append(amqp.start())
            pg = ProxiedStore(cluster, database, pg_proxy)
            rabbit = ProxiedRabbit(amqp, prefix)
            inst = FaultInstallation(
                root,
                store_uri=pg.uri,
                direct_store_uri=pg.direct_uri,
                broker_uri=rabbit.uri,
                queue_prefix=prefix,
                pg=pg,
                rabbit=rabbit,
            )
            made = Rig(name, folder, inst, runs, work, cluster=cluster, pg=pg, rabbit=rabbit)
        else:
            sqlite_path = root / "var" / "tactus.db"
            uri = f"sqlite:///{sqlite_path}"
            inst = FaultInstallation(
                root, store_uri=uri, direct_store_uri=uri, broker_uri="store", queue_prefix=prefix
            )
            made = Rig(name, folder, inst, runs, work, sqlite_path=sqlite_path)
        yield made
    finally:
        if made is not None:
            made.inst.stop()
        if made is not None and name == "pg":
            _delete_queues(made, prefix)
        for proxy in proxies:
            proxy.close()
        if cluster is not None:
            if keep:
                with contextlib.suppress(Exception):
                    cluster.stop("fast")
                print(f"kept the private cluster's data in {cluster.data}", file=sys.stderr)
            else:
                cluster.destroy()
        if keep:
            print(f"kept the installation folder {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)


def _delete_queues(made: Rig, prefix: str) -> None:
    """Delete this run's queues on the shared RabbitMQ (with their dead-letter and delay
    queues), then any other queue whose name starts with the run's prefix."""
    broker = RabbitBroker(RABBITMQ_URI)
    try:
        for queue in made.queues():
            with contextlib.suppress(Exception):
                broker.delete(queue)
    finally:
        broker.close()
    if shutil.which("rabbitmqctl") is None:
        return
    listed = subprocess.run(
        ["rabbitmqctl", "list_queues", "-q", "--no-table-headers", "name"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    left = [n for n in listed.stdout.split() if n.startswith(prefix)]
    if left:
        connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URI))
        try:
            channel = connection.channel()
            for queue in left:
                channel.queue_delete(queue)
        finally:
            connection.close()
