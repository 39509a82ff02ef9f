"""The store contract for payloads (SPEC section 12), on every backend: bytes stored once per
content, whoever posts them and however often."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest

from db import flows, open_store
from db.errors import NotFound
from db.models import Payload, ProcessEntry, StepEntry
from db.payloads import new_payload, sha256_of
from db.states import ProcessKind, UowKind
from tests.contract.store_helpers import T0, _race_threads, make_uow
from tests.contract.test_store_flows import Flow

MIB = 1024 * 1024


def test_payload_saved_and_read_back(store):
    # given
    payload = new_payload(b'{"rows": [1, 2, 3]}', "application/json", T0)
    # when
    saved, created = store.save_payload(payload)
    # then
    assert created and saved.id == payload.id and saved.data is None
    got = store.get_payload(payload.id)
    assert got.data == b'{"rows": [1, 2, 3]}'
    assert (got.sha256, got.size, got.content_type) == (
        sha256_of(b'{"rows": [1, 2, 3]}'),
        19,
        "application/json",
    )
    assert got.created_at == T0
    assert store.get_payload(payload.id, data=False) == Payload(
        id=payload.id,
        sha256=payload.sha256,
        size=19,
        content_type="application/json",
        created_at=T0,
    )


def test_payload_same_mib_posted_twice_is_stored_once(store):
    # given one MiB of random bytes, stored
    data = os.urandom(MIB)
    first, created = store.save_payload(new_payload(data, "application/octet-stream", T0))
    assert created
    # when the same bytes come again, later, with another id and content type
    again = new_payload(data, "text/plain", T0 + timedelta(minutes=5))
    second, created_again = store.save_payload(again)
    # then the first payload is what is stored
    assert not created_again and second == first and second.id != again.id
    assert store.get_payload(first.id).data == data
    with pytest.raises(NotFound):
        store.get_payload(again.id)


def test_payload_other_bytes_are_another_payload(store):
    a, _ = store.save_payload(new_payload(b"a", None, T0))
    b, _ = store.save_payload(new_payload(b"b", None, T0))
    assert a.id != b.id and a.content_type == "application/octet-stream"
    assert store.get_payload(b.id).data == b"b"


def test_payload_empty_and_large(store):
    empty, _ = store.save_payload(new_payload(b"", "text/plain", T0))
    assert store.get_payload(empty.id).data == b""
    # as large as max_payload_bytes allows by default: many chunks, and as large as MariaDB's
    # default max_allowed_packet
    data = os.urandom(16 * MIB)
    large, _ = store.save_payload(new_payload(data, None, T0))
    got = store.get_payload(large.id)
    assert got.size == len(data) and got.data == data


def test_payload_unknown_id_is_not_found(store):
    with pytest.raises(NotFound):
        store.get_payload("0123456789abcdef01234567")
    with pytest.raises(NotFound):
        store.get_payload("0123456789abcdef01234567", data=False)


def test_race_threads_same_payload_is_stored_once(concurrent_store_uri):
    # given six writers of the same MiB
    data = os.urandom(MIB)
    stores = [open_store(concurrent_store_uri) for _ in range(6)]
    # when they save it at once
    results = _race_threads(6, lambda i: stores[i].save_payload(new_payload(data, None, T0)))
    # then all get the one payload, stored by exactly one of them
    assert all(isinstance(r, tuple) for r in results), results
    assert len({saved.id for saved, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert stores[0].get_payload(results[0][0].id).data == data
    for s in stores:
        s.close()


def test_payload_id_is_kept_on_the_unit_of_work(store):
    payload, _ = store.save_payload(new_payload(b"input", None, T0))
    uow = store.create_uow(make_uow(kind=UowKind.FREERUN, timeperiod=None, payload_id=payload.id))
    assert uow.payload_id == payload.id and uow.payload is None
    assert store.get_uow(uow.id).payload_id == payload.id
    assert store.get_uow(store.create_uow(make_uow(run_key="1")).id).payload_id is None


def test_payload_of_a_freerun_entry_reaches_its_flow_steps(store):
    # given a freerun flow whose entry has a payload
    payload, _ = store.save_payload(new_payload(b"rows", None, T0))
    steps = (StepEntry(name="a", command=("true",)), StepEntry(name="b", command=("true",)))
    entry = ProcessEntry(
        name="etl", kind=ProcessKind.FREERUN, trigger="every 60", steps=steps, payload_id=payload.id
    )
    # when a fire creates its run and a worker expands it
    flow = Flow(store, entry)
    # then the run and each of its steps carry the entry's payload
    assert flow.run.payload_id == payload.id
    assert {s.payload_id for s in flows.steps_of(store, flow.run.id).values()} == {payload.id}
