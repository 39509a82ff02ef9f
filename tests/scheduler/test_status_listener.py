"""The scheduler's status listener on the real store queue: it wakes the process a status names,
acks the statuses it holds together, and dead-letters garbage and statuses of nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from db import open_store
from db.clock import SystemClock
from db.ids import new_id
from db.models import UnitOfWork
from db.states import UowKind
from mq import open_broker
from mq.message import dead_letter_queue, status_message, status_queue
from scheduler.config import SchedulerConfig
from scheduler.service import Scheduler
from tests.polling import wait_until

T0 = datetime(2026, 1, 5, 13, 0, tzinfo=UTC)


class WatchedScheduler(Scheduler):
    """The real scheduler, noting which processes it was woken for."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.woken: list[str] = []

    def wake(self, *processes: str) -> None:
        self.woken.extend(processes)
        super().wake(*processes)


@pytest.fixture
def installation(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'listener.db'}")
    store.init_schema()
    broker = open_broker("store", store)
    scheduler = WatchedScheduler(
        store, broker, SystemClock(), SchedulerConfig(queue_prefix="listen")
    )
    yield store, broker, scheduler
    scheduler.stop()
    broker.close()
    store.close()


def _uow(store, process: str) -> UnitOfWork:
    return store.create_uow(
        UnitOfWork(
            id=new_id(),
            process=process,
            kind=UowKind.FREERUN,
            start_timeperiod="2026010513",
            end_timeperiod="2026010514",
            run_key=new_id(),
            created_at=T0,
            updated_at=T0,
        )
    )


def test_statuses_wake_their_processes_and_garbage_is_dead_lettered(installation):
    store, broker, scheduler = installation
    queue = status_queue("listen")
    # given a burst of statuses already waiting: ten of real units of work, garbage, a ghost
    uows = [_uow(store, f"p{i % 3}") for i in range(10)]
    messages = [(queue, status_message(u.id, u.process).encode()) for u in uows]
    messages.insert(4, (queue, b"not json"))
    messages.append((queue, status_message("ghost", "p0").encode()))
    broker.publish_many(messages)
    # when the listener runs
    scheduler.start()
    # then every status is taken: the good ones acked, the two bad ones dead-lettered
    wait_until(lambda: broker.depth(dead_letter_queue(queue)) == 2, what="two dead-lettered")
    wait_until(lambda: sorted(scheduler.woken) == sorted(u.process for u in uows), what="wakes")
    scheduler.stop()
    assert broker.depth(queue) == 0
    assert store.queue_depth(queue, now=SystemClock().now())["claimed"] == 0
