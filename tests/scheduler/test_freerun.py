"""Freerun processes: fire identity, max_active, catch-up, and DST with an injected clock."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from db.errors import BrokerUnavailable
from db.states import FireOutcome, UowKind


def freerun(kit, name="cron", **fields):
    return kit.register(
        name=name,
        kind="freerun",
        command=["true"],
        trigger=fields.pop("trigger", "every 60"),
        **fields,
    )


def fired(kit, name="cron"):
    return [f for f in kit.store.list_fires(name, limit=1000) if f.outcome is FireOutcome.FIRED]


def test_freerun_fires_on_time_once_per_instant(kit):
    # given a trigger every minute (registered at 13:00)
    freerun(kit, max_active=10)
    # when three minutes pass, a pass per 20 s
    for _ in range(9):
        kit.run(seconds=20)
    # then three fires, each with one unit of work, each published once
    fires = sorted(f.scheduled_at for f in fired(kit))
    assert fires == [datetime(2026, 1, 5, 13, m, tzinfo=UTC) for m in (1, 2, 3)]
    uows = kit.uows("cron")
    assert len(uows) == 3 and {u.kind for u in uows} == {UowKind.FREERUN}
    assert sorted(kit.broker.uow_ids()) == sorted(u.id for u in uows)


def test_freerun_restart_never_fires_twice(kit):
    # given a fire done
    freerun(kit)
    kit.run(seconds=60)
    assert len(fired(kit)) == 1
    # when the scheduler restarts at the same instant and runs again
    kit.restart()
    kit.run()
    # then nothing fires again
    assert len(fired(kit)) == 1 and len(kit.uows("cron")) == 1


def test_freerun_max_active_records_skipped_fire(kit):
    # given max_active 1 and a unit of work still in flight
    freerun(kit, max_active=1)
    kit.run(seconds=60)
    # when the next fire comes
    kit.run(seconds=60)
    # then it is recorded as skipped, visibly, with the reason
    fires = kit.store.list_fires("cron")
    assert [f.outcome for f in fires] == [FireOutcome.SKIPPED, FireOutcome.FIRED]
    assert "max_active" in fires[0].reason
    assert len(kit.uows("cron")) == 1


def test_freerun_catchup_latest_fires_only_the_newest_missed(kit):
    freerun(kit, catchup="latest", max_active=100)
    kit.run(seconds=3600)  # an hour of downtime: 60 missed fires
    assert [f.scheduled_at for f in fired(kit)] == [datetime(2026, 1, 5, 14, 0, tzinfo=UTC)]


def test_freerun_catchup_all_fires_every_missed(kit):
    freerun(kit, catchup="all", max_active=100)
    kit.run(seconds=3600)
    assert len(fired(kit)) == 60 and len(kit.uows("cron")) == 60


def test_freerun_catchup_none_records_the_miss(kit):
    # given downtime until 50 s after the 14:00 fire (more than ON_TIME late)
    freerun(kit, catchup="none")
    kit.run(seconds=3650)
    # then that fire is recorded as missed, and nothing runs
    fires = kit.store.list_fires("cron")
    assert [f.outcome for f in fires] == [FireOutcome.MISSED]
    assert kit.uows("cron") == []
    # and the next fire, on time, runs
    kit.run(seconds=15)
    assert [f.outcome for f in kit.store.list_fires("cron")][0] is FireOutcome.FIRED


def test_freerun_disabled_fires_nothing(kit):
    freerun(kit, enabled=False)
    kit.run(seconds=600)
    assert kit.store.list_fires("cron") == []


def _run_through(kit, start, end, step=timedelta(minutes=5)):
    kit.clock.set(start)
    while kit.clock.now() < end:
        kit.run(seconds=step.total_seconds())
        kit.work_all("fixed")
        kit.work_all("paced")


def test_freerun_across_new_york_fall_back_fires_as_spec_says(kit):
    # given two freeruns in America/New_York registered before the 2026-11-01 fall-back
    kit.clock.set(datetime(2026, 10, 31, 12, 0, tzinfo=UTC))
    freerun(kit, name="fixed", trigger="30 1 * * *", timezone="America/New_York")
    freerun(kit, name="paced", trigger="*/30 * * * *", timezone="America/New_York", max_active=5)
    # when the scheduler runs every 5 minutes through the repeated hour (01:00-02:00 twice)
    _run_through(
        kit, datetime(2026, 10, 31, 12, 0, tzinfo=UTC), datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    )
    # then the fixed time fires once, at its first occurrence (01:30 EDT = 05:30Z)
    fixed = [f.scheduled_at for f in fired(kit, "fixed")]
    assert fixed == [datetime(2026, 11, 1, 5, 30, tzinfo=UTC)]
    # and the paced expression keeps real-time pace through both passes of the hour
    paced = sorted(f.scheduled_at for f in fired(kit, "paced"))
    night = [p for p in paced if datetime(2026, 11, 1, 4, 50, tzinfo=UTC) <= p]
    assert night[:6] == [
        datetime(2026, 11, 1, 5, 0, tzinfo=UTC),  # 01:00 EDT
        datetime(2026, 11, 1, 5, 30, tzinfo=UTC),  # 01:30 EDT
        datetime(2026, 11, 1, 6, 0, tzinfo=UTC),  # 01:00 EST
        datetime(2026, 11, 1, 6, 30, tzinfo=UTC),  # 01:30 EST
        datetime(2026, 11, 1, 7, 0, tzinfo=UTC),  # 02:00 EST
        datetime(2026, 11, 1, 7, 30, tzinfo=UTC),
    ]
    assert len(paced) == len(set(paced))


def test_freerun_across_new_york_spring_forward(kit):
    # given a fixed 02:30 that does not exist on 2026-03-08
    kit.clock.set(datetime(2026, 3, 7, 12, 0, tzinfo=UTC))
    freerun(kit, name="fixed", trigger="30 2 * * *", timezone="America/New_York")
    freerun(kit, name="paced", trigger="*/30 * * * *", timezone="America/New_York", max_active=5)
    _run_through(
        kit, datetime(2026, 3, 7, 12, 0, tzinfo=UTC), datetime(2026, 3, 8, 9, 0, tzinfo=UTC)
    )
    # then it fires right after the gap (03:00 EDT = 07:00Z), once
    assert [f.scheduled_at for f in fired(kit, "fixed")] == [datetime(2026, 3, 8, 7, 0, tzinfo=UTC)]
    # and the paced one does not fire in the skipped hour: 01:30 EST (06:30Z), then 03:00 EDT
    paced = sorted(f.scheduled_at for f in fired(kit, "paced"))
    assert datetime(2026, 3, 8, 6, 30, tzinfo=UTC) in paced
    assert datetime(2026, 3, 8, 7, 0, tzinfo=UTC) in paced
    assert len([p for p in paced if p.date() == datetime(2026, 3, 8).date()]) == len(
        {p for p in paced if p.date() == datetime(2026, 3, 8).date()}
    )


def _write_commits(store):
    """A counter of the SQLite store's committed write transactions (reads are not counted)."""
    import sqlalchemy as sa

    from db.backends.sql.engine import WRITE_OPTION

    count = [0]

    def committed(conn) -> None:
        if conn.get_execution_options().get(WRITE_OPTION, False):
            count[0] += 1

    sa.event.listen(store.engine, "commit", committed)
    return count


