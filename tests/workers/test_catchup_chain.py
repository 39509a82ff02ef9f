"""A real worker process catching up missed hours on the store queue moves from one hour to the
next by itself (db.chain): one scheduler pass starts the oldest hour, and each outcome's
commit starts the next, its message claimed by the same commit's refill."""

from __future__ import annotations

from datetime import timedelta

from db.models import JobQuery, ProcessEntry, ProcessRecord
from db.states import JobState, ProcessKind, ProcessSource, Qualifier, StateMachineName
from db.timeperiod import Timeperiod
from scheduler.config import SchedulerConfig
from scheduler.service import Scheduler
from tests.polling import wait_until

HOURS = 6


def test_a_worker_catches_up_hour_after_hour_after_a_single_pass(harness):
    # given an hourly process whose last HOURS hours are closed, each run appending its id
    runs = harness.tmp / "runs"
    now = harness.clock.now()
    first = Timeperiod.containing(Qualifier.HOURLY, now - timedelta(hours=HOURS))
    entry = ProcessEntry(
        name="catchup",
        kind=ProcessKind.MANAGED,
        time_qualifier=Qualifier.HOURLY,
        state_machine=StateMachineName.DISCRETE,
        lag=timedelta(0),
        start_timeperiod=str(first),
        command=("sh", "-c", f"echo {{uow_id}} >> {runs}"),
    )
    harness.store.insert_process(
        ProcessRecord(entry=entry, source=ProcessSource.API, created_at=now, updated_at=now)
    )
    config = SchedulerConfig(queue_prefix=harness.settings.queue_prefix)
    scheduler = Scheduler(harness.store, harness.broker, harness.clock, config)
    scheduler.reload()
    # when one pass starts the oldest hour and a worker runs
    assert scheduler.run_pass().started == 1
    harness.start_worker("catchup")

    def states() -> dict[str, JobState]:
        jobs = harness.store.find_jobs(JobQuery(process="catchup", newest_first=False), limit=50)
        return {job.timeperiod: job.state for job in jobs.items}

    # then every closed hour runs, with no other pass: all but the newest are processed (its
    # job waits for the scheduler, as the open hour is not due)
    closed = [str(first.next(i)) for i in range(HOURS)]
    try:
        wait_until(
            lambda: (
                [states()[p] for p in closed[:-1]] == [JobState.PROCESSED] * (HOURS - 1)
                and runs.exists()
                and len(runs.read_text().split()) == HOURS
            ),
            20,
            what="the closed hours processed by the worker alone",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {states()}\n{harness.logs()}") from None
    assert states()[closed[-1]] is JobState.IN_PROGRESS
    # and each hour's unit of work ran exactly once
    ran = runs.read_text().split()
    assert len(set(ran)) == len(ran) == HOURS
    assert harness.dead_depth("catchup") == 0
