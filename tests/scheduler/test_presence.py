"""The scheduler's heartbeat record, which /api/v1/health reads."""

from __future__ import annotations

from datetime import timedelta

from mx.api.meta import scheduler_liveness
from scheduler.presence import Presence
from tests.polling import wait_until


def test_the_scheduler_registers_beats_and_leaves(kit):
    store, clock = kit.store, kit.clock
    liveness = timedelta(seconds=30)
    assert scheduler_liveness(store, clock.now(), liveness) == {"alive": None, "leader": None}
    presence = Presence(store, clock, box_id="b1", interval=timedelta(milliseconds=20))
    presence.start()
    try:
        assert scheduler_liveness(store, clock.now(), liveness) == {
            "alive": True,
            "leader": "scheduler@b1",
        }
        # It keeps beating: a minute later by the clock, the record has caught up.
        clock.advance(timedelta(minutes=1))
        wait_until(
            lambda: store.list_workers(process="scheduler")[0].heartbeat_at == clock.now(),
            what="a beat at the new time",
        )
        # Removed by someone else: it registers again at the next beat.
        store.delete_worker("scheduler@b1")
        wait_until(lambda: store.list_workers(process="scheduler"), what="a new registration")
    finally:
        presence.stop()
    assert store.list_workers(process="scheduler") == []


def test_a_silent_scheduler_is_reported_dead(kit):
    store, clock = kit.store, kit.clock
    presence = Presence(store, clock, box_id="b1", interval=timedelta(hours=1))
    presence.start()
    try:
        clock.advance(timedelta(seconds=31))
        assert scheduler_liveness(store, clock.now(), timedelta(seconds=30)) == {
            "alive": False,
            "leader": None,
        }
    finally:
        presence._stopping.set()  # no graceful removal: as after a crash