def test_a_pass_fires_many_entries_together_in_a_few_commits(kit):
    # given 50 entries firing on the same minute
    for i in range(50):
        freerun(kit, name=f"cron{i:02d}", trigger="* * * * *")
    kit.run()
    commits = _write_commits(kit.store)
    # when the minute comes
    report = kit.run(seconds=60)
    # then each fired once, with one unit of work, linked and published
    assert report.fires == 50
    for i in range(50):
        (fire,) = fired(kit, f"cron{i:02d}")
        (uow,) = kit.uows(f"cron{i:02d}")
        assert fire.uow_id == uow.id and uow.scheduled_at == fire.scheduled_at
    assert len(kit.broker.uow_ids()) == 50
    # and the fires cost three commits (recorded, created, linked), not three each
    assert commits[0] <= 3 + 2, commits[0]  # (+ the scheduler's heartbeat and recovery)


def test_fires_recorded_just_before_a_crash_get_their_units_of_work(kit):
    # given a pass that recorded three fires (catchup: all) and died before creating them,
    # and one fire whose unit of work was created but not linked
    entry = freerun(kit, catchup="all", max_active=10).entry
    kit.run()
    now = kit.clock.now() + timedelta(minutes=3)
    instants = [kit.clock.now() + timedelta(minutes=m) for m in (1, 2, 3)]
    from db.models import FireRecord
    from db.uow_factory import UowSpec, create_many_once
    from scheduler.freerun import fire_stamp

    kit.store.record_fires(
        [
            FireRecord(process="cron", scheduled_at=at, outcome=FireOutcome.FIRED, recorded_at=now)
            for at in instants
        ]
    )
    stamp = fire_stamp(instants[0])
    ((twin, _),) = create_many_once(
        kit.store,
        [
            UowSpec(
                entry=entry, kind=UowKind.FREERUN, start=stamp, end=stamp, run_key="fire", reason=""
            )
        ],
        clock=kit.clock,
        actor="scheduler",
    )
    # when a scheduler starts and the process is due again
    kit.restart()
    kit.clock.advance(180)
    kit.run(seconds=1)
    # then every one of them has one unit of work, the one made before reused, none twice
    fires = {f.scheduled_at: f for f in fired(kit)}
    assert set(instants) <= set(fires)
    uows = kit.uows("cron")
    assert len(uows) == len(fires)
    assert fires[instants[0]].uow_id == twin.id
    assert all(fires[at].uow_id for at in instants)


