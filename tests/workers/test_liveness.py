"""``db.liveness.reap_lost_workers`` on a real SQLite store with a fake clock."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from db import open_store
from db.ids import new_id
from db.liveness import reap_lost_workers
from db.models import UnitOfWork, WorkerRecord
from db.state_change import change_uow
from db.states import UowKind, UowState

INTERVAL = timedelta(seconds=5)
MISSES = 3


@pytest.fixture
def store_uri(tmp_path):
    uri = f"sqlite:///{tmp_path / 'tactus.db'}"
    with open_store(uri) as s:
        s.init_schema()
    return uri


@pytest.fixture
def store(store_uri):
    s = open_store(store_uri)
    yield s
    s.close()


def _worker(store, clock, worker_id: str) -> None:
    now = clock.now()
    store.save_worker(
        WorkerRecord(
            worker_id=worker_id, process="p", box_id="b", pid=1, started_at=now, heartbeat_at=now
        )
    )


def _running(store, clock, worker_id: str | None) -> UnitOfWork:
    now = clock.now()
    uow = store.create_uow(
        UnitOfWork(
            id=new_id(),
            process="p",
            kind=UowKind.FREERUN,
            start_timeperiod="2026010513",
            end_timeperiod="2026010514",
            run_key=new_id(),
            retries=3,
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
        changes={"worker_id": worker_id, "started_at": now, "heartbeat_at": now},
    )


def _reap(store, clock):
    return reap_lost_workers(store, now=clock.now(), interval=INTERVAL, misses=MISSES, clock=clock)


def test_reap_marks_a_silent_worker_lost_and_fails_its_uows(store, clock):
    # given: w1 goes silent; w2 keeps beating
    _worker(store, clock, "w1")
    _worker(store, clock, "w2")
    lost_uow = _running(store, clock, "w1")
    fine_uow = _running(store, clock, "w2")
    clock.advance(16)
    store.beat_worker("w2", clock.now(), current_uow=fine_uow.id)
    store.update_uow(
        fine_uow.id, expected_state=UowState.IN_PROGRESS, changes={"heartbeat_at": clock.now()}
    )
    # when
    failed = _reap(store, clock)
    # then
    assert failed == [lost_uow.id]
    states = {w.worker_id: w.state for w in store.list_workers()}
    assert states == {"w1": "lost", "w2": "alive"}
    invalid = store.get_uow(lost_uow.id)
    assert invalid.state == UowState.INVALID
    assert invalid.error == "worker w1 lost (no heartbeat for 16 s)"
    assert invalid.finished_at == clock.now()
    event = store.history("uow", lost_uow.id)[-1]
    assert (event.trigger, event.actor, event.reason) == ("fail", "scheduler", invalid.error)
    assert store.get_uow(fine_uow.id).state == UowState.IN_PROGRESS


def test_reap_leaves_workers_within_the_allowed_misses(store, clock):
    _worker(store, clock, "w1")
    uow = _running(store, clock, "w1")
    clock.advance(15)  # exactly interval * misses: not yet
    assert _reap(store, clock) == []
    assert store.get_uow(uow.id).state == UowState.IN_PROGRESS


def test_reap_fails_a_stale_uow_whatever_its_worker_record_says(store, clock):
    # given: a unit of work whose worker never registered (or was deleted)
    uow = _running(store, clock, "ghost")
    clock.advance(20)
    # when / then
    assert _reap(store, clock) == [uow.id]
    assert store.get_uow(uow.id).error == "no heartbeat from worker ghost for 20 s"


def test_reap_is_idempotent_and_accepts_seconds(store, clock):
    _worker(store, clock, "w1")
    uow = _running(store, clock, "w1")
    clock.advance(60)
    assert _reap(store, clock) == [uow.id]
    assert _reap(store, clock) == []
    assert reap_lost_workers(store, now=clock.now(), interval=5.0, misses=3, clock=clock) == []
    assert [e.trigger for e in store.history("uow", uow.id)] == ["claim", "fail"]


def test_reap_leaves_finished_uows_and_stopped_workers_alone(store, clock):
    _worker(store, clock, "w1")
    uow = _running(store, clock, "w1")
    change_uow(store, uow, "succeed", clock=clock, actor="worker w1")
    store.set_worker_state("w1", "stopped", expected_state="alive")
    clock.advance(60)
    assert _reap(store, clock) == []
    assert store.list_workers()[0].state == "stopped"
    assert store.get_uow(uow.id).state == UowState.PROCESSED


def test_reap_racing_schedulers_fail_each_uow_once(store_uri, store, clock):
    # given: a lost worker holding five units of work, and two schedulers with their own
    # connections
    _worker(store, clock, "w1")
    uows = [_running(store, clock, "w1") for _ in range(5)]
    clock.advance(60)
    results: list[list[str]] = []
    barrier = threading.Barrier(2)

    def scheduler() -> None:
        with open_store(store_uri) as own:
            barrier.wait()
            results.append(_reap(own, clock))

    # when
    threads = [threading.Thread(target=scheduler) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # then
    assert sorted(results[0] + results[1]) == sorted(u.id for u in uows)
    for uow in uows:
        assert [e.trigger for e in store.history("uow", uow.id)] == ["claim", "fail"]
