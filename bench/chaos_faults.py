"""The faults of bench/chaos.py: a schedule drawn from a seed, and the hands that inject it.

The schedule is drawn once, before the run, from ``random.Random(f"{seed}/{installation}")``:
each fault's instant (seconds after injection starts), kind, length and a number in [0, 1) that
picks its target (which worker, which queue, a proxy cut or a server crash). A run with the same
seed and minutes replays the same schedule; the daemons' own timing is not replayed.

Faults come one at a time: the next one starts 10-40 s after the previous one ended (or at its
planned instant, if the previous one ran late). While they run, an operator's init system
(:class:`Init`) restarts a daemon that exits on its own, and counts it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psutil

from mq.message import status_queue
from tests.faults.count_run import append
from tests.faults.drill import Window

if TYPE_CHECKING:
    from chaos_rig import Rig

#: Kinds of fault with their weights, per installation.
KINDS = {
    "pg": {
        "scheduler SIGKILL": 2,
        "worker SIGKILL": 4,
        "supervisor SIGKILL": 2,
        "store outage": 4,
        "broker outage": 3,
        "poison": 2,
    },
    "embedded": {
        "scheduler SIGKILL": 2,
        "worker SIGKILL": 4,
        "supervisor SIGKILL": 2,
        "store outage": 4,
        "poison": 2,
    },
}
#: Outages last this many seconds (uniform).
OUTAGE_SECONDS = (1.0, 30.0)
#: Seconds between the end of a fault and the start of the next (uniform).
GAP_SECONDS = (10.0, 40.0)
#: Seconds before the first fault: the installation is up and work flows.
FIRST_AFTER = (5.0, 15.0)
#: Seconds an operator's init system takes to start a killed scheduler or supervisor again.
RESTART_DELAY = (0.5, 5.0)
#: Share of PostgreSQL outages that are a crash and restart of the server itself
#: (``pg_ctl stop -m immediate``), the others a cut of the proxy.
SERVER_CRASH_SHARE = 0.3
#: Prefix of the line a worker's SIGKILL leaves in the runs file (``chaos kill-worker PID
#: INSTANCE ISO-INSTANT``: ``RunLog`` reads lines of two or three words only), so that the counts can tell whether a command ended
#: before or after its worker was killed.
KILL_MARK = "chaos kill-worker"


@dataclass(frozen=True)
class Fault:
    """One planned fault."""

    at: float
    kind: str
    #: Outage length, or the restart delay after a SIGKILL of a daemon.
    seconds: float
    #: Picks the target: which worker, which queue, proxy cut or server crash.
    pick: float


def schedule(seed: int, installation: str, seconds: float) -> list[Fault]:
    """The faults of one run of ``seconds`` on ``installation``."""
    rng = random.Random(f"{seed}/{installation}")
    kinds = KINDS[installation]
    names, weights = list(kinds), list(kinds.values())
    faults: list[Fault] = []
    at = rng.uniform(*FIRST_AFTER)
    while at < seconds:
        kind = rng.choices(names, weights)[0]
        if kind.endswith("outage"):
            length = rng.uniform(*OUTAGE_SECONDS)
        elif kind.endswith("SIGKILL") and kind != "worker SIGKILL":
            length = rng.uniform(*RESTART_DELAY)
        else:
            length = 0.0
        faults.append(Fault(round(at, 1), kind, round(length, 1), rng.random()))
        at += length + rng.uniform(*GAP_SECONDS)
    return faults


def poison_bodies(process: str, kind: str) -> dict[str, bytes]:
    """Hostile bodies by name, for a process queue (``kind`` ``uow``) or the status queue
    (``uow_status``); each must end in the queue's dead-letter queue."""
    return {
        "deeply nested JSON": b"[" * 100_000,
        "invalid UTF-8": b'{"v": 1, "kind": "' + kind.encode() + b'", "uow_id": "\xc3\x28"}',
        "wrong types": json.dumps(
            {"v": 1, "kind": [kind], "uow_id": 12345, "process": {"name": process}}
        ).encode(),
        "unknown unit of work": json.dumps(
            {"v": 1, "kind": kind, "uow_id": "01chaosnosuchunit0000000", "process": process}
        ).encode(),
    }


@dataclass
class Done:
    """What one injected fault did."""

    fault: Fault
    started: float  #: seconds after injection started
    #: When it was injected (UTC).
    utc: datetime = field(default_factory=lambda: datetime.now(UTC))
    target: str = ""
    #: The outage window (outages only).
    window: Window | None = None
    error: str | None = None
    #: Poison: messages published per queue.
    poison: dict[str, int] = field(default_factory=dict)