def test_a_pass_that_failed_after_recording_its_fire_is_completed_by_the_next(kit):
    import pytest

    from db.errors import StoreUnavailable

    # given a pass whose fire was recorded, and whose store then failed
    freerun(kit)  # every 60, max_active 1
    kit.run()

    def down(*args, **kwargs):
        raise StoreUnavailable("the store went away")

    kit.store.create_uows = down
    with pytest.raises(StoreUnavailable):
        kit.run(seconds=60)
    del kit.store.create_uows
    (first,) = kit.store.list_fires("cron")
    assert first.uow_id is None and kit.uows("cron") == []
    # when the next fire is due
    kit.run(seconds=60)
    # then the first fire gets its unit of work, which the next fire finds in flight
    fires = kit.store.list_fires("cron")
    assert [f.outcome for f in fires] == [FireOutcome.SKIPPED, FireOutcome.FIRED]
    (uow,) = kit.uows("cron")
    assert fires[1].uow_id == uow.id and uow.scheduled_at == first.scheduled_at
    assert kit.broker.uow_ids() == [uow.id]


# -- fires prepared ahead of their instant (issue 16) -----------------------------------------


def _disable(kit, name="cron"):
    record = kit.store.get_process(name)
    changed = replace(
        record, entry=replace(record.entry, enabled=False), updated_at=kit.clock.now()
    )
    kit.store.update_process(changed, expected_version=record.version)
    kit.scheduler.reload()


def test_a_fire_is_prepared_ahead_and_published_at_its_instant(kit):
    # given a trigger every minute (registered at 13:00)
    freerun(kit, max_active=10)
    # when a pass runs half a second before 13:01
    kit.run(seconds=59.5)
    # then the fire is recorded and its unit of work stored, but nothing is published yet
    (fire,) = fired(kit)
    assert fire.scheduled_at == datetime(2026, 1, 5, 13, 1, tzinfo=UTC)
    (uow,) = kit.uows("cron", "requested")
    assert uow.scheduled_at == fire.scheduled_at and fire.uow_id == uow.id
    assert kit.broker.uow_ids() == []
    # and the loop wakes at the instant to release it
    assert kit.scheduler.next_wakeup() == fire.scheduled_at
    # when the instant comes: published once, without a delay, and never again
    kit.run(seconds=0.5)
    kit.run(seconds=20)
    assert [(m.uow_id, delay) for _, m, delay in kit.broker.published] == [(uow.id, None)]
    assert len(fired(kit)) == 1 and len(kit.uows("cron")) == 1


