"""Trees, dependencies, continuous and recomputing machines, and the reprocess/skip cascades."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from db import cascade
from db.cascade import reprocess, skip
from db.errors import TransitionRefused
from db.relations import Registry
from db.states import UowState


def site_tree(kit, *, daily_blocking="children", start_hour="2026010400"):
    """hourly -> daily tree over 4 Jan; now is 5 Jan 13:00."""
    kit.register(
        name="site_hourly",
        kind="managed",
        time_qualifier="hourly",
        tree="site",
        command=["true"],
        start_timeperiod=start_hour,
        max_active=24,
        lag=0,
    )
    kit.register(
        name="site_daily",
        kind="managed",
        time_qualifier="daily",
        tree="site",
        command=["true"],
        start_timeperiod="2026010400",
        blocking=daily_blocking,
        lag=0,
    )


def finish_hours(kit, outcome="succeed", day="20260104"):
    for uow in kit.uows("site_hourly", "requested"):
        if uow.timeperiod.startswith(day):
            kit.work(uow.id, outcome)


def test_tree_daily_waits_for_its_24_hourly_children(kit):
    # given
    site_tree(kit)
    kit.run()
    assert kit.states("site_daily")["2026010400"] == "embryo"
    # when 23 of the 24 hours finish
    uows = [u for u in kit.uows("site_hourly", "requested") if u.timeperiod.startswith("20260104")]
    for uow in uows[:-1]:
        kit.work(uow.id)
    kit.run()
    # then the day still waits
    assert kit.states("site_daily")["2026010400"] == "embryo"
    # when the last hour finishes
    kit.work(uows[-1].id)
    kit.run()
    # then the daily job runs at once (woken by its children, no tick waited)
    assert kit.states("site_daily")["2026010400"] == "in_progress"


def test_tree_normal_blocking_runs_but_finalizes_after_children(kit):
    # given a daily process with normal blocking (processing may run, finalization waits)
    site_tree(kit, daily_blocking="normal")
    kit.run()
    (day_uow,) = kit.uows("site_daily")
    # when the daily unit of work succeeds before the hours are done
    kit.work(day_uow.id)
    kit.run()
    # then the job stays in progress: processed only once the children are finished
    assert kit.states("site_daily")["2026010400"] == "in_progress"
    finish_hours(kit)
    kit.run()
    assert kit.states("site_daily")["2026010400"] == "processed"
    assert len(kit.uows("site_daily")) == 1  # no rerun while waiting (Synergy's bug)


def test_dependent_process_skipped_when_its_dependency_is_skipped(kit):
    # given site_daily and client_daily depending on it with blocking dependencies
    kit.register(
        name="site_daily",
        kind="managed",
        time_qualifier="daily",
        command=["true"],
        start_timeperiod="2026010400",
        retries=0,
        lag=0,
    )
    kit.register(
        name="client_daily",
        kind="managed",
        time_qualifier="daily",
        command=["true"],
        depends_on=["site_daily"],
        blocking="dependencies",
        start_timeperiod="2026010400",
        lag=0,
    )
    kit.run()
    assert kit.states("client_daily")["2026010400"] == "embryo"
    # when the dependency fails for good
    (uow,) = kit.uows("site_daily")
    kit.work(uow.id, "fail")
    kit.run(seconds=61)
    kit.run()
    # then it is skipped, and so is the dependent
    assert kit.states("site_daily")["2026010400"] == "skipped"
    assert kit.states("client_daily")["2026010400"] == "skipped"
    assert kit.uows("client_daily") == []


def test_dependent_runs_after_dependency_processed(kit):
    kit.register(
        name="site_daily",
        kind="managed",
        time_qualifier="daily",
        command=["true"],
        start_timeperiod="2026010400",
        lag=0,
    )
    kit.register(
        name="client_daily",
        kind="managed",
        time_qualifier="daily",
        command=["true"],
        depends_on=["site_daily"],
        blocking="dependencies",
        start_timeperiod="2026010400",
        lag=0,
    )
    kit.run()
    (uow,) = kit.uows("site_daily")
    kit.work(uow.id)
    kit.run()
    assert kit.states("client_daily")["2026010400"] == "in_progress"


def test_continuous_runs_while_open_then_one_final_run(kit):
    # given a continuous hourly process for the current hour 13:00-14:00
    kit.register(
        name="live_hourly",
        kind="managed",
        time_qualifier="hourly",
        command=["true"],
        state_machine="continuous",
        start_timeperiod="2026010513",
        trigger="every 600",
    )
    kit.run()
    assert kit.states("live_hourly")["2026010513"] == "in_progress"
    # when units of work finish while the period is open, each scheduled look runs another
    kit.work_all("live_hourly")
    kit.run(seconds=600)
    kit.work_all("live_hourly")
    kit.run(seconds=600)
    assert kit.states("live_hourly")["2026010513"] == "in_progress"
    assert len(kit.uows("live_hourly")) == 3
    # when the period closes and the last open run finishes
    kit.work_all("live_hourly")
    kit.clock.set(datetime(2026, 1, 5, 14, 0, 1, tzinfo=UTC))
    kit.run()
    # then one final run is in flight, then processed
    assert kit.states("live_hourly")["2026010513"] == "final_run"
    kit.work_all("live_hourly")
    kit.run()
    assert kit.states("live_hourly")["2026010513"] == "processed"
    assert len([u for u in kit.uows("live_hourly") if u.timeperiod == "2026010513"]) == 4


def test_recomputing_widens_an_unclaimed_unit_of_work_in_place(kit):
    # given a recomputing daily process for today (now 13:00): its unit of work covers to 14:00
    kit.register(
        name="totals_daily",
        kind="managed",
        time_qualifier="daily",
        command=["true"],
        state_machine="recomputing",
        start_timeperiod="2026010500",
        trigger="every 3600",
    )
    kit.run()
    (uow,) = kit.uows("totals_daily")
    assert uow.end_timeperiod == "2026010514"
    # when two hours pass and nobody picked it up
    kit.run(seconds=7200)
    # then the same unit of work was widened instead of queueing another
    (widened,) = kit.uows("totals_daily")
    assert widened.id == uow.id and widened.end_timeperiod == "2026010516"
    assert widened.state is UowState.REQUESTED
    assert "widen" in [e.trigger for e in kit.store.history("job", "totals_daily/2026010500")]


# -- cascades: a tree (hourly -> daily) with a dependent tree (client_daily) ---------------------


@pytest.fixture
def processed_world(kit):
    site_tree(kit, start_hour="2026010400")
    kit.register(
        name="client_daily",
        kind="managed",
        time_qualifier="daily",
        command=["true"],
        depends_on=["site_daily"],
        blocking="dependencies",
        start_timeperiod="2026010400",
        lag=0,
    )
    for _ in range(6):
        kit.run()
        for process in ("site_hourly", "site_daily", "client_daily"):
            kit.work_all(process)
    kit.run()
    assert kit.states("site_daily")["2026010400"] == "processed"
    assert kit.states("client_daily")["2026010400"] == "processed"
    return kit


def registry(kit):
    return Registry.from_entries(r.entry for r in kit.store.list_processes())


def test_reprocess_cascades_up_the_tree_and_across_to_dependents(processed_world):
    kit = processed_world
    # when one hour of 4 Jan is reprocessed
    changed = reprocess(
        kit.store, registry(kit), "site_hourly", "2026010405", clock=kit.clock, actor="user alice"
    )
    # then that hour, its day and the dependent client day restart; the other hours do not
    assert [(j.process, j.timeperiod, j.state.value) for j in changed] == [
        ("site_hourly", "2026010405", "embryo"),
        ("site_daily", "2026010400", "embryo"),
        ("client_daily", "2026010400", "embryo"),
    ]
    assert kit.states("site_hourly")["2026010404"] == "processed"
    assert kit.job("site_daily", "2026010400").run == 1
    # and, once the scheduler is told (as the action's notification does), they run to green
    kit.scheduler.wake(*{j.process for j in changed})
    for _ in range(4):
        kit.run()
        for process in ("site_hourly", "site_daily", "client_daily"):
            kit.work_all(process)
    kit.run()
    assert kit.states("client_daily")["2026010400"] == "processed"
    assert len(kit.uows("site_daily")) == 2  # a fresh unit of work for the new run


def test_skip_cascades_down_and_across(kit):
    # given a day whose hours are still running
    site_tree(kit)
    kit.register(
        name="client_daily",
        kind="managed",
        time_qualifier="daily",
        command=["true"],
        depends_on=["site_daily"],
        blocking="dependencies",
        start_timeperiod="2026010400",
        lag=0,
    )
    kit.run()
    # when the day is skipped
    changed = skip(
        kit.store, registry(kit), "site_daily", "2026010400", clock=kit.clock, actor="bob"
    )
    # then its 24 hours, itself and the dependent day are skipped; running hour UOWs canceled
    processes = [j.process for j in changed]
    assert processes.count("site_hourly") == 24
    assert {j.state.value for j in changed} == {"skipped"}
    assert ("client_daily", "2026010400") in {(j.process, j.timeperiod) for j in changed}
    assert all(
        u.state is UowState.CANCELED
        for u in kit.uows("site_hourly")
        if u.timeperiod.startswith("20260104")
    )
    # and the next day is untouched
    assert kit.states("site_hourly")["2026010500"] != "skipped"


def test_refused_actions_change_nothing(processed_world):
    kit = processed_world
    with pytest.raises(TransitionRefused):
        skip(kit.store, registry(kit), "site_daily", "2026010400", clock=kit.clock, actor="bob")
    with pytest.raises(TransitionRefused):
        reprocess(kit.store, registry(kit), "site_hourly", "2026010513", clock=kit.clock, actor="b")
    assert kit.states("site_daily")["2026010400"] == "processed"


def test_reprocess_cancels_a_run_the_scheduler_started_under_it(kit, monkeypatch):
    # given a continuous hourly job whose open period ran once (now 13:00)
    kit.register(
        name="live_hourly",
        kind="managed",
        time_qualifier="hourly",
        command=["true"],
        state_machine="continuous",
        start_timeperiod="2026010513",
        trigger="every 600",
    )
    kit.run()
    kit.work_all("live_hourly")
    real_cancel = cascade.cancel_active_uow
    raced = []

    def cancel_while_the_scheduler_runs_it_again(store, job, **kwargs):
        real_cancel(store, job, **kwargs)
        if not raced:  # the scheduler's next run starts between the action's read and write
            raced.append(kit.run(seconds=600))

    monkeypatch.setattr(cascade, "cancel_active_uow", cancel_while_the_scheduler_runs_it_again)
    # when the job is reprocessed
    reprocess(kit.store, registry(kit), "live_hourly", "2026010513", clock=kit.clock, actor="a")
    # then the run started meanwhile was canceled with the job's restart: none is left running
    assert raced[0].started == 1
    assert kit.states("live_hourly")["2026010513"] == "embryo"
    assert kit.uows("live_hourly", "requested") == []
    assert len(kit.uows("live_hourly", "canceled")) == 1
