"""The Tactus side of bench/dispatch.py: one measured run of N units of work end to end.

The benchmark process plays the scheduler: :data:`BATCH` fires at a time go through the
scheduler's own freerun pass (``FreerunFirer.fire_planned``: the fires recorded in one store
transaction, their units of work created in one, linked in one, and their ids published with
one ``publish_many``), as when that many entries fire on the same minute, while a thread of it
consumes ``status_queue(prefix)`` as the scheduler's status listener does (prefetch 50, the
statuses in hand acked together with the next claim, a trickle left to gather for 20 ms) and
counts distinct unit-of-work ids. Worker OS processes
(``python -m workers bench_noop --concurrency 1``) claim, run :class:`NoopWorker`, record the
outcome and publish the status. Timed: from the first fire to the N-th distinct status.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from dispatch_cpu import CpuMeter

from db import open_store
from db.clock import SystemClock
from db.errors import MalformedMessage
from db.models import FireRecord, ProcessEntry, ProcessRecord
from db.states import FireOutcome, ProcessKind, ProcessSource, UowState
from mq import open_broker
from mq.message import Message, process_queue, status_queue
from scheduler.config import SchedulerConfig
from scheduler.dispatch import Dispatcher
from scheduler.freerun import FreerunFirer
from scheduler.service import STATUS_LINGER, STATUS_PREFETCH

if TYPE_CHECKING:
    from collections.abc import Callable

    from db.store import Store
    from mq.broker import Broker

ROOT = Path(__file__).resolve().parent.parent
PROCESS = "bench_noop"
WORKER_CLASS = "bench.dispatch_worker:NoopWorker"
#: Units of work created, then published with one ``publish_many``, per scheduler step.
BATCH = 100
#: Units of work run (untimed) first, so every worker is connected and warm.
WARMUP_PER_WORKER = 5
T0 = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, kw_only=True)
class RunResult:
    n: int
    seconds: float
    #: CPU seconds per party during the timed window (see ``dispatch_cpu``).
    cpu: dict[str, float]

    @property
    def rate(self) -> float:
        return self.n / self.seconds


class Hooks(Protocol):
    """Called around the timed part (a profiler attaching to the worker pids, say)."""

    def before(self, worker_pids: list[int]) -> None: ...

    def after(self) -> None: ...


class Disturbed(RuntimeError):
    """Something logged a warning during the run (a reconnect, say): measure again."""


class _Warnings(logging.Handler):
    """Collects WARNING and worse from ``tactus.*`` loggers of this process while entered."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"client {record.levelname} {record.getMessage()}")

    def __enter__(self) -> _Warnings:
        logging.getLogger("tactus").addHandler(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        logging.getLogger("tactus").removeHandler(self)


class StatusCounter(threading.Thread):
    """Consumes the status queue and counts distinct unit-of-work ids (the scheduler's side)."""

    def __init__(self, broker: Broker, queue: str) -> None:
        super().__init__(name="status-counter", daemon=True)
        self.broker = broker
        self.queue = queue
        self.seen: set[str] = set()
        self.target = 0
        self.reached_at: float | None = None
        self.reached = threading.Event()
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._lock = threading.Lock()

    def expect(self, total: int) -> None:
        """Set ``reached`` (and ``reached_at``) once ``total`` distinct ids have been seen."""
        with self._lock:
            self.target = total
            self.reached.clear()
            self.reached_at = None
            self._check()

    def _check(self) -> None:
        if self.target and len(self.seen) >= self.target and not self.reached.is_set():
            self.reached_at = time.perf_counter()
            self.reached.set()

    def run(self) -> None:
        try:
            with self.broker.consumer(self.queue, prefetch=STATUS_PREFETCH) as consumer:
                self.ready.set()
                while not self.stop.is_set():
                    delivery = consumer.get(0.2)
                    if delivery is None:
                        continue
                    held = [delivery]  # as the scheduler: what is in hand, acked together
                    while (
                        len(held) < STATUS_PREFETCH and (more := consumer.get_ready()) is not None
                    ):
                        held.append(more)
                    good = []
                    for one in held:
                        try:
                            uow_id = Message.decode(one.body).uow_id
                        except MalformedMessage as exc:
                            consumer.reject(one, exc.problem)
                            continue
                        good.append(one)
                        with self._lock:
                            self.seen.add(uow_id)
                            self._check()
                    consumer.ack_many(good, defer=True)
                    if len(held) < STATUS_PREFETCH:
                        self.stop.wait(STATUS_LINGER)
        except BaseException as exc:  # reported by the main thread
            self.error = exc
            self.ready.set()
            self.reached.set()


class Installation:
    """A fresh installation for a benchmark: a store (schema made), a broker, a queue prefix,
    one registered process with its queue and the status queue declared, a status counter
    (not started) and the worker processes started later."""

    def __init__(
        self, store_uri: str, broker_uri: str, entry: ProcessEntry, prefix: str, tmp: Path
    ) -> None:
        self.store_uri = store_uri
        self.broker_uri = broker_uri
        self.entry = entry
        self.prefix = prefix
        self.tmp = tmp
        self.clock = SystemClock()
        self.store = open_store(store_uri)
        self.store.init_schema()
        self.broker = open_broker(broker_uri, self.store)
        self.queue = process_queue(prefix, entry.name)
        self.status_queue = status_queue(prefix)
        self.procs: list[subprocess.Popen[bytes]] = []
        now = self.clock.now()
        self.store.insert_process(
            ProcessRecord(entry=entry, source=ProcessSource.API, created_at=now, updated_at=now)
        )
        self.broker.declare(self.queue)
        self.broker.declare(self.status_queue)
        self.counter = StatusCounter(self.broker, self.status_queue)

    def env(self) -> dict[str, str]:
        return worker_env(self.store_uri, self.broker_uri, self.prefix, self.tmp)

    def close(self) -> None:
        close_installation(
            self.procs,
            self.counter,
            self.broker,
            self.store,
            [self.queue, self.status_queue],
            self.prefix,
        )


class TactusRun(Installation):
    """One installation, its worker processes and its measurement."""

    def __init__(self, store_uri: str, broker_uri: str, workers: int, tmp: Path) -> None:
        entry = ProcessEntry(
            name=PROCESS,
            kind=ProcessKind.FREERUN,
            worker=WORKER_CLASS,
            trigger="every 3600",
            timeout=timedelta(seconds=60),
        )
        super().__init__(store_uri, broker_uri, entry, f"bd{secrets.token_hex(4)}", tmp)
        self.workers = workers
        self.logs: list[Path] = []
        self.created = 0
        dispatcher = Dispatcher(
            self.store,
            lambda queue, body, delay: self.broker.publish(queue, body, delay=delay),
            self.clock,
            self.prefix,
            publish_many=self.broker.publish_many,
        )
        self.firer = FreerunFirer(self.store, dispatcher, self.clock, SchedulerConfig())

    def start_workers(self) -> None:
        """``python -m workers bench_noop`` ×K; returns once all K have registered."""
        for index in range(self.workers):
            log_path = self.tmp / f"worker-{self.prefix}-{index}.log"
            self.procs.append(spawn_worker(PROCESS, 1, self.env(), log_path))
            self.logs.append(log_path)
        wait_registered(self.store, PROCESS, self.procs, self.tail)

    def tail(self) -> str:
        return tail_logs(self.logs)

    def create_and_publish(self, count: int) -> None:
        """``count`` new units of work, fired ``BATCH`` at a time by the scheduler's pass."""
        done = 0
        while done < count:
            size = min(BATCH, count - done)
            fires = [
                FireRecord(
                    process=PROCESS,
                    scheduled_at=T0 + timedelta(seconds=self.created + i),
                    outcome=FireOutcome.FIRED,
                    recorded_at=self.clock.now(),
                )
                for i in range(size)
            ]
            self.firer.fire_planned(fires, {PROCESS: self.entry})
            self.created += size
            done += size

    def wait_statuses(self, total: int, timeout: float) -> float:
        """Wait for ``total`` distinct statuses; returns the perf_counter instant of the last."""
        self.counter.expect(total)
        deadline = time.monotonic() + timeout
        while not self.counter.reached.wait(0.5):
            if self.counter.error is not None:
                break
            if any(p.poll() is not None for p in self.procs) or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{len(self.counter.seen)} of {total} statuses seen:\n{self.tail()}"
                )
        if self.counter.error is not None:
            raise RuntimeError(f"status consumer failed: {self.counter.error!r}")
        assert self.counter.reached_at is not None
        return self.counter.reached_at

    def measure(self, n: int, *, hooks: Hooks | None = None) -> RunResult:
        """Warm up, then time N units of work; ``hooks`` run around the timed part."""
        self.counter.start()
        self.counter.ready.wait(30)
        self.start_workers()
        warm = WARMUP_PER_WORKER * self.workers
        self.create_and_publish(warm)
        self.wait_statuses(warm, timeout=60)
        if hooks is not None:
            hooks.before([p.pid for p in self.procs])
        meter = CpuMeter(p.pid for p in self.procs)
        meter.start()
        warnings = _Warnings()
        started = time.perf_counter()
        with warnings:
            self.create_and_publish(n)
            ended = self.wait_statuses(warm + n, timeout=max(120.0, n / 5))
        cpu = meter.delta()
        if hooks is not None:
            hooks.after()
        disturbed = warnings.lines + [
            line
            for path in self.logs
            for line in path.read_text(errors="replace").splitlines()
            if " WARNING " in line or " ERROR " in line
        ]
        if disturbed:
            # e.g. another test run restarting the shared RabbitMQ: not a clean measurement
            raise Disturbed(f"{len(disturbed)} warning(s), first: {disturbed[0][:200]}")
        counts = self.store.count_uows(PROCESS)
        processed = counts.get((PROCESS, UowState.PROCESSED), 0)
        if processed != warm + n:
            raise RuntimeError(f"expected {warm + n} processed units of work, found {counts}")
        return RunResult(n=n, seconds=ended - started, cpu=cpu)


