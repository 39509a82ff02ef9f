"""Part 1 of bench/scheduler.py: pass time and memory against the length of history.

Each function here runs in a fresh interpreter (:func:`scheduler_kit.isolated`): ``build``
fills a store, ``measure`` opens it and times the passes, so the RSS figures of ``measure`` are
those of a scheduler that starts on that store.
"""

from __future__ import annotations

import cProfile
import gc
import tracemalloc
from datetime import UTC, datetime, timedelta

from scheduler_kit import NullBroker, quiet_logs, register, rss_mib, stopwatch, work

from db import open_store
from db.clock import FakeClock
from db.ids import new_id
from db.models import Job
from db.states import JobState, Qualifier
from db.timeperiod import Timeperiod
from scheduler.config import SchedulerConfig
from scheduler.service import Scheduler

#: The first day the scheduler runs; history (if any) ends the day before.
DAY0 = datetime(2026, 1, 1, tzinfo=UTC)
#: Passes run 10 minutes into each day, past the default 5 minute lag of discrete processes.
INTO_DAY = timedelta(minutes=10)
#: Jobs per ``ensure_jobs`` call while filling history.
FILL_BATCH = 20_000


def _name(i: int) -> str:
    return f"daily_{i:04d}"


def _history(processes: int, days: int):
    """Processed daily jobs for the ``days`` before DAY0, process by process."""
    first = Timeperiod.containing(Qualifier.DAILY, DAY0 - timedelta(days=days))
    periods = [str(p) for p in Timeperiod.between(Qualifier.DAILY, first, DAY0)]
    stamp = DAY0 - timedelta(days=1)
    for i in range(processes):
        for period in periods:
            yield Job(
                id=new_id(),
                process=_name(i),
                qualifier=Qualifier.DAILY,
                timeperiod=period,
                state=JobState.PROCESSED,
                uow_id=None,
                run=1,
                created_at=stamp,
                updated_at=stamp,
                version=3,
            )


def build(uri: str, processes: int, days: int) -> dict:
    """Register ``processes`` daily processes starting ``days`` before DAY0, with every day of
    that history processed. Returns the jobs inserted and the time it took."""
    store = open_store(uri)
    store.init_schema()
    start = Timeperiod.containing(Qualifier.DAILY, DAY0 - timedelta(days=days))
    for i in range(processes):
        register(
            store,
            DAY0 - timedelta(days=days),
            name=_name(i),
            kind="managed",
            time_qualifier="daily",
            command=["true"],
            start_timeperiod=str(start),
            trigger="every 3600",
        )
    elapsed = stopwatch()
    inserted = 0
    batch: list[Job] = []
    for job in _history(processes, days):
        batch.append(job)
        if len(batch) >= FILL_BATCH:
            inserted += store.ensure_jobs(batch)
            batch = []
    if batch:
        inserted += store.ensure_jobs(batch)
    seconds = elapsed()
    store.close()
    return {"jobs": inserted, "fill_s": seconds}


def measure(uri: str, first_day: int, warmup: int, passes: int, profile: str | None = None) -> dict:
    """Run ``warmup`` then ``passes`` scheduler passes, one simulated day apart from day
    ``first_day`` after DAY0 on, with every published unit of work finished by simulated workers
    between passes, then one more pass under tracemalloc (and, with ``profile``, one more under
    cProfile, its statistics written to that file; not timed). A later call goes on where the
    previous one stopped (``first_day`` + ``warmup`` + ``passes`` + 1, + 1 with ``profile``).

    In steady state each pass, for each of the processes: materializes today's job, completes
    the job started the day before (its unit of work processed) and starts yesterday's: one
    unit of work created and published per process. The timed figure is ``run_pass`` alone.
    """
    store = open_store(uri)
    clock = FakeClock(DAY0 + INTO_DAY + timedelta(days=first_day - 1))
    broker = NullBroker()
    scheduler = Scheduler(store, broker, clock, SchedulerConfig())
    times: list[float] = []
    reports = []
    rss_after: list[float] = []
    with quiet_logs():
        for n in range(warmup + passes):
            clock.advance(timedelta(days=1))
            elapsed = stopwatch()
            report = scheduler.run_pass()
            seconds = elapsed()
            work(store, clock, broker.take())
            if n >= warmup:
                times.append(seconds)
                reports.append(report)
                gc.collect()
                rss_after.append(rss_mib())
        # one more pass under tracemalloc (slower: not timed) for the peak of Python allocations
        clock.advance(timedelta(days=1))
        gc.collect()
        tracemalloc.start()
        scheduler.run_pass()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        work(store, clock, broker.take())
        if profile:
            clock.advance(timedelta(days=1))
            profiler = cProfile.Profile()
            profiler.runcall(scheduler.run_pass)
            profiler.dump_stats(profile)
            work(store, clock, broker.take())
    store.close()
    return {
        "pass_s": times,
        "started": [r.started for r in reports],
        "finished": [r.finished for r in reports],
        "rss_first_mib": rss_after[0],
        "rss_growth_mib": rss_after[-1] - rss_after[0],
        "tracemalloc_peak_mib": peak / 2**20,
    }
