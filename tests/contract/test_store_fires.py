"""The store contract, freerun fires: the same tests on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from db.models import FireRecord
from db.states import FireOutcome, ProcessKind
from tests.contract.store_helpers import T0, make_record


def test_fire_recorded_once(store):
    # given
    at = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    fire = FireRecord(process="cron", scheduled_at=at, outcome=FireOutcome.FIRED, recorded_at=T0)
    # when / then
    assert store.record_fire(fire) is True
    assert store.record_fire(fire) is False
    assert (
        store.record_fire(
            FireRecord(
                process="cron",
                scheduled_at=at,
                outcome=FireOutcome.SKIPPED,
                recorded_at=T0,
            )
        )
        is False
    )
    assert store.list_fires("cron")[0].outcome is FireOutcome.FIRED


def test_fire_last_and_list_and_link(store):
    # given
    base = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    for i in range(5):
        store.record_fire(
            FireRecord(
                process="cron",
                scheduled_at=base + timedelta(minutes=i),
                outcome=FireOutcome.SKIPPED if i == 2 else FireOutcome.FIRED,
                recorded_at=T0,
                reason="max_active reached" if i == 2 else "",
            )
        )
    # when
    store.set_fire_uow("cron", base + timedelta(minutes=4), "u4")
    # then
    last = store.last_fire("cron")
    assert last.scheduled_at == base + timedelta(minutes=4) and last.uow_id == "u4"
    fires = store.list_fires("cron", limit=3)
    assert [f.scheduled_at for f in fires] == [base + timedelta(minutes=i) for i in (4, 3, 2)]
    assert fires[2].reason == "max_active reached"
    assert store.last_fire("other") is None


def test_fires_recorded_and_linked_in_batches(store):
    # given one fire recorded already
    base = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    at = [base + timedelta(minutes=i) for i in range(4)]

    def fire(process: str, when: datetime) -> FireRecord:
        return FireRecord(
            process=process, scheduled_at=when, outcome=FireOutcome.FIRED, recorded_at=T0
        )

    store.record_fire(fire("cron", at[1]))
    # when a pass records four, one of them the recorded one, and links three
    recorded = store.record_fires(
        [fire("cron", at[0]), fire("cron", at[1]), fire("cron", at[2]), fire("other", at[0])]
    )
    store.set_fire_uows([("cron", at[0], "u0"), ("cron", at[2], "u2"), ("other", at[0], "o0")])
    store.set_fire_uows([("ghost", at[3], "g3")])  # no such fire: nothing happens
    # then each is recorded once, the one recorded before is passed over, the links hold
    assert recorded == [True, False, True, True]
    assert [(f.scheduled_at, f.uow_id) for f in store.list_fires("cron")] == [
        (at[2], "u2"),
        (at[1], None),
        (at[0], "u0"),
    ]
    assert store.last_fire("other").uow_id == "o0"
    assert store.last_fire("ghost") is None
    assert store.record_fires([]) == []
    store.set_fire_uows([])


def _fired(process: str, when: datetime, outcome: FireOutcome = FireOutcome.FIRED) -> FireRecord:
    return FireRecord(process=process, scheduled_at=when, outcome=outcome, recorded_at=T0)


def test_last_fires_of_many_processes_read_together(store):
    # given two registered freeruns with fires, one registered without, one not registered
    base = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    for name in ("a_cron", "b_cron", "quiet"):
        store.insert_process(make_record(name, ProcessKind.FREERUN))
    store.record_fires([_fired("a_cron", base + timedelta(seconds=i)) for i in range(5)])
    store.record_fires(
        [
            _fired("b_cron", base, FireOutcome.SKIPPED),
            _fired("b_cron", base - timedelta(days=1)),
            _fired("gone", base + timedelta(hours=1)),
        ]
    )
    store.set_fire_uows([("a_cron", base + timedelta(seconds=4), "u4")])
    # when
    last = store.last_fires(["a_cron", "b_cron", "quiet", "gone", "nobody", "a_cron"])
    # then each is the fire with the latest scheduled_at, whole; none for those without
    assert sorted(last) == ["a_cron", "b_cron", "gone"]
    assert last["a_cron"] == store.last_fire("a_cron")
    assert last["a_cron"].scheduled_at == base + timedelta(seconds=4)
    assert last["a_cron"].uow_id == "u4"
    assert last["b_cron"].scheduled_at == base
    assert last["b_cron"].outcome is FireOutcome.SKIPPED
    assert last["gone"].scheduled_at == base + timedelta(hours=1)
    assert store.last_fires([]) == {}


def test_recent_fires_of_many_processes_read_together(store):
    # given freeruns with more fires than asked for, with fewer, with none, and fires of a
    # process no longer registered
    base = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    for name in ("a_cron", "b_cron", "quiet"):
        store.insert_process(make_record(name, ProcessKind.FREERUN))
    store.record_fires([_fired("a_cron", base + timedelta(minutes=i)) for i in range(12)])
    store.record_fires(
        [
            _fired("b_cron", base, FireOutcome.SKIPPED),
            _fired("b_cron", base - timedelta(days=1)),
            _fired("gone", base + timedelta(hours=1)),
        ]
    )
    # when
    recent = store.recent_fires(["a_cron", "b_cron", "quiet", "gone", "nobody", "a_cron"], limit=5)
    # then each is list_fires of its process: the latest ones, newest first, whole
    assert sorted(recent) == ["a_cron", "b_cron", "gone"]
    for name, fires in recent.items():
        assert fires == store.list_fires(name, limit=5)
    assert [f.scheduled_at for f in recent["a_cron"]] == [
        base + timedelta(minutes=i) for i in range(11, 6, -1)
    ]
    assert [f.outcome for f in recent["b_cron"]] == [FireOutcome.SKIPPED, FireOutcome.FIRED]
    assert store.recent_fires([], limit=5) == {}
    assert store.recent_fires(["a_cron"], limit=1) == {"a_cron": [store.last_fire("a_cron")]}


def test_unlinked_fires_are_the_fired_ones_without_a_unit_of_work(store):
    # given fired fires linked and not, a skipped and a missed one (never linked)
    base = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    store.record_fires(
        [
            _fired("a_cron", base),
            _fired("a_cron", base + timedelta(minutes=1)),
            _fired("a_cron", base + timedelta(minutes=2)),
            _fired("a_cron", base + timedelta(minutes=3), FireOutcome.SKIPPED),
            _fired("b_cron", base + timedelta(minutes=1), FireOutcome.MISSED),
            _fired("b_cron", base),
            _fired("c_cron", base),
        ]
    )
    store.set_fire_uows([("a_cron", base + timedelta(minutes=1), "u1")])
    # when
    found = store.unlinked_fires(["b_cron", "a_cron", "nobody"])
    # then only the fired, unlinked fires of the processes asked about, by process and instant
    assert [(f.process, f.scheduled_at, f.outcome) for f in found] == [
        ("a_cron", base, FireOutcome.FIRED),
        ("a_cron", base + timedelta(minutes=2), FireOutcome.FIRED),
        ("b_cron", base, FireOutcome.FIRED),
    ]
    assert all(f.uow_id is None for f in found)
    store.set_fire_uows([("a_cron", base, "u0"), ("a_cron", base + timedelta(minutes=2), "u2")])
    assert [f.process for f in store.unlinked_fires(["a_cron", "b_cron"])] == ["b_cron"]
    assert store.unlinked_fires([]) == []


def test_record_fires_twice_in_one_batch_records_it_once(store):
    # given the same fire twice in one batch, and one recorded before
    base = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    store.record_fire(_fired("cron", base))
    # when
    recorded = store.record_fires(
        [_fired("cron", base + timedelta(seconds=1)), _fired("cron", base + timedelta(seconds=1))]
        + [_fired("cron", base)]
    )
    # then
    assert recorded == [True, False, False]
    assert len(store.list_fires("cron")) == 2
