"""Part 3 of bench/scheduler.py: catching up a year of missed hourly periods.

One hourly process registered a year back; the clock stands still just after the year, so every
period is missed at once. Each round runs a pass, then plays the workers: every published unit
of work is claimed and finished at once, and the scheduler is woken as its status listener
would be. Rounds go on until every period is processed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scheduler_kit import NullBroker, quiet_logs, register, stopwatch, work

from db import open_store
from db.clock import FakeClock
from db.states import JobState
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
