"""A real worker process catching up missed hours on the store queue moves from one hour to the
next by itself (db.chain): one scheduler pass starts the oldest hour, and each outcome's
commit starts the next, its message claimed by the same commit's refill."""

from __future__ import annotations

from datetime import timedelta

from db.models import JobQuery, ProcessEntry, ProcessRecord, UowQuery
from db.states import (
    JobState,
    ProcessKind,
    ProcessSource,
    Qualifier,
    StateMachineName,
    UowState,
)
from db.timeperiod import Timeperiod
from mq.message import uow_message
from scheduler.config import SchedulerConfig
from scheduler.service import Scheduler
from tests.polling import wait_until
from tests.workers.test_slot import Owner
from workers.slot import Slot

HOURS = 6


def test_a_worker_catches_up_hour_after_hour_after_a_single_pass(harness):
    # given an hourly process whose last HOURS hours are closed, each run appending its id
    runs = harness.tmp / "runs"
    first, _ = backlog(harness, HOURS, runs)
    # when one pass starts the oldest hour and a worker runs
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
    newest = harness.store.get_job("catchup", closed[-1]).uow_id
    harness.wait_uow(newest, UowState.PROCESSED)  # its command ran: its outcome follows
    # and each hour's unit of work ran exactly once
    ran = runs.read_text().split()
    assert len(set(ran)) == len(ran) == HOURS
    assert harness.dead_depth("catchup") == 0
    # and each chained hour's unit of work was created and claimed by the worker in the commit
    # that ended the hour before (one commit per hour), then run
    for timeperiod in closed[1:]:
        uow = harness.store.get_uow(harness.store.get_job("catchup", timeperiod).uow_id)
        events = harness.store.history("uow", uow.id)
        assert [e.trigger for e in events] == ["create", "claim", "succeed"]
        assert events[1].details["chained"] is True


class Announcing(Owner):
    """The slot's owner, announcing requested units of work to their queue as a worker does."""

    def announcements(self, uows) -> list:
        return [
            (self.queue, uow_message(u.id, u.process).encode())
            for u in uows
            if u.state is UowState.REQUESTED
        ]


class DuplicatingStore:
    """The store, with a duplicate of an earlier message put in the queue just before the
    first outcome's commit: older than what that commit puts, so its claim takes it first."""

    def __init__(self, store, queue: str, body: bytes) -> None:
        self._store = store
        self._duplicate: tuple[str, bytes] | None = (queue, body)

    def __getattr__(self, name):
        return getattr(self._store, name)

    def settle_uows(self, steps, settlement):
        if self._duplicate is not None and any(s.chain is not None for s in steps):
            queue, body = self._duplicate
            self._duplicate = None
            self._store.queue_put(queue, [body], available_at=settlement.now)
        return self._store.settle_uows(steps, settlement)


def test_a_chained_unit_of_work_whose_message_went_elsewhere_is_handed_back_and_run(harness):
    # given two closed hours, the first started by a pass, and a slot consuming one message at
    # a time whose outcome commit claims an older duplicate before the chained hour's message
    runs = harness.tmp / "runs"
    first, entry = backlog(harness, 2, runs)
    (uow,) = harness.store.find_uows(UowQuery(process="catchup"), limit=5).items
    queue = harness.queue("catchup")
    owner = Announcing(
        settings=harness.settings,
        entry=entry,
        store=DuplicatingStore(harness.store, queue, uow_message(uow.id, "catchup").encode()),
        broker=harness.broker,
        clock=harness.clock,
        queue=queue,
    )
    slot = Slot(owner, 0)
    # when the slot drains the queue
    with harness.broker.consumer(queue, prefetch=1) as consumer:
        while (delivery := consumer.get(0.5)) is not None:
            slot.handle(consumer, delivery)
    # then the second hour's unit of work, claimed in the first outcome's commit, was handed
    # back when its message did not come with it, and then ran once from its message
    second = harness.store.get_job("catchup", str(first.next())).uow_id
    events = [e.trigger for e in harness.store.history("uow", second)]
    assert events == ["create", "claim", "release", "claim", "succeed"]
    ran = runs.read_text().split()
    assert sorted(ran) == sorted([uow.id, second])


def backlog(harness, hours: int, runs) -> tuple[Timeperiod, ProcessEntry]:
    """An hourly process whose last ``hours`` hours are closed, each run appending its id to
    ``runs``, and one scheduler pass that starts the oldest; its first period and entry."""
    now = harness.clock.now()
    first = Timeperiod.containing(Qualifier.HOURLY, now - timedelta(hours=hours))
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
    assert scheduler.run_pass().started == 1
    return first, entry
