"""Scheduler test kit: a SQLite store, a fake clock, a broker that records what is published,
and helpers that play the worker's part through the real state machine."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from db import open_store
from db.clock import FakeClock
from db.models import JobQuery, ProcessRecord, UowQuery
from db.registration import entry_from_mapping
from db.state_change import change_uow
from db.states import ProcessSource, UowState
from mq.broker import Broker
from mq.message import Message
from scheduler.config import SchedulerConfig
from scheduler.service import Scheduler


@dataclass
class RecordingBroker(Broker):
    """Keeps what is published; the scheduler's status listener is not started in these tests."""

    published: list[tuple[str, Message, timedelta | None]] = field(default_factory=list)
    backend = "recording"

    def declare(self, queue):
        pass

    def publish(self, queue, body, *, delay=None):
        self.published.append((queue, Message.decode(body), delay))

    def publish_many(self, messages):
        for queue, body in messages:
            self.publish(queue, body)

    def consumer(self, queue, *, prefetch=1):
        raise NotImplementedError

    def depth(self, queue):
        return 0

    def purge(self, queue):
        return 0

    def delete(self, queue):
        pass

    def close(self):
        pass

    def uow_ids(self) -> list[str]:
        return [m.uow_id for _, m, _ in self.published]


class Kit:
    def __init__(self, store, clock, broker, config):
        self.store = store
        self.clock = clock
        self.broker = broker
        self.config = config
        self.scheduler = Scheduler(store, broker, clock, config)

    def register(self, **fields) -> ProcessRecord:
        entry = entry_from_mapping(fields)
        now = self.clock.now()
        record = ProcessRecord(
            entry=entry,
            source=ProcessSource.FILE,
            registered=entry.to_dict(),
            created_at=now,
            updated_at=now,
        )
        self.store.insert_process(record)
        self.scheduler.reload()
        return record

    def run(self, seconds: float = 0):
        if seconds:
            self.clock.advance(seconds)
        return self.scheduler.run_pass()

    def restart(self) -> Scheduler:
        """A new scheduler on the same store (what a restart after a crash does)."""
        self.scheduler = Scheduler(self.store, self.broker, self.clock, self.config)
        return self.scheduler

    def job(self, process, timeperiod):
        return self.store.get_job(process, timeperiod)

    def states(self, process) -> dict[str, str]:
        jobs = self.store.find_jobs(JobQuery(process=process, newest_first=False), limit=1000)
        return {j.timeperiod: j.state.value for j in jobs.items}

    def uows(self, process, state=None):
        states = frozenset({UowState(state)}) if state else None
        query = UowQuery(process=process, states=states, newest_first=False)
        return self.store.find_uows(query, limit=1000).items

    def work(self, uow_id: str, outcome: str = "succeed", **changes):
        """Play a worker: claim the unit of work and finish it with ``outcome``."""
        uow = self.store.get_uow(uow_id)
        claimed = change_uow(
            self.store,
            uow,
            "claim",
            clock=self.clock,
            actor="worker w1",
            changes={"worker_id": "w1", "started_at": self.clock.now()},
        )
        finish = {"finished_at": self.clock.now(), **changes}
        done = change_uow(
            self.store, claimed, outcome, clock=self.clock, actor="worker w1", changes=finish
        )
        self.scheduler.wake(done.process)
        return done

    def work_all(self, process, outcome="succeed"):
        return [self.work(uow.id, outcome) for uow in self.uows(process, "requested")]


@pytest.fixture
def kit(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'sched.db'}")
    store.init_schema()
    clock = FakeClock(datetime(2026, 1, 5, 13, 0, tzinfo=UTC))
    config = SchedulerConfig(recovery_interval=timedelta(seconds=1))
    yield Kit(store, clock, RecordingBroker(), config)
    store.close()
