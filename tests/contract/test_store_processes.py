"""The store contract, processes: the same tests on every backend."""

from __future__ import annotations

import pytest

from db.errors import Conflict, DuplicateKey, NotFound
from db.states import ProcessKind
from tests.contract.store_helpers import T0, event, make_record


def test_process_insert_get_list(store):
    # given
    store.insert_process(make_record("b_hourly"))
    store.insert_process(make_record("a_cron", ProcessKind.FREERUN))
    # when
    names = [r.name for r in store.list_processes()]
    freeruns = [r.name for r in store.list_processes(ProcessKind.FREERUN)]
    got = store.get_process("b_hourly")
    # then
    assert names == ["a_cron", "b_hourly"]
    assert freeruns == ["a_cron"]
    assert got.entry == make_record("b_hourly").entry
    assert got.registered == make_record("b_hourly").entry.to_dict()
    assert got.version == 1
    assert got.created_at == T0


def test_process_duplicate_refused(store):
    store.insert_process(make_record("p"))
    with pytest.raises(DuplicateKey):
        store.insert_process(make_record("p"))


def test_process_get_missing(store):
    with pytest.raises(NotFound, match="process nope not found"):
        store.get_process("nope")


def test_process_update_is_compare_and_set_on_version(store):
    # given
    rec = store.insert_process(make_record("p"))
    changed = make_record("p", enabled=False)
    # when
    updated = store.update_process(changed, expected_version=rec.version)
    # then
    assert updated.version == rec.version + 1
    assert store.get_process("p").entry.enabled is False
    with pytest.raises(Conflict):
        store.update_process(make_record("p", retries=9), expected_version=rec.version)
    assert store.get_process("p").entry.retries == 3


def test_process_update_appends_event(store):
    rec = store.insert_process(make_record("p"))
    ev = event("process", "p", "disable", None, None, actor="alice")
    store.update_process(make_record("p", enabled=False), expected_version=rec.version, event=ev)
    assert [e.trigger for e in store.history("process", "p")] == ["disable"]
    assert store.history("process", "p")[0].actor == "alice"


def test_process_delete(store):
    store.insert_process(make_record("p"))
    store.delete_process("p")
    assert store.list_processes() == []
    with pytest.raises(NotFound):
        store.delete_process("p")
