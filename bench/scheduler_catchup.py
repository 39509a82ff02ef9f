"""Part 3 of bench/scheduler.py: catching up a year of missed hourly periods.

:func:`run`: one hourly process registered a year back; the clock stands still just after the
year, so every period is missed at once. Each round runs a pass, then plays the workers: every
published unit of work is claimed and finished at once, and the scheduler is woken as its status
listener would be. Rounds go on until every period is processed.

:func:`run_workers`: the same year with the real parts: the scheduler's loop (``start()``, its
status listener, the system clock) and real worker processes (``python -m workers``, the no-op
Python class) on the store queue; timed from the scheduler's start (its first pass creates the
year's jobs) until every period is processed.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dispatch_tactus import WORKER_CLASS, spawn_worker, stop_workers, wait_registered, worker_env
from scheduler_kit import NullBroker, quiet_logs, register, stopwatch, work

from db import open_store
from db.clock import FakeClock, SystemClock
from db.states import JobState
from db.timeperiod import Timeperiod
from mq import open_broker
from scheduler.config import SchedulerConfig
from scheduler.service import Scheduler

NAME = "hourly_noop"


def run(uri: str, hours: int, max_active: int) -> dict:
    """Catch up ``hours`` hourly periods with ``max_active`` in flight; returns the rate."""
    start = datetime(2025, 1, 1, tzinfo=UTC)
    store = open_store(uri)
    store.init_schema()
    clock = FakeClock(start + timedelta(hours=hours, minutes=10))  # past the 5 minute lag
    register(
        store,
        start,
        name=NAME,
        kind="managed",
        time_qualifier="hourly",
        command=["true"],
        start_timeperiod=start.strftime("%Y%m%d%H"),
        max_active=max_active,
    )
    broker = NullBroker()
    scheduler = Scheduler(store, broker, clock, SchedulerConfig())
    done = rounds = 0
    first_pass_s = 0.0
    elapsed = stopwatch()
    with quiet_logs():
        while done < hours:
            lap = stopwatch()
            report = scheduler.run_pass()
            if rounds == 0:
                first_pass_s = lap()
            rounds += 1
            done += report.finished
            published = broker.take()
            work(store, clock, published)
            if published:
                scheduler.wake(NAME)
            elif report.finished == 0:
                raise RuntimeError(f"catch-up stalled after {done} periods in {rounds} rounds")
    seconds = elapsed()
    counts = store.count_jobs(NAME)
    store.close()
    processed = counts.get((NAME, JobState.PROCESSED), 0)
    return {
        "hours": hours,
        "max_active": max_active,
        "seconds": seconds,
        "rounds": rounds,
        "first_pass_s": first_pass_s,
        "processed": processed,
        "rate": processed / seconds,
    }


def run_workers(
    uri: str, hours: int, max_active: int, workers: int, concurrency: int, tmp: Path
) -> dict:
    """Catch up the ``hours`` closed hours before now with the scheduler's loop and
    ``workers`` worker processes of ``concurrency`` slots each; returns the rate."""
    store = open_store(uri)
    store.init_schema()
    now = datetime.now(UTC)
    first = Timeperiod.containing("hourly", now).next(-hours)
    name = f"catchup_{secrets.token_hex(3)}"
    register(
        store,
        now,
        name=name,
        kind="managed",
        time_qualifier="hourly",
        worker=WORKER_CLASS,
        start_timeperiod=str(first),
        lag=0,
        max_active=max_active,
    )
    prefix = f"bc{secrets.token_hex(4)}"
    env = worker_env(uri, "store", prefix, tmp)
    logs = [tmp / f"worker-{name}-{i}.log" for i in range(workers)]
    procs = [spawn_worker(name, concurrency, env, path) for path in logs]
    broker = open_broker("store", store)
    try:
        wait_registered(store, name, procs, lambda: "\n".join(p.read_text() for p in logs))
        scheduler = Scheduler(store, broker, SystemClock(), SchedulerConfig(queue_prefix=prefix))
        elapsed = stopwatch()
        processed = 0
        with quiet_logs():
            scheduler.start()
            try:
                deadline = time.monotonic() + max(120.0, hours / 20)
                while processed < hours:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"catch-up stalled at {processed} of {hours}")
                    time.sleep(0.05)
                    counts = store.count_jobs(name)
                    processed = counts.get((name, JobState.PROCESSED), 0)
                seconds = elapsed()
            finally:
                scheduler.stop(timeout=60)
        return {
            "hours": hours,
            "max_active": max_active,
            "workers": workers,
            "concurrency": concurrency,
            "seconds": seconds,
            "processed": processed,
            "rate": processed / seconds,
        }
    finally:
        stop_workers(procs)
        broker.close()
        store.close()
