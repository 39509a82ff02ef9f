"""Managed processes: the ledger, the three state machines, blocking, trees, dependencies,
retries, catch-up and restarts. The clock is injected; workers are played through the machine."""

from __future__ import annotations

from datetime import timedelta

import pytest

from db.state_change import change_uow
from db.states import UowState
from tests.scheduler.conftest import Kit, RecordingBroker


def hourly(kit, name="site_hourly", **fields):
    return kit.register(
        name=name,
        kind="managed",
        time_qualifier="hourly",
        command=["true"],
        start_timeperiod=fields.pop("start_timeperiod", "2026010510"),
        lag=fields.pop("lag", 0),
        **fields,
    )


def test_ledger_materializes_every_period_and_starts_the_oldest_closed_one(kit):
    # given a discrete hourly process starting three hours ago (now 13:00)
    hourly(kit)
    # when
    report = kit.run()
    # then every period up to now exists, and only the oldest closed one runs (max_active 1)
    assert kit.states("site_hourly") == {
        "2026010510": "in_progress",
        "2026010511": "embryo",
        "2026010512": "embryo",
        "2026010513": "embryo",
    }
    assert report.materialized == 4 and report.started == 1
    (uow,) = kit.uows("site_hourly")
    assert (uow.start_timeperiod, uow.end_timeperiod) == ("2026010510", "2026010511")
    assert kit.broker.uow_ids() == [uow.id]


def test_discrete_waits_for_lag_after_the_period_closes(kit):
    # given now 13:00 and a period 12:00-13:00 with a 10 minute lag
    hourly(kit, start_timeperiod="2026010512", lag=600)
    kit.run()
    assert kit.states("site_hourly")["2026010512"] == "embryo"
    # when the lag has passed
    kit.run(seconds=600)
    # then
    assert kit.states("site_hourly")["2026010512"] == "in_progress"


def test_status_change_starts_next_period_without_waiting_a_tick(kit):
    # given
    hourly(kit)
    kit.run()
    (first,) = kit.uows("site_hourly")
    # when the worker finishes and the scheduler is woken (no time passes)
    kit.work(first.id)
    kit.run()
    # then the period is processed and the next one started in the same instant
    states = kit.states("site_hourly")
    assert states["2026010510"] == "processed" and states["2026010511"] == "in_progress"


def test_catch_up_starts_all_missed_periods_at_once_with_max_active(kit):
    # given 24 missed hourly periods and max_active 24
    hourly(kit, start_timeperiod="2026010413", max_active=24)
    # when one pass runs
    report = kit.run()
    # then all 24 closed periods started in that pass
    assert report.started == 24
    assert len(kit.broker.published) == 24
    assert list(kit.states("site_hourly").values()).count("in_progress") == 24


def test_48_hours_of_downtime_are_caught_up_one_by_one_with_none_lost(kit):
    # given a process that ran up to now, then 48 hours of scheduler downtime
    hourly(kit, start_timeperiod="2026010513")
    kit.run()
    kit.clock.advance(timedelta(hours=48))
    kit.restart()
    # when the scheduler comes back and workers finish each unit of work as it is published
    for _ in range(60):
        kit.run()
        if not kit.work_all("site_hourly"):
            break
    # then every period of the downtime ran, once
    states = kit.states("site_hourly")
    assert len(states) == 49
    assert all(s == "processed" for tp, s in states.items() if tp != "2026010713")
    assert len(kit.uows("site_hourly")) == 48


def test_failing_period_does_not_block_later_ones_beyond_max_active(kit):
    # given max_active 2 and the first unit of work stuck in progress
    hourly(kit, max_active=2, retries=0)
    kit.run()
    first, second = kit.uows("site_hourly")
    kit.work(second.id)
    kit.run()
    # then the next period runs while the first is still stuck
    states = kit.states("site_hourly")
    assert states["2026010510"] == "in_progress"
    assert states["2026010511"] == "processed"
    assert states["2026010512"] == "in_progress"


