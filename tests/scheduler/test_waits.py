"""What managed jobs wait for, and that they say so: related periods that can never exist do not
block; ``max_active`` counts units of work in flight, closed periods first; a job that waits on
its relations has a ``wait`` event in its history. The clock is injected (now 5 Jan 13:00)."""

from __future__ import annotations

from datetime import UTC, datetime

from db.cascade import reprocess
from db.relations import Registry


def register(kit, name, qualifier, start, **fields):
    return kit.register(
        name=name,
        kind="managed",
        time_qualifier=qualifier,
        command=["true"],
        start_timeperiod=start,
        lag=fields.pop("lag", 0),
        **fields,
    )


def history(kit, process, timeperiod):
    return kit.store.history("job", f"{process}/{timeperiod}")


def waits(kit, process, timeperiod):
    return [e.reason for e in history(kit, process, timeperiod) if e.trigger == "wait"]


def run_until_quiet(kit, *processes, passes=10):
    """Passes with every requested unit of work of ``processes`` succeeding, until none is left."""
    for _ in range(passes):
        kit.run()
        if not [uow for p in processes for uow in kit.work_all(p)]:
            return


# -- related periods that can never exist ----------------------------------------------------------


def test_a_parent_period_before_its_childrens_first_period_does_not_wait_for_them(kit):
    # given a daily process from 1 Jan whose hourly children only start at 5 Jan 10:00
    register(kit, "site_hourly", "hourly", "2026010510", tree="site", max_active=24)
    register(kit, "site_daily", "daily", "2026010100", tree="site")
    # when the days of 1-4 Jan run (one at a time: max_active 1)
    run_until_quiet(kit, "site_daily")
    # then each is processed: none waits for hours that will never exist
    states = kit.states("site_daily")
    assert [states[f"202601{d:02d}00"] for d in range(1, 5)] == ["processed"] * 4
    (complete,) = [e for e in history(kit, "site_daily", "2026010100") if e.trigger == "complete"]
    assert "children site_hourly: 24 period(s) before 2026010510" in complete.reason
    assert complete.details["not_waited_for"] == complete.reason.split("; ", 1)[1]
    assert waits(kit, "site_daily", "2026010100") == []


def test_a_day_partly_before_its_childrens_first_period_waits_only_for_the_hours_that_exist(kit):
    # given the same tree, the day of 5 Jan closed (now 6 Jan 00:30) with its hours from 10:00
    register(kit, "site_hourly", "hourly", "2026010510", tree="site", max_active=24)
    register(kit, "site_daily", "daily", "2026010500", tree="site", blocking="children")
    kit.clock.set(datetime(2026, 1, 6, 0, 30, tzinfo=UTC))
    kit.run()
    # then the day waits for its 14 hours, and says so once
    assert kit.states("site_daily")["2026010500"] == "embryo"
    kit.run()
    assert waits(kit, "site_daily", "2026010500") == ["waiting for children site_hourly to finish"]
    (wait,) = [e for e in history(kit, "site_daily", "2026010500") if e.trigger == "wait"]
    counts = wait.details["waiting_for"]["children site_hourly"]
    assert counts["unfinished"] + counts["not_created_yet"] == 14
    # when the 14 hours are processed
    kit.work_all("site_hourly")
    kit.run()
    # then the day starts, noting the ten hours that never exist
    assert kit.states("site_daily")["2026010500"] == "in_progress"
    start = history(kit, "site_daily", "2026010500")[-1]
    assert start.trigger == "start"
    assert "10 period(s) before 2026010510, its first, never exist" in start.reason


def test_a_dependency_that_starts_later_is_not_waited_for_before_its_first_period(kit):
    # given client_daily from 3 Jan depending (blocking) on site_daily, which starts on 4 Jan
    register(kit, "site_daily", "daily", "2026010400")
    register(
        kit,
        "client_daily",
        "daily",
        "2026010300",
        depends_on=["site_daily"],
        blocking="dependencies",
    )
    # when a pass runs
    kit.run()
    # then 3 Jan runs at once, and 4 Jan waits for its counterpart (and says so)
    states = kit.states("client_daily")
    assert states["2026010300"] == "in_progress"
    run_until_quiet(kit, "client_daily")
    assert kit.states("client_daily")["2026010400"] == "embryo"
    assert waits(kit, "client_daily", "2026010400") == [
        "waiting for dependency site_daily to finish"
    ]


