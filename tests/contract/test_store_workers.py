"""The store contract, workers: the same tests on every backend."""

from __future__ import annotations

from datetime import timedelta

import pytest

from db.errors import NotFound
from db.models import WorkerRecord
from tests.contract.store_helpers import T0


def test_workers_register_beat_and_state(store):
    # given
    worker = WorkerRecord(
        worker_id="w1", process="a", box_id="b1", pid=10, started_at=T0, heartbeat_at=T0
    )
    store.save_worker(worker)
    store.save_worker(
        WorkerRecord(
            worker_id="w2", process="b", box_id="b2", pid=11, started_at=T0, heartbeat_at=T0
        )
    )
    # when
    store.beat_worker("w1", T0 + timedelta(seconds=5), current_uow="u1")
    # then
    (w1,) = store.list_workers(box_id="b1")
    assert w1.heartbeat_at == T0 + timedelta(seconds=5) and w1.current_uow == "u1"
    assert [w.worker_id for w in store.list_workers()] == ["w1", "w2"]
    assert [w.worker_id for w in store.list_workers(process="b")] == ["w2"]
    assert store.set_worker_state("w1", "lost", expected_state="alive") is True
    assert store.set_worker_state("w1", "lost", expected_state="alive") is False
    store.delete_worker("w1")
    assert [w.worker_id for w in store.list_workers()] == ["w2"]
    with pytest.raises(NotFound):
        store.beat_worker("w1", T0)