def test_retries_to_success_with_doubling_delay(kit):
    # given a process with 2 retries and a 60 s retry delay
    hourly(kit, start_timeperiod="2026010512", retries=2, retry_delay=60)
    kit.run()
    (uow,) = kit.uows("site_hourly")
    # when the first attempt fails
    kit.work(uow.id, "fail", exit_code=3)
    kit.run()
    # then it waits 60 s, then is retried
    assert kit.store.get_uow(uow.id).state is UowState.INVALID
    assert kit.store.get_uow(uow.id).retry_at == kit.clock.now() + timedelta(seconds=60)
    kit.run(seconds=60)
    retried = kit.store.get_uow(uow.id)
    assert (retried.state, retried.attempt) == (UowState.REQUESTED, 2)
    # when the second attempt fails too, the next delay doubles
    kit.work(uow.id, "fail", exit_code=3)
    kit.run()
    assert kit.store.get_uow(uow.id).retry_at == kit.clock.now() + timedelta(seconds=120)
    kit.run(seconds=120)
    # when the third attempt succeeds
    kit.work(uow.id)
    kit.run()
    # then the job is processed
    assert kit.states("site_hourly")["2026010512"] == "processed"
    history = [e.trigger for e in kit.store.history("uow", uow.id)]
    assert history.count("fail") == 2 and history.count("retry") == 2


def test_retries_exhausted_cancel_and_skip_the_job(kit):
    # given
    hourly(kit, start_timeperiod="2026010512", retries=1, retry_delay=10)
    kit.run()
    (uow,) = kit.uows("site_hourly")
    # when both attempts fail
    kit.work(uow.id, "fail")
    kit.run()
    kit.run(seconds=10)
    kit.work(uow.id, "fail")
    kit.run()
    kit.run(seconds=20)
    # then the unit of work is canceled and the job skipped
    assert kit.store.get_uow(uow.id).state is UowState.CANCELED
    assert kit.states("site_hourly")["2026010512"] == "skipped"


def test_unclaimed_unit_of_work_is_reposted_not_duplicated(kit):
    # given a published unit of work nobody claims
    hourly(kit, start_timeperiod="2026010512")
    kit.run()
    (uow,) = kit.uows("site_hourly")
    # when the unclaimed timeout passes
    kit.run(seconds=kit.config.unclaimed_timeout.total_seconds() + 1)
    # then the same unit of work is published again; no new one exists
    assert kit.broker.uow_ids() == [uow.id, uow.id]
    assert len(kit.uows("site_hourly")) == 1


def test_a_restarted_scheduler_publishes_what_its_predecessor_may_not_have(kit):
    # given a scheduler that stored a unit of work and stopped before publishing it (the
    # message is lost here with the broker's record of it)
    hourly(kit, start_timeperiod="2026010512")
    kit.run()
    (uow,) = kit.uows("site_hourly")
    kit.broker.published.clear()
    # when a scheduler starts, long before the unclaimed timeout
    kit.restart()
    kit.run(seconds=1)
    # then it publishes the same unit of work at once, creating none
    assert kit.broker.uow_ids() == [uow.id]
    assert len(kit.uows("site_hourly")) == 1
    assert [e.trigger for e in kit.store.history("uow", uow.id)][-1] == "repost"
    # and later passes leave it alone until the unclaimed timeout
    kit.run(seconds=60)
    assert kit.broker.uow_ids() == [uow.id]


def test_running_unit_of_work_is_never_reposted(kit):
    # given a claimed unit of work whose worker keeps beating
    hourly(kit, start_timeperiod="2026010512")
    kit.run()
    (uow,) = kit.uows("site_hourly")
    change_uow(
        kit.store,
        uow,
        "claim",
        clock=kit.clock,
        actor="worker",
        changes={"worker_id": "w1", "heartbeat_at": kit.clock.now()},
    )
    # when an hour passes with heartbeats
    for _ in range(12):
        kit.clock.advance(300)
        kit.store.update_uow(
            uow.id, expected_state=UowState.IN_PROGRESS, changes={"heartbeat_at": kit.clock.now()}
        )
        kit.run()
    # then it was never re-posted nor failed
    assert kit.store.get_uow(uow.id).state is UowState.IN_PROGRESS
    assert kit.broker.uow_ids() == [uow.id]