def test_a_fire_prepared_ahead_of_a_disable_is_canceled_not_published(kit):
    # given a fire prepared ahead
    freerun(kit, max_active=10)
    kit.run(seconds=59.5)
    (uow,) = kit.uows("cron", "requested")
    # when the process is disabled before the instant, and the instant comes
    _disable(kit)
    kit.run(seconds=0.5)
    # then its unit of work is canceled, visibly, and never published
    assert kit.broker.uow_ids() == []
    (canceled,) = kit.uows("cron", "canceled")
    assert canceled.id == uow.id
    events = kit.store.history("uow", uow.id)
    assert any("disabled, edited or removed" in e.reason for e in events)


def test_a_fire_prepared_by_a_scheduler_that_stops_is_published_with_the_delay_to_its_instant(
    kit,
):
    # given a fire prepared ahead by a scheduler that then dies before its instant
    freerun(kit, max_active=10)
    kit.run(seconds=59.5)
    (uow,) = kit.uows("cron", "requested")
    kit.restart()
    # when the next scheduler starts, 0.2 s later
    kit.run(seconds=0.2)
    # then it publishes the unit of work with the broker's delay to the instant (not early,
    # not a unit of work's timeout late), and never fires that instant again
    assert [(m.uow_id, delay) for _, m, delay in kit.broker.published] == [
        (uow.id, timedelta(seconds=0.3))
    ]
    kit.run(seconds=0.3)
    kit.run(seconds=10)
    assert len(fired(kit)) == 1 and len(kit.uows("cron")) == 1


def test_a_scheduler_stopping_hands_its_prepared_fires_to_the_broker(kit):
    freerun(kit, max_active=10)
    kit.run(seconds=59.5)
    (uow,) = kit.uows("cron", "requested")
    kit.scheduler.stop()
    assert [(m.uow_id, delay) for _, m, delay in kit.broker.published] == [
        (uow.id, timedelta(seconds=0.5))
    ]


def test_no_room_under_max_active_ahead_of_the_instant_is_decided_at_the_instant(kit):
    # given max_active 1 and the 13:01 unit of work still in flight half a second before 13:02
    freerun(kit, max_active=1)
    kit.run(seconds=60)
    kit.run(seconds=59.5)
    # then the 13:02 fire is not prepared (nor skipped), and the loop waits for the instant
    assert len(kit.store.list_fires("cron")) == 1
    assert kit.scheduler.next_wakeup() == datetime(2026, 1, 5, 13, 2, tzinfo=UTC)
    # when the unit of work ends before the instant, the fire at the instant goes ahead
    kit.work_all("cron")
    kit.run(seconds=0.5)
    fires = kit.store.list_fires("cron")
    assert [f.outcome for f in fires] == [FireOutcome.FIRED, FireOutcome.FIRED]
    assert len(kit.broker.uow_ids()) == 2


@contextlib.contextmanager
def _broker_down(kit):
    """Every publish inside the block fails, and so does the block."""
    publish = kit.broker.publish

    def down(queue, body, *, delay=None):
        raise BrokerUnavailable("broker away")

    kit.broker.publish = down
    try:
        with pytest.raises(BrokerUnavailable):
            yield
    finally:
        kit.broker.publish = publish


def test_a_release_that_the_broker_refuses_is_tried_again_by_the_next_pass(kit):
    # given a fire prepared ahead, and a broker that fails the release
    freerun(kit, max_active=10)
    kit.run(seconds=59.5)
    (uow,) = kit.uows("cron", "requested")
    with _broker_down(kit):
        kit.run(seconds=0.5)
    # when the broker is back, the next pass publishes it, once
    kit.run(seconds=0.2)
    assert kit.broker.uow_ids() == [uow.id]


# -- on a broker whose delay is exact (the store queue): published at once, with the delay -----


def _exact_delay(kit):
    kit.broker.exact_delay = True
    return kit.restart()


def _published_ahead(kit):
    """A fire of ``cron`` prepared half a second before 13:01, on an exact-delay broker."""
    _exact_delay(kit)
    freerun(kit, max_active=10)
    kit.run(seconds=59.5)
    (uow,) = kit.uows("cron", "requested")
    return uow


