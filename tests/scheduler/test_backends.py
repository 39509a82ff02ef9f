"""The scheduler on every store backend: a freerun fire and a managed job, end to end in one
pass each (the SQLite-only suites cannot see column sizes or dialect differences)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from db.clock import FakeClock
from db.models import ProcessRecord, UowQuery
from db.registration import entry_from_mapping
from db.states import FireOutcome, JobState, ProcessSource, UowKind
from scheduler.config import SchedulerConfig
from scheduler.service import Scheduler
from tests.scheduler.conftest import RecordingBroker


def _register(store, clock, **fields):
    entry = entry_from_mapping(fields)
    now = clock.now()
    store.insert_process(
        ProcessRecord(
            entry=entry,
            source=ProcessSource.FILE,
            registered=entry.to_dict(),
            created_at=now,
            updated_at=now,
        )
    )


def test_scheduler_fires_and_starts_on_every_backend(store):
    # given a freerun every minute and a closed hourly period
    clock = FakeClock(datetime(2026, 1, 5, 13, 0, tzinfo=UTC))
    _register(store, clock, name="cron", kind="freerun", trigger="every 60", command=["true"])
    _register(
        store,
        clock,
        name="hourly",
        kind="managed",
        time_qualifier="hourly",
        lag=0,
        start_timeperiod="2026010512",
        command=["true"],
    )
    broker = RecordingBroker()
    scheduler = Scheduler(store, broker, clock, SchedulerConfig())
    # when a minute passes
    clock.advance(timedelta(seconds=60))
    report = scheduler.run_pass()
    # then the fire is recorded with its unit of work, and the job started
    (fire,) = store.list_fires("cron")
    assert fire.outcome is FireOutcome.FIRED and fire.uow_id
    uow = store.get_uow(fire.uow_id)
    assert (uow.kind, uow.start_timeperiod) == (UowKind.FREERUN, "20260105130100")
    assert store.get_job("hourly", "2026010512").state is JobState.IN_PROGRESS
    assert report.fires == 1 and report.started == 1
    assert len(store.find_uows(UowQuery(), limit=10).items) == 2
    assert len(broker.published) == 2