class Init:
    """An operator's init system for the scheduler, the supervisor and mx: a daemon that exits
    is started again; exits the faults did not cause are counted as unexpected."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.lock = threading.Lock()
        self.unexpected: list[str] = []
        self.failed_starts: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="init", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(120)

    def restart(self, name: str) -> None:
        """``launch.py --start NAME`` again (under :attr:`lock`); a failure is counted and
        retried by the watch."""
        try:
            self.rig.inst.start(name, ready=90)
        except AssertionError as exc:
            self.failed_starts.append(f"{name}: {str(exc).splitlines()[0]}")

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            with self.lock:
                for name, daemon in list(self.rig.inst.daemons.items()):
                    if daemon.alive():
                        continue
                    self.unexpected.append(
                        f"{name} pid {daemon.pid} exited with {daemon.proc.returncode} at "
                        f"{datetime.now(UTC):%H:%M:%S}Z; last lines:\n{daemon.tap.tail(15)}"
                    )
                    self.restart(name)


class Injector:
    """Injects the faults of a schedule into one installation, one at a time, in a thread."""

    def __init__(self, rig: Rig, faults: list[Fault], init: Init) -> None:
        self.rig = rig
        self.faults = faults
        self.init = init
        self.done: list[Done] = []
        self._stop = threading.Event()
        self._start = 0.0
        self._thread = threading.Thread(target=self._run, name="faults", daemon=True)

    def start(self) -> None:
        self._start = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        """Inject no more (a fault in progress ends first: every outage is undone)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(600)

    def _run(self) -> None:
        for fault in self.faults:
            wait = fault.at - (time.monotonic() - self._start)
            if self._stop.wait(max(0.0, wait)):
                return
            record = Done(fault, round(time.monotonic() - self._start, 1))
            log(f"{self.rig.name}: {fault.kind} ({fault.seconds} s) at {record.started} s")
            try:
                self.inject(fault, record)
            except Exception as exc:  # noqa: BLE001 - a hand that failed is reported, not fatal
                record.error = f"{type(exc).__name__}: {exc}"
                log(f"{self.rig.name}: {fault.kind} failed: {record.error}")
            self.done.append(record)

    def inject(self, fault: Fault, record: Done) -> None:
        kind = fault.kind
        if kind in ("scheduler SIGKILL", "supervisor SIGKILL"):
            self._kill_daemon(kind.split()[0], fault.seconds, record)
        elif kind == "worker SIGKILL":
            self._kill_worker(fault.pick, record)
        elif kind == "store outage":
            self._store_outage(fault, record)
        elif kind == "broker outage":
            record.target = "proxy cut"
            record.window = Window()
            with self._outage(record.window):
                self.rig.rabbit.proxy.down()
                time.sleep(fault.seconds)
                self.rig.rabbit.proxy.up()
        elif kind == "poison":
            self._poison(fault.pick, record)
        else:
            raise ValueError(kind)

    @contextlib.contextmanager
    def _outage(self, window: Window):
        window.open()
        try:
            yield
        finally:
            window.close()

    def _kill_daemon(self, name: str, delay: float, record: Done) -> None:
        with self.init.lock:
            daemon = self.rig.inst.daemons[name]
            record.target = f"{name} pid {daemon.pid}"
            if daemon.alive():
                self.rig.inst.kill(name)
            time.sleep(delay)
            self.init.restart(name)

    def _kill_worker(self, pick: float, record: Done) -> None:
        workers = worker_processes(self.rig)
        if not workers:
            record.error = "no worker running"
            return
        instance, proc = workers[int(pick * len(workers))]
        record.target = f"{instance} pid {proc.pid}"
        stamp = datetime.now(UTC).isoformat()
        append(str(self.rig.runs.path), f"{KILL_MARK} {proc.pid} {instance} {stamp}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)

    def _store_outage(self, fault: Fault, record: Done) -> None:
        record.window = Window()
        if self.rig.name == "embedded":
            record.target = "exclusive lock on the SQLite file"
            connection = sqlite3.connect(self.rig.sqlite_path, timeout=60, isolation_level=None)
            try:
                connection.execute("BEGIN EXCLUSIVE")
                with self._outage(record.window):
                    time.sleep(fault.seconds)
                    connection.execute("ROLLBACK")
            finally:
                connection.close()
            return
        if fault.pick < SERVER_CRASH_SHARE:
            record.target = "server crash (pg_ctl stop -m immediate) and start"
            cluster = self.rig.cluster
            with self._outage(record.window):
                try:
                    cluster.stop("immediate")
                    time.sleep(fault.seconds)
                finally:
                    if not cluster.running:
                        cluster.start()
            self.rig.inst.reopen_store()
            return
        record.target = "proxy cut"
        with self._outage(record.window):
            self.rig.pg.proxy.down()
            try:
                time.sleep(fault.seconds)
            finally:
                self.rig.pg.proxy.up()

    def _poison(self, pick: float, record: Done) -> None:
        processes = self.rig.work.processes
        process = processes[int(pick * len(processes))]
        prefix = self.rig.inst.queue_prefix
        targets = {
            f"{prefix}.{process}": poison_bodies(process, "uow"),
            status_queue(prefix): poison_bodies(process, "uow_status"),
        }
        record.target = f"{process} queue and status queue"
        with self.rig.direct_broker() as broker:
            for queue, bodies in targets.items():
                for body in bodies.values():
                    broker.publish(queue, body)
                record.poison[queue] = len(bodies)


def worker_processes(rig: Rig) -> list[tuple[str, psutil.Process]]:
    """(instance, process) of every worker of the installation running now, by instance name:
    the supervisor starts them as ``process_starter.py INSTANCE --supervised``."""
    found = []
    for proc in rig.inst.ours():
        try:
            argv = proc.cmdline()
        except psutil.Error:
            continue
        if "--supervised" in argv and len(argv) >= 3 and argv[-3].endswith("process_starter.py"):
            found.append((argv[-2], proc))
    return sorted(found, key=lambda item: item[0])


def log(text: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {text}", file=sys.stderr, flush=True)


def parse_kill_line(line: str) -> tuple[int, str, datetime | None] | None:
    """(pid, instance, instant) of a :data:`KILL_MARK` line of the runs file, else None."""
    if not line.startswith(KILL_MARK):
        return None
    words = line.split()
    at = None
    if len(words) > 4:
        with contextlib.suppress(ValueError):
            at = datetime.fromisoformat(words[4])
    return int(words[2]), words[3], at


def describe(faults: list[Fault]) -> list[dict[str, Any]]:
    return [
        {"at": f.at, "kind": f.kind, "seconds": f.seconds, "pick": round(f.pick, 3)} for f in faults
    ]
