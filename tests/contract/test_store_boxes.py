"""The store contract, supervised processes of the boxes: the same tests on every backend."""

from __future__ import annotations

from datetime import timedelta

import pytest

from db.errors import NotFound, StateConflict
from db.models import SupervisedProcess
from db.states import SupervisedState
from tests.contract.store_helpers import T0, event


def _supervised(box="b1", process="worker_a", **kw) -> SupervisedProcess:
    return SupervisedProcess(box_id=box, process=process, updated_at=T0, **kw)


def test_supervised_ensure_is_idempotent(store):
    first = store.ensure_supervised(_supervised())
    again = store.ensure_supervised(_supervised(desired=False))
    assert again == first and again.desired is True
    store.ensure_supervised(_supervised(box="b2"))
    assert [s.box_id for s in store.list_supervised()] == ["b1", "b2"]
    assert [s.box_id for s in store.list_supervised("b2")] == ["b2"]


def test_supervised_transition_and_desired(store):
    # given
    store.ensure_supervised(_supervised())
    at = T0 + timedelta(seconds=1)
    # when
    started = store.transition_supervised(
        "b1",
        "worker_a",
        expected_state=SupervisedState.STOPPED,
        new_state=SupervisedState.STARTING,
        changes={"pid": 4242, "create_time": 1767618000.25, "started_at": at},
        event=event("supervised", "b1/worker_a", "start", "stopped", "starting", at=at),
    )
    store.set_desired(
        "b1", "worker_a", False, event=event("supervised", "b1/worker_a", "stop", None, None)
    )
    store.update_supervised_stats("b1", "worker_a", {"rss": 1024, "cpu_percent": 1.5}, at)
    # then
    got = store.get_supervised("b1", "worker_a")
    assert started.state is SupervisedState.STARTING
    assert (got.pid, got.create_time, got.started_at) == (4242, 1767618000.25, at)
    assert got.desired is False and got.stats == {"rss": 1024, "cpu_percent": 1.5}
    assert [e.trigger for e in store.history("supervised", "b1/worker_a")] == ["start", "stop"]
    with pytest.raises(StateConflict):
        store.transition_supervised(
            "b1",
            "worker_a",
            expected_state=SupervisedState.STOPPED,
            new_state=SupervisedState.STARTING,
            event=event("supervised", "b1/worker_a", "start", "stopped", "starting"),
        )
    store.delete_supervised("b1", "worker_a")
    with pytest.raises(NotFound):
        store.get_supervised("b1", "worker_a")
