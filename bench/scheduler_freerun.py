"""Part 2 of bench/scheduler.py: freerun fire lateness, Tactus and APScheduler 3 in one run.

Tactus: 1,000 freerun processes ``every 1`` on a new SQLite file store, run by the real
:class:`~scheduler.service.Scheduler` loop (``start()``/``stop()``, SystemClock) with a no-op
broker. No worker consumes: ``max_active`` is 1,000, above the fires one process can make in the
run, so units of work left in flight never turn a fire into a skip. APScheduler 3 runs in its
own virtual environment (bench/scheduler_apscheduler.py), created here when missing.
"""

from __future__ import annotations

import json
import math
import secrets
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dispatch_tactus import (
    WORKER_CLASS,
    spawn_worker,
    stop_workers,
    tail_logs,
    wait_registered,
    worker_env,
)
from scheduler_kit import NullBroker, quiet_logs, register, stopwatch, summary_ms, work

from db import open_store
from db.clock import FakeClock, SystemClock
from db.ids import new_id
from db.models import UnitOfWork, UowQuery
from db.states import FireOutcome, UowKind, UowState
from mq import open_broker
from mq.message import Message, process_queue, status_queue
from scheduler.config import SchedulerConfig
from scheduler.freerun import fire_stamp
from scheduler.service import Scheduler

BENCH = Path(__file__).resolve().parent
APS_VENV = BENCH / ".venv-apscheduler"
APS_SCRIPT = BENCH / "scheduler_apscheduler.py"
MAX_ACTIVE = 1000
#: Seconds the loop runs on after the last counted instant.
DRAIN = 5.0


def _uows(store) -> dict[str, object]:
    found, cursor = {}, None
    while True:
        page = store.find_uows(UowQuery(kind=UowKind.FREERUN), limit=1000, cursor=cursor)
        found.update((u.id, u) for u in page.items)
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


def tactus(uri: str, processes: int, seconds: int) -> dict:
    """Run the scheduler loop over ``seconds`` fire instants (and DRAIN seconds more, so late
    fires of the last instants are seen); lateness of every fire of those instants."""
    store = open_store(uri)
    store.init_schema()
    names = [f"every_second_{i:04d}" for i in range(processes)]
    try:
        return _run_loop(store, NullBroker(), names, seconds, SchedulerConfig())
    finally:
        store.close()


def _run_loop(store, broker: NullBroker, names: list[str], seconds: int, config) -> dict:
    # every process is "edited" at t0: its first fire is t0 + 1 s, after the loop has started
    t0 = datetime.fromtimestamp(math.ceil(time.time()) + 2, UTC)
    for name in names:
        register(
            store,
            t0,
            name=name,
            kind="freerun",
            command=["true"],
            trigger="every 1",
            max_active=MAX_ACTIVE,
        )
    scheduler = Scheduler(store, broker, SystemClock(), config)
    last = t0 + timedelta(seconds=seconds)  # the instants t0 + 1 s ... t0 + seconds count
    with quiet_logs():
        scheduler.start()
        time.sleep(max(0.0, (last - datetime.now(UTC)).total_seconds() + DRAIN))
        scheduler.stop(timeout=60)
    outcomes: Counter[str] = Counter()
    recorded_late: list[float] = []
    for name in names:
        for fire in store.list_fires(name, limit=1000):
            if fire.scheduled_at <= last:
                outcomes[fire.outcome.value] += 1
                if fire.outcome is FireOutcome.FIRED:
                    recorded_late.append((fire.recorded_at - fire.scheduled_at).total_seconds())
    uows = _uows(store)
    published_late = [
        (at - uows[uow_id].scheduled_at).total_seconds()
        for uow_id, at in broker.published
        if uows[uow_id].scheduled_at <= last
    ]
    expected = seconds * len(names)
    return {
        "expected": expected,
        "outcomes": dict(outcomes),
        "not_recorded": expected - sum(outcomes.values()),
        "recorded": summary_ms(recorded_late),
        "published": summary_ms(published_late),
    }


class TimedBroker(NullBroker):
    """A real broker whose publishes are timed when they return (the message is then with the
    broker: RabbitMQ's transaction committed, say)."""

    def __init__(self, broker) -> None:
        super().__init__()
        self.broker = broker
        self.backend = broker.backend

    def declare(self, queue: str) -> None:
        self.broker.declare(queue)

    def publish(self, queue: str, body: bytes, *, delay: timedelta | None = None) -> None:
        self.broker.publish(queue, body, delay=delay)
        self._published([body])

    def publish_many(self, messages) -> None:
        messages = list(messages)
        self.broker.publish_many(messages)
        self._published([body for _, body in messages])

    def _published(self, bodies: list[bytes]) -> None:
        at = datetime.now(UTC)
        with self._lock:
            self.published += [(Message.decode(body).uow_id, at) for body in bodies]