def test_scheduler_restart_mid_run_loses_nothing_and_duplicates_nothing(kit):
    # given a scheduler that started some work
    hourly(kit, max_active=2)
    kit.run()
    before = {u.id for u in kit.uows("site_hourly")}
    # when it restarts (all memory lost) and runs again
    kit.restart()
    kit.run()
    # then no unit of work was created twice
    assert {u.id for u in kit.uows("site_hourly")} == before
    kit.work_all("site_hourly")
    kit.run()
    assert list(kit.states("site_hourly").values()).count("processed") == 2


def test_disabled_process_does_nothing(kit):
    hourly(kit, enabled=False)
    report = kit.run()
    assert report.started == 0 and kit.states("site_hourly") == {}


# -- a start interrupted between its writes -------------------------------------------------------


def _on_mongo(kit) -> Kit:
    """The kit's clock and config over a MongoDB store (mongomock)."""
    import mongomock

    from db.backends.mongo import MongoStore

    store = MongoStore(client=mongomock.MongoClient(tz_aware=True), database="sched")
    store.init_schema()
    return Kit(store, kit.clock, RecordingBroker(), kit.config)


@pytest.fixture(params=["sqlite", "mongomock"])
def any_kit(request, kit):
    """The kit on SQLite (one transaction per start) and on MongoDB (two writes per start)."""
    return kit if request.param == "sqlite" else _on_mongo(kit)


class Killed(BaseException):
    """The scheduler dies here (not an error it could catch)."""


def _killed_at_the_job_write(store, monkeypatch) -> None:
    """The next job compare-and-set of a start dies as the process would under SIGKILL: on SQL
    inside the transaction (nothing is committed), on MongoDB after the unit of work's write."""
    if hasattr(store, "_cas"):
        # one start (_cas) or a pass's starts together (_cas_many)
        for name in ("_cas", "_cas_many"):
            real = getattr(store, name)

            def cas(conn, table, *args, real=real, **kwargs):
                if table.name == "jobs":
                    raise Killed
                return real(conn, table, *args, **kwargs)

            monkeypatch.setattr(store, name, cas)
    else:
        real_change = store._change

        def change(collection, **kwargs):
            if collection.name == "jobs":
                raise Killed
            return real_change(collection, **kwargs)

        monkeypatch.setattr(store, "_change", change)


def test_a_scheduler_killed_while_starting_a_job_loses_nothing_and_cancels_nothing(
    any_kit, monkeypatch
):
    kit = any_kit
    # given a scheduler killed in the middle of starting a closed period
    hourly(kit, start_timeperiod="2026010512")
    _killed_at_the_job_write(kit.store, monkeypatch)
    with pytest.raises(Killed):
        kit.run()
    monkeypatch.undo()
    assert kit.states("site_hourly")["2026010512"] == "embryo"
    kit.broker.published.clear()
    # when a new scheduler starts, and a recovery interval passes
    kit.restart()
    kit.run()
    kit.run(seconds=kit.config.recovery_interval.total_seconds())
    # then the period is started once, with one unit of work that was never canceled
    (uow,) = kit.uows("site_hourly")
    job = kit.job("site_hourly", "2026010512")
    assert (job.state.value, job.uow_id) == ("in_progress", uow.id)
    assert uow.state is UowState.REQUESTED
    assert "cancel" not in [e.trigger for e in kit.store.history("uow", uow.id)]
    assert set(kit.broker.uow_ids()) == {uow.id}
    # and it runs to processed
    kit.work(uow.id)
    kit.run()
    assert kit.states("site_hourly")["2026010512"] == "processed"


def test_a_run_an_interrupted_start_left_that_a_worker_finished_is_the_jobs_run(kit, monkeypatch):
    kit = _on_mongo(kit)
    # given a start killed between its writes on MongoDB, whose unit of work a worker then ran
    # (the restarted scheduler re-posts what is requested before it looks at the jobs)
    hourly(kit, start_timeperiod="2026010512")
    _killed_at_the_job_write(kit.store, monkeypatch)
    with pytest.raises(Killed):
        kit.run()
    monkeypatch.undo()
    (left,) = kit.uows("site_hourly")
    kit.work(left.id)
    # when the scheduler starts again
    kit.restart()
    kit.run()
    kit.run()
    # then the job is linked to that run and processed: nothing ran twice
    assert kit.states("site_hourly")["2026010512"] == "processed"
    assert [u.id for u in kit.uows("site_hourly")] == [left.id]
    assert kit.job("site_hourly", "2026010512").uow_id == left.id
