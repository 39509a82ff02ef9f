"""The store contract for liveness: worker records revived by a beat, and the store's clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from db.models import WorkerRecord
from db.states import WorkerState

T0 = datetime(2026, 1, 5, 13, 0, 0, 123000, tzinfo=UTC)


def _register(store, worker_id: str) -> None:
    store.save_worker(
        WorkerRecord(
            worker_id=worker_id, process="a", box_id="b1", pid=10, started_at=T0, heartbeat_at=T0
        )
    )


def _state(store, worker_id: str) -> str:
    (record,) = [w for w in store.list_workers() if w.worker_id == worker_id]
    return record.state


def test_beat_of_a_lost_worker_makes_it_alive_again(store):
    # given: a worker declared lost during an outage
    _register(store, "w1")
    assert store.set_worker_state("w1", WorkerState.LOST, expected_state=WorkerState.ALIVE)
    # when it beats again
    store.beat_worker("w1", T0 + timedelta(seconds=30), current_uow="u1")
    # then
    (record,) = store.list_workers()
    assert record.state == WorkerState.ALIVE
    assert record.heartbeat_at == T0 + timedelta(seconds=30) and record.current_uow == "u1"


def test_beat_leaves_a_stopped_worker_stopped(store):
    _register(store, "w1")
    assert store.set_worker_state("w1", WorkerState.STOPPED, expected_state=WorkerState.ALIVE)
    store.beat_worker("w1", T0 + timedelta(seconds=1))
    assert _state(store, "w1") == WorkerState.STOPPED


@pytest.mark.parametrize("beats", [1, 3])
def test_beat_keeps_an_alive_worker_alive(store, beats):
    _register(store, "w1")
    for n in range(beats):
        store.beat_worker("w1", T0 + timedelta(seconds=n + 1))
    assert _state(store, "w1") == WorkerState.ALIVE


def test_server_time_is_the_stores_clock_in_utc(store):
    before = datetime.now(UTC)
    told = store.server_time()
    after = datetime.now(UTC)
    assert told.tzinfo is not None and told.utcoffset() == timedelta(0)
    # every test server runs on this machine: its clock agrees with ours within a second
    assert before - timedelta(seconds=1) <= told <= after + timedelta(seconds=1)