def worker_env(store_uri: str, broker_uri: str, prefix: str, tmp: Path) -> dict[str, str]:
    """The environment of a benchmark's worker process: this one's, without its ``TACTUS_*``
    settings, with the installation's and the repository on ``PYTHONPATH``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TACTUS_") and key != "PYTHONPATH"
    }
    env.update(
        PYTHONPATH=str(ROOT),
        TACTUS_STORE_URI=store_uri,
        TACTUS_BROKER_URI=broker_uri,
        TACTUS_QUEUE_PREFIX=prefix,
        TACTUS_BOX_ID="bench",
        TACTUS_VAR_DIR=str(tmp / "var"),
    )
    return env


def spawn_worker(
    process: str, concurrency: int, env: dict[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """``python -m workers PROCESS --concurrency N --log-level WARNING``, logging to a file."""
    argv = [sys.executable, "-m", "workers", process, "--concurrency", str(concurrency)]
    argv += ["--log-level", "WARNING"]
    with log_path.open("wb") as log_file:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)


def wait_registered(
    store: Store, process: str, procs: list[subprocess.Popen[bytes]], tail: Callable[[], str]
) -> None:
    """Return once as many workers of ``process`` as ``procs`` are registered alive."""
    deadline = time.monotonic() + 60
    while True:
        alive = [w for w in store.list_workers(process=process) if w.state == "alive"]
        if len(alive) >= len(procs):
            return
        dead = [p for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            raise RuntimeError(f"workers did not start:\n{tail()}")
        time.sleep(0.1)


def tail_logs(paths: list[Path]) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in paths if p.exists()
    )


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to each worker process still running, then SIGKILL to any alive after 30 s."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def close_installation(
    procs: list[subprocess.Popen[bytes]],
    counter: StatusCounter,
    broker: Broker,
    store: Store,
    queues: list[str],
    prefix: str,
) -> None:
    """Stop the worker processes (SIGTERM, then SIGKILL after 30 s) and the status counter,
    delete what the run made on a shared broker server (the RabbitMQ queues; the Redis keys of
    ``queues`` and of their dead-letter queues; the stream of the NATS installation named by
    ``prefix``), close the broker and the store."""
    stop_workers(procs)
    counter.stop.set()
    if counter.is_alive():
        counter.join(5)
    try:
        if broker.backend in ("rabbitmq", "redis"):
            for queue in queues:  # Redis: the queue's stream and delayed set, its dead letters'
                broker.delete(queue)
        elif broker.backend == "nats":
            from mq.nats import NatsBroker

            assert isinstance(broker, NatsBroker)
            broker.delete_installation(prefix)  # the stream, its messages and consumers
    finally:
        broker.close()
        store.close()


def run_tactus(
    store_uri: str,
    broker_uri: str,
    workers: int,
    n: int,
    tmp: Path,
    *,
    hooks: Hooks | None = None,
) -> RunResult:
    """Measure N units of work through ``workers`` worker processes; cleans up its queues."""
    run = TactusRun(store_uri, broker_uri, workers, tmp)
    try:
        return run.measure(n, hooks=hooks)
    finally:
        run.close()