def test_a_child_process_without_start_timeperiod_begins_where_its_ledger_began(kit):
    # given hourly children registered without start_timeperiod (their first period is the one
    # containing the instant the ledger first ran: 5 Jan 13:00) under a daily process from 4 Jan
    register(kit, "site_hourly", "hourly", None, tree="site", max_active=24)
    register(kit, "site_daily", "daily", "2026010400", tree="site")
    # when 4 Jan runs
    run_until_quiet(kit, "site_daily", "site_hourly")
    # then it did not wait for hours before 5 Jan 13:00
    assert kit.states("site_daily")["2026010400"] == "processed"
    assert min(kit.states("site_hourly")) == "2026010513"


# -- max_active counts units of work in flight --------------------------------------------------


def test_a_job_waiting_to_finalize_holds_no_slot(kit):
    # given a daily process (max_active 1) whose days wait for their hours to finalize
    register(kit, "site_hourly", "hourly", "2026010300", tree="site", enabled=False)
    register(kit, "site_daily", "daily", "2026010300", tree="site")
    # when the daily runs succeed while no hour runs (the hourly process is disabled)
    run_until_quiet(kit, "site_daily")
    # then both closed days ran their unit of work, one after the other, and wait to finalize
    assert kit.states("site_daily") == {
        "2026010300": "in_progress",
        "2026010400": "in_progress",
        "2026010500": "embryo",
    }
    assert len(kit.uows("site_daily", "processed")) == 2
    # and each says why, naming the disabled children
    assert waits(kit, "site_daily", "2026010300") == [
        "waiting for children site_hourly (disabled) to finish"
    ]


def test_a_reprocessed_past_period_is_not_held_by_the_open_period(kit):
    # given a continuous daily process (max_active 1) whose past day is processed and whose
    # open day (5 Jan) has run once and waits for its next scheduled run
    register(
        kit, "totals_daily", "daily", "2026010400", state_machine="continuous", trigger="every 600"
    )
    run_until_quiet(kit, "totals_daily")
    assert kit.states("totals_daily") == {"2026010400": "processed", "2026010500": "in_progress"}
    # when the past day is reprocessed
    registry = Registry.from_entries(r.entry for r in kit.store.list_processes())
    reprocess(kit.store, registry, "totals_daily", "2026010400", clock=kit.clock, actor="alice")
    kit.scheduler.wake("totals_daily")
    kit.run()
    # then it starts at once (not at midnight, when the open day closes)
    assert kit.states("totals_daily")["2026010400"] == "final_run"
    # and the open day's next scheduled run waits for the slot, then gets it
    kit.run(seconds=600)
    (open_run,) = kit.uows("totals_daily", "requested")
    assert open_run.timeperiod == "2026010400"
    kit.work(open_run.id)
    kit.run(seconds=600)
    assert kit.states("totals_daily")["2026010400"] == "processed"
    (open_run,) = kit.uows("totals_daily", "requested")
    assert open_run.timeperiod == "2026010500"


def test_closed_periods_take_the_free_slots_before_the_open_one(kit):
    # given a continuous hourly process (max_active 1) from 11:00, now 13:00: two closed hours
    # and the open one
    register(
        kit, "live_hourly", "hourly", "2026010511", state_machine="continuous", trigger="every 60"
    )
    # when passes run with every unit of work succeeding
    started = []
    for _ in range(6):
        kit.run(seconds=1)
        started.extend(uow.timeperiod for uow in kit.work_all("live_hourly"))
    # then the closed hours ran (their final runs) before the open hour's first run
    assert started[:2] == ["2026010511", "2026010512"]
    assert kit.states("live_hourly") == {
        "2026010511": "processed",
        "2026010512": "processed",
        "2026010513": "in_progress",
    }


# -- waits say why, once ------------------------------------------------------------------------


def test_a_wait_is_written_once_and_not_again_after_a_restart(kit):
    # given a daily process (blocking children) whose closed day waits for its hours
    register(kit, "site_hourly", "hourly", "2026010400", tree="site", enabled=False)
    register(kit, "site_daily", "daily", "2026010400", tree="site", blocking="children")
    # when several passes run, and the scheduler restarts
    for _ in range(3):
        kit.run(seconds=60)
    kit.restart()
    kit.run(seconds=60)
    # then the wait is in the history once
    assert waits(kit, "site_daily", "2026010400") == [
        "waiting for children site_hourly (disabled) to finish"
    ]
