"""The heartbeat thread against a real SQLite store, with a fake clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from db import open_store
from db.errors import StoreUnavailable
from db.ids import new_id
from db.models import UnitOfWork, WorkerRecord
from db.state_change import change_uow
from db.states import UowKind, UowState
from tests.polling import wait_until
from workers.heartbeat import Heartbeat

VISIBILITY = timedelta(seconds=30)


class _Task:
    """A running unit of work as the heartbeat sees it."""

    def __init__(self, uow_id: str) -> None:
        self.uow_id = uow_id
        self.extends: list[timedelta] = []
        self.taken: list[str] = []

    def request_extend(self, visibility: timedelta) -> None:
        self.extends.append(visibility)

    def taken_away(self, reason: str) -> None:
        self.taken.append(reason)


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path / 'tactus.db'}")
    s.init_schema()
    yield s
    s.close()


def _worker(store, clock) -> str:
    now = clock.now()
    store.save_worker(
        WorkerRecord(
            worker_id="w1", process="p", box_id="b", pid=1, started_at=now, heartbeat_at=now
        )
    )
    return "w1"


def _claimed(store, clock) -> UnitOfWork:
    now = clock.now()
    uow = store.create_uow(
        UnitOfWork(
            id=new_id(),
            process="p",
            kind=UowKind.FREERUN,
            start_timeperiod="2026010513",
            end_timeperiod="2026010514",
            run_key=new_id(),
            created_at=now,
            updated_at=now,
        )
    )
    return change_uow(
        store,
        uow,
        "claim",
        clock=clock,
        actor="test",
        changes={"worker_id": "w1", "heartbeat_at": now},
    )


def _heartbeat(store, clock, tasks, interval=60.0) -> Heartbeat:
    return Heartbeat(
        store,
        "w1",
        interval=timedelta(seconds=interval),
        visibility=VISIBILITY,
        clock=clock,
        running=lambda: tasks,
    )


def test_heartbeat_beats_the_worker_and_its_running_uows(store, clock):
    # given
    _worker(store, clock)
    uow = _claimed(store, clock)
    task = _Task(uow.id)
    # when
    later = clock.advance(5)
    _heartbeat(store, clock, [task]).beat()
    # then
    (record,) = store.list_workers()
    assert record.heartbeat_at == later and record.current_uow == uow.id
    assert store.get_uow(uow.id).heartbeat_at == later
    assert task.extends == [VISIBILITY] and task.taken == []


def test_heartbeat_tells_a_task_whose_uow_was_taken_away(store, clock):
    _worker(store, clock)
    uow = _claimed(store, clock)
    change_uow(store, uow, "cancel", clock=clock, actor="user alice")
    task = _Task(uow.id)
    _heartbeat(store, clock, [task]).beat()
    assert len(task.taken) == 1 and "no longer in progress" in task.taken[0]
    assert task.extends == []
    assert store.get_uow(uow.id).state == UowState.CANCELED


def test_heartbeat_revives_a_worker_declared_lost(store, clock):
    _worker(store, clock)
    store.set_worker_state("w1", "lost", expected_state="alive")
    _heartbeat(store, clock, []).beat()
    (record,) = store.list_workers()
    assert record.state == "alive" and record.current_uow is None


def test_heartbeat_failure_is_logged_and_the_loop_goes_on(store, clock, caplog):
    # given: a store that fails every beat
    calls: list[str] = []

    class FailingStore:
        def beat_worker(self, *args, **kwargs):
            calls.append("beat")
            raise StoreUnavailable("database is down")

        def update_uow(self, *args, **kwargs):
            raise StoreUnavailable("database is down")

    task = _Task("u1")
    heartbeat = _heartbeat(FailingStore(), clock, [task], interval=0.01)
    # when
    heartbeat.start()
    wait_until(lambda: len(calls) >= 3, what="three failed beats")
    heartbeat.stop(timeout=5)
    # then: still extending deliveries, and saying why the beats failed: once, not per beat
    assert task.extends and task.taken == []
    assert caplog.text.count("store unavailable: database is down") == 1
