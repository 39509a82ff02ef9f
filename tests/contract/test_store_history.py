"""The store contract, history: the same tests on every backend."""

from __future__ import annotations

from datetime import timedelta

import pytest

from db.errors import NotFound
from db.states import UowState
from tests.contract.store_helpers import T0, event, make_record, make_uow


def test_history_oldest_first_and_limited(store):
    # given
    store.insert_process(make_record("p"))
    for i in range(7):
        store.append_event(
            event(
                "process",
                "p",
                f"edit{i}",
                None,
                None,
                at=T0 + timedelta(seconds=i),
                details={"n": i},
            )
        )
    # when
    everything = store.history("process", "p")
    latest = store.history("process", "p", limit=3)
    # then
    assert [e.trigger for e in everything] == [f"edit{i}" for i in range(7)]
    assert [e.trigger for e in latest] == ["edit4", "edit5", "edit6"]
    assert latest[-1].details == {"n": 6}
    assert store.history("process", "other") == []


def test_history_needs_an_existing_entity(store):
    with pytest.raises(NotFound):
        store.append_event(event("process", "ghost", "edit", None, None))
    with pytest.raises(NotFound):
        store.append_event(event("job", "ghost/2026010513", "edit", None, None))


def test_update_uow_keeps_updated_at(store):
    uow = store.create_uow(make_uow())
    updated = store.update_uow(
        uow.id, expected_state=UowState.REQUESTED, changes={"heartbeat_at": T0 + timedelta(1)}
    )
    assert updated.updated_at == uow.updated_at
