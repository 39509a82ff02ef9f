"""CPU accounting for bench/dispatch.py: CPU seconds spent by each party during a timed window.

Imported by both sides (the project's venv and bench/.venv-celery), so it needs psutil only.
Parties: ``client`` (the benchmark process: the scheduler's role), ``workers`` (the worker OS
processes and their children, e.g. Celery's pool), the broker servers ``rabbitmq``, ``redis`` and
``nats`` (the process listening on the AMQP port 5672, on 6379 and on 4222: each one process, its
threads included) and ``postgresql`` (the process listening on 5432 and all its children); the
servers are shared, so other clients' work counts too. ``busy`` is the whole machine's user and
system CPU time, so what the parties did not use of it is other work competing for the cores.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

import psutil

AMQP_PORT = 5672
REDIS_PORT = 6379
NATS_PORT = 4222
POSTGRES_PORT = 5432
#: Broker servers measured, by party name: the port their server process listens on.
BROKER_PORTS = {"rabbitmq": AMQP_PORT, "redis": REDIS_PORT, "nats": NATS_PORT}


def listener(port: int) -> int | None:
    """The pid listening on 127.0.0.1:``port`` (or any address), if visible."""
    with contextlib.suppress(psutil.Error):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
                return conn.pid
    return None


def others_cores(cpu: dict[str, float], parties: Iterable[str], seconds: float) -> float:
    """Cores' worth of CPU that work other than ``parties`` used during the window."""
    used = sum(cpu.get(name, 0.0) for name in parties if name != "busy")
    return max(cpu.get("busy", 0.0) - used, 0.0) / seconds


def _cpu(pids: Iterable[int], *, children: bool) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            procs = [proc, *(proc.children(recursive=True) if children else [])]
            for one in procs:
                with contextlib.suppress(psutil.Error):
                    times = one.cpu_times()
                    total += times.user + times.system
    return total


class CpuMeter:
    """Snapshots of CPU seconds per party; :meth:`delta` subtracts the first from the last.

    A worker process that ends inside the window loses its CPU time: take the last snapshot
    before stopping them.
    """

    def __init__(self, worker_pids: Iterable[int]) -> None:
        self.worker_pids = list(worker_pids)
        self.brokers = {name: listener(port) for name, port in BROKER_PORTS.items()}
        self.postgresql = listener(POSTGRES_PORT)
        self._first: dict[str, float] | None = None

    def snapshot(self) -> dict[str, float]:
        parties = {
            "client": _cpu([os.getpid()], children=False),
            "workers": _cpu(self.worker_pids, children=True),
        }
        for name, pid in self.brokers.items():
            if pid:
                parties[name] = _cpu([pid], children=False)
        if self.postgresql:
            parties["postgresql"] = _cpu([self.postgresql], children=True)
        # Process time only: interrupts and softirqs (loopback networking of the run itself)
        # are charged to no process, so they would count as other work.
        times = psutil.cpu_times()
        parties["busy"] = times.user + times.nice + times.system
        return parties

    def start(self) -> None:
        self._first = self.snapshot()

    def delta(self) -> dict[str, float]:
        """CPU seconds per party since :meth:`start`."""
        assert self._first is not None, "start() first"
        last = self.snapshot()
        return {name: last[name] - self._first.get(name, 0.0) for name in last}