def tactus_broker(uri: str, broker_uri: str, processes: int, seconds: int) -> dict:
    """:func:`tactus` publishing to a real broker (its queues declared first, deleted after):
    lateness = when the broker write that carried the fire's message returned."""
    store = open_store(uri)
    store.init_schema()
    prefix = f"bf{secrets.token_hex(4)}"
    broker = TimedBroker(open_broker(broker_uri, store))
    names = [f"every_second_{i:04d}" for i in range(processes)]
    queues = [process_queue(prefix, name) for name in names] + [status_queue(prefix)]
    for queue in queues:
        broker.declare(queue)
    try:
        return _run_loop(store, broker, names, seconds, SchedulerConfig(queue_prefix=prefix))
    finally:
        for queue in queues:
            broker.broker.delete(queue)
        broker.broker.close()
        store.close()


def tactus_workers(uri: str, processes: int, seconds: int, tmp: Path) -> dict:
    """``processes`` freeruns ``every 1``, each with its own worker process (``python -m
    workers``, the no-op Python class, concurrency 1) on the store queue, and the scheduler
    loop: lateness = the unit of work's ``started_at`` (the worker's claim) - its instant."""
    store = open_store(uri)
    store.init_schema()
    prefix = f"bw{secrets.token_hex(4)}"
    names = [f"worker_start_{i:02d}" for i in range(processes)]
    t0 = datetime.fromtimestamp(math.ceil(time.time()) + 10, UTC)
    for name in names:
        register(
            store,
            t0,
            name=name,
            kind="freerun",
            worker=WORKER_CLASS,
            trigger="every 1",
            max_active=MAX_ACTIVE,
        )
    env = worker_env(uri, "store", prefix, tmp)
    logs = [tmp / f"worker-{name}.log" for name in names]
    procs = [spawn_worker(name, 1, env, path) for name, path in zip(names, logs, strict=True)]
    broker = open_broker("store", store)
    try:
        for name in names:
            wait_registered(store, name, [procs[names.index(name)]], lambda: tail_logs(logs))
        if datetime.now(UTC) >= t0:
            raise RuntimeError("workers took more than 10 s to start")
        config = SchedulerConfig(queue_prefix=prefix)
        scheduler = Scheduler(store, broker, SystemClock(), config)
        last = t0 + timedelta(seconds=seconds)
        with quiet_logs():
            scheduler.start()
            time.sleep(max(0.0, (last - datetime.now(UTC)).total_seconds() + DRAIN))
            scheduler.stop(timeout=60)
        late, states = [], Counter()
        for uow in _uows(store).values():
            if uow.scheduled_at is None or uow.scheduled_at > last:
                continue
            states[uow.state.value] += 1
            if uow.started_at is not None:
                late.append((uow.started_at - uow.scheduled_at).total_seconds())
        return {
            "expected": seconds * processes,
            "states": dict(states),
            "started": summary_ms(late),
        }
    finally:
        stop_workers(procs)
        broker.close()
        store.close()


def fire_cost(uri: str, history: int, fires: int = 50) -> dict:
    """Mean time of a pass firing one ``every 1`` freerun whose unit-of-work history holds
    ``history`` processed units of work (one day of it is 86,400), FakeClock, no-op broker."""
    store = open_store(uri)
    store.init_schema()
    t0 = datetime(2026, 1, 2, tzinfo=UTC)
    register(store, t0, name="busy", kind="freerun", command=["true"], trigger="every 1")
    for i in range(history):  # yesterday's fires, each unit of work processed
        at = t0 - timedelta(seconds=history - i)
        stamp = fire_stamp(at)
        uow = UnitOfWork(
            id=new_id(),
            process="busy",
            kind=UowKind.FREERUN,
            start_timeperiod=stamp,
            end_timeperiod=stamp,
            run_key="fire",
            state=UowState.PROCESSED,
            created_at=at,
            updated_at=at,
            scheduled_at=at,
        )
        store.create_uow(uow)
    clock = FakeClock(t0)
    broker = NullBroker()
    scheduler = Scheduler(store, broker, clock, SchedulerConfig())
    scheduler.run_pass()
    times = []
    with quiet_logs():
        for _ in range(fires):
            clock.advance(1)
            elapsed = stopwatch()
            scheduler.run_pass()
            times.append(elapsed())
            # play the worker so that only history, not in-flight work, accumulates
            work(store, clock, broker.take())
    store.close()
    return {"history": history, "pass_ms": sorted(times)[len(times) // 2] * 1e3}


def ensure_apscheduler_venv() -> Path:
    """bench/.venv-apscheduler with the latest APScheduler 3.x; returns its python."""
    python = APS_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run(["python3", "-m", "venv", str(APS_VENV)], check=True)
    probe = subprocess.run([str(python), "-c", "import apscheduler"], capture_output=True)
    if probe.returncode != 0:
        pip = [str(python), "-m", "pip", "install", "--quiet", "apscheduler<4"]
        subprocess.run(pip, check=True)
    return python


def apscheduler(jobs: int, seconds: int) -> dict:
    python = ensure_apscheduler_venv()
    command = [str(python), str(APS_SCRIPT), "--jobs", str(jobs), "--seconds", str(seconds)]
    command += ["--drain", str(DRAIN)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    late = result.pop("lateness_s")
    result["ran"] = len(late)
    result["not_run"] = result["expected"] - len(late) - result["missed"] - result["max_instances"]
    result["lateness"] = summary_ms(late)
    return result


if __name__ == "__main__":  # a quick look at one side: scheduler_freerun.py [processes seconds]
    n, s = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) > 2 else (100, 5)
    print(apscheduler(n, s))
