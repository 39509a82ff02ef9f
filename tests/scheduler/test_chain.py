"""A catch-up's next period started by the outcome that ends the previous one (db.chain): the
worker's commit moves the jobs exactly as the scheduler's look would, only where that look
needs nothing but the process's own window, and never at the cost of the outcome."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from db import open_store
from db.chain import Lookahead
from db.clock import FakeClock
from db.state_change import UowChange, change_job, change_uow, change_uows
from scheduler.config import SchedulerConfig
from tests.scheduler.conftest import Kit, RecordingBroker
from tests.scheduler.test_managed import hourly

NAME = "site_hourly"


def finish(kit: Kit, uow_id: str, outcome: str = "succeed", *, store=None, lookahead=None) -> tuple:
    """Play a worker that chains: claim, then store ``outcome`` through the funnel with the
    process entries at hand (and what ``lookahead`` knows from earlier outcomes); returns (the
    unit of work as stored, what it announced)."""
    store = store or kit.store
    lookahead = lookahead or Lookahead(lambda name: kit.store.get_process(name).entry)
    claimed = change_uow(
        kit.store,
        kit.store.get_uow(uow_id),
        "claim",
        clock=kit.clock,
        actor="worker w1",
        changes={"worker_id": "w1", "started_at": kit.clock.now()},
    )
    announced: list = []
    (done,) = change_uows(
        store,
        [UowChange(uow=claimed, trigger=outcome, changes={"finished_at": kit.clock.now()})],
        clock=kit.clock,
        actor="worker w1",
        announce=announced.extend,
        lookahead=lookahead,
    )
    kit.scheduler.wake(NAME)  # as the status message would
    return done, announced


def by_hand(kit: Kit, entry, timeperiod: str, trigger: str, **fields) -> None:
    """An operator's move of the process's job at ``timeperiod``."""
    change_job(
        kit.store,
        kit.job(NAME, timeperiod),
        trigger,
        state_machine=entry.state_machine,
        clock=kit.clock,
        actor="operator",
        reason="by hand",
        **fields,
    )


def running(kit: Kit) -> str:
    """The id of the one unit of work of the process that waits for a worker."""
    (uow,) = kit.uows(NAME, "requested")
    return uow.id


def test_a_finished_period_starts_the_next_in_the_same_commit(kit):
    # given three closed hours (10, 11, 12; now 13:00) and the first one started by a pass
    hourly(kit)
    kit.run()
    # when its unit of work is processed
    done, announced = finish(kit, running(kit))
    # then without a pass the hour is processed and the next one runs, announced by the worker
    assert done.state == "processed"
    states = kit.states(NAME)
    assert (states["2026010510"], states["2026010511"]) == ("processed", "in_progress")
    assert [u.id for u in announced] == [running(kit)]
    (uow,) = announced
    assert (uow.start_timeperiod, uow.end_timeperiod) == ("2026010511", "2026010512")
    # and 12 follows 11, but the open hour 13 is not started: 12 waits for the scheduler
    finish(kit, running(kit))
    _, last = finish(kit, running(kit))
    assert last == []
    assert kit.states(NAME) == {
        "2026010510": "processed",
        "2026010511": "processed",
        "2026010512": "in_progress",
        "2026010513": "embryo",
    }
    assert kit.uows(NAME, "requested") == []
    kit.run()
    assert kit.states(NAME)["2026010512"] == "processed"


def test_the_chained_history_reads_as_the_scheduler_writes_it(kit, tmp_path):
    # given the same process in two installations: one chains, one is moved by passes
    other_store = open_store(f"sqlite:///{tmp_path / 'passes.db'}")
    other_store.init_schema()
    other = Kit(other_store, FakeClock(kit.clock.now()), RecordingBroker(), SchedulerConfig())
    try:
        for each in (kit, other):
            hourly(each)
            each.run()
        # when hour 10 ends in each
        finish(kit, running(kit))
        other.work(running(other))
        other.run()
        # then both hours have the same history but for who wrote it
        for timeperiod in ("2026010510", "2026010511"):
            key = f"{NAME}/{timeperiod}"
            chained = [
                (e.trigger, e.from_state, e.to_state, e.reason.split(" ")[0])
                for e in kit.store.history("job", key)
            ]
            passed = [
                (e.trigger, e.from_state, e.to_state, e.reason.split(" ")[0])
                for e in other.store.history("job", key)
            ]
            assert chained == passed
        assert kit.store.history("job", f"{NAME}/2026010511")[-1].actor == "worker w1"
        assert kit.states(NAME) == other.states(NAME)
    finally:
        other_store.close()


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"max_active": 2}, id="max_active 2"),
        pytest.param({"depends_on": ["upstream"]}, id="a dependency"),
        pytest.param({"enabled": False}, id="disabled"),
    ],
)
def test_processes_whose_next_move_needs_more_than_their_window_are_left_to_the_scheduler(
    kit, fields
):
    # given a process that does not qualify, with a closed hour running
    if "depends_on" in fields:
        hourly(kit, name="upstream")
    disabled = fields.pop("enabled", True) is False
    hourly(kit, **fields)
    kit.run()
    uows = kit.uows(NAME, "requested")
    assert uows
    if disabled:  # disabled while its hour runs
        record = kit.store.get_process(NAME)
        kit.store.update_process(
            replace(record, entry=replace(record.entry, enabled=False)),
            expected_version=record.version,
        )
    before = kit.states(NAME)
    for uow in uows:
        # when its unit of work is processed
        done, announced = finish(kit, uow.id)
        # then only the outcome is stored: no job moved, nothing announced
        assert done.state == "processed" and announced == []
    assert kit.states(NAME) == before


def test_a_failed_unit_of_work_moves_nothing(kit):
    hourly(kit)
    kit.run()
    done, announced = finish(kit, running(kit), "fail")
    assert done.state == "invalid" and announced == []
    assert kit.states(NAME)["2026010510"] == "in_progress"
    assert kit.states(NAME)["2026010511"] == "embryo"


class MovingStore:
    """The store, with another actor's change made just before the outcome's write."""

    def __init__(self, store, meanwhile) -> None:
        self._store = store
        self._meanwhile = meanwhile

    def __getattr__(self, name):
        return getattr(self._store, name)

    def transition_uows(self, steps):
        self._meanwhile()
        return self._store.transition_uows(steps)


def test_a_next_period_moved_meanwhile_leaves_the_chain_out_and_keeps_the_outcome(kit):
    # given hour 10 running, and hour 11 skipped by someone else between the worker's read
    # of the window and its write
    entry = hourly(kit).entry
    kit.run()
    uow_id = running(kit)

    def skip_11() -> None:
        by_hand(kit, entry, "2026010511", "skip")

    # when the outcome is written
    done, announced = finish(kit, uow_id, store=MovingStore(kit.store, skip_11))
    # then the outcome stands alone: hour 10 still waits for the scheduler, nothing started
    assert done.state == "processed" and announced == []
    assert kit.states(NAME)["2026010510"] == "in_progress"
    assert kit.states(NAME)["2026010511"] == "skipped"
    assert [u.start_timeperiod for u in kit.uows(NAME)] == ["2026010510"]
    # and the scheduler's next look finishes hour 10 and starts hour 12
    kit.run()
    assert kit.states(NAME)["2026010510"] == "processed"
    assert kit.states(NAME)["2026010512"] == "in_progress"


def test_the_chain_starts_nothing_before_its_period_and_lag_are_over(kit):
    # given a discrete process with a 10 minute lag: hour 12 closes at 13:10 (now 13:00)
    hourly(kit, start_timeperiod="2026010511", lag=600)
    kit.run()
    _, announced = finish(kit, running(kit))
    assert announced == []
    assert kit.states(NAME)["2026010512"] == "embryo"
    # when the lag has passed, the scheduler's pass (not the chain) starts it
    kit.clock.advance(timedelta(minutes=10).total_seconds())
    kit.run()
    assert kit.states(NAME)["2026010512"] == "in_progress"


@pytest.mark.parametrize("machine", ["continuous", "recomputing"])
def test_final_runs_of_continuous_processes_chain_too(kit, machine):
    hourly(kit, state_machine=machine)
    kit.run()
    assert kit.states(NAME)["2026010510"] == "final_run"
    _, announced = finish(kit, running(kit))
    assert [u.start_timeperiod for u in announced] == ["2026010511"]
    states = kit.states(NAME)
    assert (states["2026010510"], states["2026010511"]) == ("processed", "final_run")


def test_no_chain_on_mongodb_like_stores_without_transactions(kit):
    hourly(kit)
    kit.run()

    class Separate(MovingStore):
        atomic_groups = False

    _, announced = finish(kit, running(kit), store=Separate(kit.store, lambda: None))
    assert announced == []
    assert kit.states(NAME)["2026010511"] == "embryo"


class CountingStore(MovingStore):
    """The store, counting the window reads."""

    def __init__(self, store) -> None:
        super().__init__(store, lambda: None)
        self.window_reads = 0

    def job_windows(self, limits, states):
        self.window_reads += 1
        return self._store.job_windows(limits, states)


def test_a_worker_reads_its_window_once_and_predicts_the_next_periods(kit):
    # given a backlog of closed hours (10 to 15 at 16:00) and one worker's lookahead
    hourly(kit)
    kit.clock.advance(timedelta(hours=3).total_seconds())
    kit.run()
    lookahead = Lookahead(lambda name: kit.store.get_process(name).entry)
    counting = CountingStore(kit.store)
    # when five outcomes come one after the other
    for _ in range(5):
        finish(kit, running(kit), store=counting, lookahead=lookahead)
    # then every one chained the next hour, with one read of the window in all
    states = kit.states(NAME)
    assert [states[f"20260105{h}"] for h in range(10, 15)] == ["processed"] * 5
    assert states["2026010515"] == "in_progress"
    assert counting.window_reads == 1


def test_a_period_reprocessed_meanwhile_refuses_the_predicted_chain(kit):
    # given hour 10 chained to 11 by a worker that now predicts 12
    entry = hourly(kit).entry
    kit.run()
    lookahead = Lookahead(lambda name: kit.store.get_process(name).entry)
    finish(kit, running(kit), lookahead=lookahead)
    # when an operator reprocesses hour 10 while 11 runs
    by_hand(kit, entry, "2026010510", "reprocess", changes={"run": 1, "uow_id": None})
    done, announced = finish(kit, running(kit), lookahead=lookahead)
    # then the store refuses the prediction (an older period is active again): the outcome
    # stands alone, hour 12 is not started
    assert done.state == "processed" and announced == []
    states = kit.states(NAME)
    assert (states["2026010510"], states["2026010511"]) == ("embryo", "in_progress")
    assert states["2026010512"] == "embryo"
    # and the scheduler's next look finishes 11 and runs 10 again before 12 (time order)
    kit.run()
    states = kit.states(NAME)
    assert (states["2026010510"], states["2026010511"]) == ("in_progress", "processed")
    assert states["2026010512"] == "embryo"
