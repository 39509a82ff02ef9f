"""The store contract, freerun fires: the same tests on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from db.models import FireRecord
from db.states import FireOutcome
from tests.contract.store_helpers import T0


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