def test_on_an_exact_delay_broker_a_fire_prepared_ahead_is_published_at_once_with_its_delay(
    kit,
):
    # given a broker whose delayed messages reach idle consumers at their time
    _exact_delay(kit)
    freerun(kit, max_active=10)
    # when a pass runs half a second before 13:01
    kit.run(seconds=59.5)
    # then the fire is prepared and its message published now, with the delay to its instant
    (uow,) = kit.uows("cron", "requested")
    assert uow.scheduled_at == datetime(2026, 1, 5, 13, 1, tzinfo=UTC)
    assert [(m.uow_id, d) for _, m, d in kit.broker.published] == [(uow.id, timedelta(seconds=0.5))]
    # and the loop has nothing to release at the instant
    assert kit.scheduler.firer.next_release() is None
    assert kit.scheduler.next_wakeup() != uow.scheduled_at
    # and neither the instant, nor a stop, publishes it again
    kit.run(seconds=0.5)
    kit.run(seconds=20)
    kit.scheduler.stop()
    assert kit.broker.uow_ids() == [uow.id]
    assert len(fired(kit)) == 1 and len(kit.uows("cron")) == 1


def test_on_an_exact_delay_broker_a_change_read_before_the_instant_cancels_the_fire_at_once(
    kit,
):
    # given a fire published ahead
    uow = _published_ahead(kit)
    # when the process is disabled and a pass reads it, still before the instant
    _disable(kit)
    kit.run(seconds=0.1)
    # then its unit of work is canceled then, before any worker can claim its message (the
    # worker that gets it at the instant finds it canceled: it acks it and runs nothing)
    (canceled,) = kit.uows("cron", "canceled")
    assert canceled.id == uow.id and canceled.updated_at < uow.scheduled_at
    events = kit.store.history("uow", uow.id)
    assert any("disabled, edited or removed" in e.reason for e in events)
    kit.run(seconds=0.4)
    kit.run(seconds=20)
    assert kit.broker.uow_ids() == [uow.id] and len(fired(kit)) == 1


def test_on_an_exact_delay_broker_a_change_read_after_the_instant_leaves_the_fire_to_run(kit):
    # given a fire published ahead, its instant come
    uow = _published_ahead(kit)
    kit.clock.advance(0.5)
    # when the scheduler reads a disable only now: the fire belongs to its worker already
    _disable(kit)
    kit.run()
    # then it is not canceled under the worker that claims it
    assert [u.id for u in kit.uows("cron", "requested")] == [uow.id]
    assert kit.uows("cron", "canceled") == []


def test_on_an_exact_delay_broker_a_restart_publishes_a_fire_published_ahead_again_and_it_runs_once(
    kit,
):
    # given a fire published ahead by a scheduler that then stops before its instant
    uow = _published_ahead(kit)
    kit.scheduler.stop()
    kit.restart()
    # when the next scheduler starts, 0.2 s later
    kit.run(seconds=0.2)
    # then it cannot tell whether the message left, and publishes it again with the delay
    # to the instant (the same unit of work, never a second fire)
    assert [(m.uow_id, d) for _, m, d in kit.broker.published] == [
        (uow.id, timedelta(seconds=0.5)),
        (uow.id, timedelta(seconds=0.3)),
    ]
    # and the unit of work is claimed once: the claim is a compare-and-set, so the second
    # delivery finds it taken (tests/workers/test_fire_published_ahead.py, a real worker)
    kit.run(seconds=0.3)
    done = kit.work(uow.id)
    assert done.state.value == "processed"
    assert kit.store.get_uow(uow.id).state.value == "processed"
    claims = [e for e in kit.store.history("uow", uow.id) if e.trigger == "claim"]
    assert len(claims) == 1
    kit.run(seconds=10)
    assert len(fired(kit)) == 1 and len(kit.uows("cron")) == 1


def test_on_an_exact_delay_broker_a_publish_that_fails_ahead_is_released_at_the_instant(kit):
    # given a broker that fails the publish ahead
    _exact_delay(kit)
    freerun(kit, max_active=10)
    with _broker_down(kit):
        kit.run(seconds=59.5)
    (uow,) = kit.uows("cron", "requested")
    # when the broker is back: the fire is held, and released at its instant, once
    assert kit.scheduler.firer.next_release() == uow.scheduled_at
    kit.run(seconds=0.5)
    kit.run(seconds=10)
    assert [(m.uow_id, d) for _, m, d in kit.broker.published] == [(uow.id, None)]
