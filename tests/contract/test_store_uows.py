"""The store contract, units of work: the same tests on every backend."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from db.errors import DuplicateKey, InvalidInput, NotFound, StateConflict
from db.models import UnitOfWork, UowQuery, UowTransition
from db.states import UowKind, UowState
from tests.contract.store_helpers import (
    T0,
    _all_pages,
    _claimed_uow,
    _fields,
    _step,
    event,
    make_uow,
)


def test_uow_round_trip(store):
    # given
    uow = make_uow(
        arguments={"x": [1, 2], "y": {"z": "é"}},
        retries=3,
        scheduled_at=T0 + timedelta(seconds=1),
        submitted_at=T0 + timedelta(seconds=2),
    )
    # when
    created = store.create_uow(uow)
    # then
    assert created == uow
    assert store.get_uow(uow.id) == uow
    assert store.find_uow_by_key("site_hourly", "2026010513", "2026010514", "0") == uow
    assert store.find_uow_by_key("site_hourly", "2026010513", "2026010514", "1") is None


def test_uow_window_holds_a_freerun_fire_stamp(store):
    # a freerun's window bounds are its fire instant to the second (14 characters)
    uow = make_uow(
        start="20261101053000", end="20261101053000", kind=UowKind.FREERUN, timeperiod=None
    )
    store.create_uow(uow)
    assert store.find_uow_by_key("site_hourly", "20261101053000", "20261101053000", "0") == uow


def test_uow_unique_key(store):
    # given
    store.create_uow(make_uow())
    # when / then
    with pytest.raises(DuplicateKey):
        store.create_uow(make_uow())
    store.create_uow(make_uow(run_key="1"))
    store.create_uow(make_uow(end="2026010515"))
    store.create_uow(make_uow(process="other"))


def test_create_uows_inserts_a_batch_and_refuses_taken_keys_one_by_one(store):
    # given one unit of work stored already
    store.create_uow(make_uow(start="2026010511", end="2026010512"))
    batch = [
        make_uow(start=f"20260105{hour:02d}", end=f"20260105{hour + 1:02d}")
        for hour in range(10, 14)
    ]
    # when four are created together, the second of them under the taken key
    done = store.create_uows(
        [(uow, event("uow", uow.id, "create", None, "requested")) for uow in batch]
    )
    # then the other three are stored with their events, the taken one refused alone
    assert [type(result) for result in done] == [UnitOfWork, DuplicateKey, UnitOfWork, UnitOfWork]
    for uow, result in zip(batch, done, strict=True):
        if isinstance(result, UnitOfWork):
            assert store.get_uow(uow.id) == result == uow
            assert [e.trigger for e in store.history("uow", uow.id)] == ["create"]
        else:
            assert (
                store.find_uow_by_key(uow.process, uow.start_timeperiod, uow.end_timeperiod, "0").id
                != uow.id
            )
            assert store.history("uow", uow.id) == []
    assert store.create_uows([]) == []
    # and a batch repeating a key inside itself keeps the first
    twins = [make_uow(start="2026010600"), make_uow(start="2026010600")]
    assert [type(r) for r in store.create_uows([(u, None) for u in twins])] == [
        UnitOfWork,
        DuplicateKey,
    ]


def test_create_uows_with_a_bad_value_writes_nothing(store):
    good, naive = make_uow(start="2026010520"), make_uow(start="2026010521")
    naive = UnitOfWork(**{**_fields(naive), "created_at": datetime(2026, 1, 5, 13, 0)})
    with pytest.raises(InvalidInput):
        store.create_uows([(good, None), (naive, None)])
    assert (
        store.find_uow_by_key(good.process, good.start_timeperiod, good.end_timeperiod, "0") is None
    )


def test_uow_get_missing(store):
    with pytest.raises(NotFound):
        store.get_uow("nope")


def test_uow_creation_event(store):
    uow = make_uow()
    store.create_uow(uow, event=event("uow", uow.id, "create", None, "requested"))
    assert [e.trigger for e in store.history("uow", uow.id)] == ["create"]


def test_transition_uow_compare_and_set(store):
    # given
    uow = store.create_uow(make_uow())
    at = T0 + timedelta(seconds=30)
    # when
    claimed = store.transition_uow(
        uow.id,
        expected_state=UowState.REQUESTED,
        new_state=UowState.IN_PROGRESS,
        changes={"worker_id": "w1", "box_id": "b1", "pid": 42, "started_at": at},
        event=event("uow", uow.id, "claim", "requested", "in_progress", at=at),
    )
    # then
    assert claimed.state is UowState.IN_PROGRESS
    assert (claimed.worker_id, claimed.box_id, claimed.pid, claimed.started_at) == (
        "w1",
        "b1",
        42,
        at,
    )
    assert claimed.version == 2 and claimed.updated_at == at
    with pytest.raises(StateConflict) as err:
        store.transition_uow(
            uow.id,
            expected_state=UowState.REQUESTED,
            new_state=UowState.IN_PROGRESS,
            changes={"worker_id": "w2"},
            event=event("uow", uow.id, "claim", "requested", "in_progress"),
        )
    assert err.value.actual == "in_progress"
    assert store.get_uow(uow.id).worker_id == "w1"
    assert len(store.history("uow", uow.id)) == 1


def test_transition_uow_refuses_unchangeable_fields(store):
    uow = store.create_uow(make_uow())
    with pytest.raises(InvalidInput):
        store.transition_uow(
            uow.id,
            expected_state=UowState.REQUESTED,
            new_state=UowState.IN_PROGRESS,
            changes={"process": "evil"},
            event=event("uow", uow.id, "claim", "requested", "in_progress"),
        )
    assert store.get_uow(uow.id).state is UowState.REQUESTED


def test_transition_uows_applies_each_step_and_refuses_each_on_its_own(store):
    # given one unit of work in progress, one requested, one claimed by someone else
    running = _claimed_uow(store, start="2026010510")
    waiting = store.create_uow(make_uow(start="2026010511"))
    taken = store.create_uow(make_uow(start="2026010512"))
    store.transition_uow(
        taken.id,
        expected_state=UowState.REQUESTED,
        new_state=UowState.IN_PROGRESS,
        changes={"worker_id": "other"},
        event=event("uow", taken.id, "claim", "requested", "in_progress"),
    )
    at = T0 + timedelta(seconds=9)
    # when: finish the first, claim the second and the third, and one that does not exist
    done = store.transition_uows(
        [
            _step(running, UowState.IN_PROGRESS, UowState.PROCESSED, "succeed", at, exit_code=0),
            _step(waiting, UowState.REQUESTED, UowState.IN_PROGRESS, "claim", at, worker_id="w1"),
            _step(taken, UowState.REQUESTED, UowState.IN_PROGRESS, "claim", at, worker_id="w1"),
            UowTransition(
                uow_id="ghost",
                expected_state=UowState.REQUESTED,
                new_state=UowState.IN_PROGRESS,
                event=event("uow", "ghost", "claim", "requested", "in_progress"),
            ),
        ]
    )
    # then the applied ones are stored with their events, the refused ones changed nothing
    assert [type(result) for result in done] == [UnitOfWork, UnitOfWork, StateConflict, NotFound]
    assert done[0].state is UowState.PROCESSED and done[0].exit_code == 0
    assert done[1].state is UowState.IN_PROGRESS and done[1].worker_id == "w1"
    assert done[1].updated_at == at
    assert done[2].actual == "in_progress"
    assert store.get_uow(running.id).state is UowState.PROCESSED
    assert store.get_uow(waiting.id).state is UowState.IN_PROGRESS
    assert store.get_uow(taken.id).worker_id == "other"
    assert [e.trigger for e in store.history("uow", running.id)] == ["claim", "succeed"]
    assert [e.trigger for e in store.history("uow", waiting.id)] == ["claim"]
    assert [e.trigger for e in store.history("uow", taken.id)] == ["claim"]


def test_transition_uows_with_a_bad_change_writes_nothing(store):
    first = store.create_uow(make_uow(start="2026010510"))
    second = store.create_uow(make_uow(start="2026010511"))
    with pytest.raises(InvalidInput):
        store.transition_uows(
            [
                _step(first, UowState.REQUESTED, UowState.IN_PROGRESS, "claim"),
                _step(second, UowState.REQUESTED, UowState.IN_PROGRESS, "claim", process="evil"),
            ]
        )
    assert store.get_uow(first.id).state is UowState.REQUESTED
    assert store.get_uow(second.id).state is UowState.REQUESTED
    assert store.history("uow", first.id) == []


def test_update_uow_without_state_change(store):
    # given
    uow = store.create_uow(make_uow())
    beat = T0 + timedelta(seconds=5)
    # when
    updated = store.update_uow(
        uow.id,
        expected_state=UowState.REQUESTED,
        changes={"end_timeperiod": "2026010515", "heartbeat_at": beat},
    )
    # then
    assert updated.end_timeperiod == "2026010515" and updated.heartbeat_at == beat
    assert updated.version == uow.version + 1
    assert store.history("uow", uow.id) == []
    with pytest.raises(StateConflict):
        store.update_uow(uow.id, expected_state=UowState.IN_PROGRESS, changes={"pid": 1})


def test_update_uow_output_and_error_keep_text(store):
    uow = store.create_uow(make_uow())
    text = "line\n" * 2000 + "ünïcode ✓"
    store.update_uow(uow.id, expected_state=UowState.REQUESTED, changes={"output": text})
    assert store.get_uow(uow.id).output == text


def test_find_uows_filters_and_pagination(store):
    # given 12 units of work on two processes, some failed with a retry time
    ids = []
    for i in range(12):
        process = "a" if i % 2 else "b"
        uow = store.create_uow(
            make_uow(process=process, start=f"20260105{i:02d}", kind=UowKind.FREERUN)
        )
        ids.append(uow.id)
    failing = store.get_uow(ids[3])
    store.transition_uow(
        failing.id,
        expected_state=UowState.REQUESTED,
        new_state=UowState.IN_PROGRESS,
        event=event("uow", failing.id, "claim", "requested", "in_progress"),
    )
    store.transition_uow(
        failing.id,
        expected_state=UowState.IN_PROGRESS,
        new_state=UowState.INVALID,
        changes={"retry_at": T0 + timedelta(minutes=1)},
        event=event("uow", failing.id, "fail", "in_progress", "invalid"),
    )
    # when
    newest = _all_pages(lambda **kw: store.find_uows(UowQuery(), **kw), limit=5)
    oldest = _all_pages(lambda **kw: store.find_uows(UowQuery(newest_first=False), **kw), limit=5)
    only_a = store.find_uows(UowQuery(process="a"), limit=100).items
    invalid_due = store.find_uows(
        UowQuery(states=frozenset({UowState.INVALID}), retry_due_before=T0 + timedelta(minutes=2))
    ).items
    invalid_not_due = store.find_uows(
        UowQuery(states=frozenset({UowState.INVALID}), retry_due_before=T0)
    ).items
    # then
    assert [u.id for u in newest] == sorted(ids, reverse=True)
    assert [u.id for u in oldest] == sorted(ids)
    assert {u.process for u in only_a} == {"a"} and len(only_a) == 6
    assert [u.id for u in invalid_due] == [failing.id]
    assert invalid_not_due == []
    assert store.find_uows(UowQuery(kind=UowKind.ADHOC)).items == []
    by_tp = store.find_uows(UowQuery(process="a", timeperiod="2026010503")).items
    assert [u.id for u in by_tp] == [failing.id]


def test_find_uows_stale_queries(store):
    # given: one submitted long ago, one recently; one beat long ago, one never
    old = store.create_uow(make_uow(start="2026010501", submitted_at=T0 - timedelta(hours=2)))
    store.create_uow(make_uow(start="2026010502", submitted_at=T0))
    beat = store.create_uow(make_uow(start="2026010503", heartbeat_at=T0 - timedelta(minutes=5)))
    never = store.create_uow(make_uow(start="2026010504"))
    fresh = store.create_uow(make_uow(start="2026010505", heartbeat_at=T0))
    # when
    stale_submit = store.find_uows(UowQuery(submitted_before=T0 - timedelta(hours=1))).items
    stale_beat = store.find_uows(UowQuery(heartbeat_before=T0 - timedelta(minutes=1))).items
    # then
    assert [u.id for u in stale_submit] == [old.id]
    assert {u.id for u in stale_beat} >= {beat.id, never.id}
    assert fresh.id not in {u.id for u in stale_beat}


def test_count_uows(store):
    store.create_uow(make_uow(process="a"))
    store.create_uow(make_uow(process="a", run_key="1"))
    store.create_uow(make_uow(process="b"))
    assert store.count_uows() == {("a", UowState.REQUESTED): 2, ("b", UowState.REQUESTED): 1}
    assert store.count_uows("b") == {("b", UowState.REQUESTED): 1}
    assert store.count_uows(["b", "c"]) == {("b", UowState.REQUESTED): 1}
    assert store.count_uows(iter(["a", "b"])) == store.count_uows()
    assert store.count_uows([]) == {}


def test_count_uows_of_some_states(store):
    # given a requested, an in-progress and a processed unit of work of one process
    store.create_uow(make_uow(process="a"))
    _claimed_uow(store, process="a", run_key="1")
    done = _claimed_uow(store, process="a", run_key="2")
    store.transition_uow(
        done.id,
        expected_state=UowState.IN_PROGRESS,
        new_state=UowState.PROCESSED,
        event=event("uow", done.id, "succeed", "in_progress", "processed"),
    )
    # when only what is in flight is counted
    active = {UowState.REQUESTED, UowState.IN_PROGRESS, UowState.INVALID}
    # then the processed one is left out
    assert store.count_uows(["a", "b"], states=active) == {
        ("a", UowState.REQUESTED): 1,
        ("a", UowState.IN_PROGRESS): 1,
    }
    assert store.count_uows("a", states=[UowState.PROCESSED]) == {("a", UowState.PROCESSED): 1}
    assert store.count_uows(states=[]) == {}


def test_newest_uow_instants_are_those_of_the_newest_units_of_work(store):
    # given units of work of two processes, one started, one due later, one re-posted
    made = [store.create_uow(make_uow(process=f"p{i % 2}", run_key=str(i))) for i in range(5)]
    started = store.create_uow(make_uow(process="p0", run_key="started"))
    store.transition_uow(
        started.id,
        expected_state=UowState.REQUESTED,
        new_state=UowState.IN_PROGRESS,
        changes={"started_at": T0 + timedelta(seconds=5)},
        event=event("uow", started.id, "claim", "requested", "in_progress"),
    )
    store.update_uow(
        made[1].id,
        expected_state=UowState.REQUESTED,
        changes={"submitted_at": T0 + timedelta(seconds=9), "scheduled_at": T0},
    )
    # when
    newest = store.newest_uow_instants(4)
    # then they are find_uows's newest, in its order, with their instants
    expected = store.find_uows(UowQuery(), limit=4).items
    assert [
        (i.process, i.created_at, i.scheduled_at, i.submitted_at, i.started_at) for i in newest
    ] == [(u.process, u.created_at, u.scheduled_at, u.submitted_at, u.started_at) for u in expected]
    every = store.newest_uow_instants(100)
    assert len(every) == 6
    assert [i.started_at for i in every if i.started_at] == [T0 + timedelta(seconds=5)]
    assert [i.submitted_at for i in every if i.submitted_at] == [T0 + timedelta(seconds=9)]
