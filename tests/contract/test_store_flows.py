"""The store contract, flows (SPEC section 10): the steps of a flow run move through the funnel
on every backend; on SQL a step's end and what it releases are one transaction."""

from __future__ import annotations

from dataclasses import replace

import pytest

from db import flows
from db.clock import FakeClock
from db.errors import StateConflict, TransitionRefused
from db.models import ProcessEntry, StepEntry, UowQuery
from db.state_change import UowChange, change_uow, change_uows
from db.states import ProcessKind, RunIf, UowKind, UowState
from db.uow_factory import create_once
from tests.contract.store_helpers import T0

ACTOR = "test"


def _entry(*steps: StepEntry, retries: int = 0) -> ProcessEntry:
    return ProcessEntry(
        name="etl", kind=ProcessKind.FREERUN, trigger="every 60", retries=retries, steps=steps
    )


def _step(name: str, *ups: str, run_if: RunIf = RunIf.ALL_SUCCEEDED, **kw) -> StepEntry:
    return StepEntry(name=name, command=("true",), depends_on=tuple(ups), run_if=run_if, **kw)


DIAMOND = (
    _step("extract"),
    _step("t1", "extract"),
    _step("t2", "extract"),
    _step("t3", "extract"),
    _step("load", "t1", "t2", "t3"),
    _step("cleanup", "load", run_if=RunIf.ALL_DONE),
)


class Flow:
    """A flow run of ``entry`` in ``store``, driven as workers would drive it."""

    def __init__(self, store, entry: ProcessEntry) -> None:
        self.store = store
        self.entry = entry
        self.clock = FakeClock(T0)
        self.announced: list = []
        run, _ = create_once(
            store,
            entry,
            clock=self.clock,
            actor=ACTOR,
            reason="test",
            kind=UowKind.FREERUN,
            start="20261207030000",
            end="20261207030000",
            run_key="r1",
        )
        assert run.flow and run.state is UowState.REQUESTED
        self.run = flows.expand(
            store, run, entry, clock=self.clock, actor=ACTOR, announce=self.announced.extend
        )

    def states(self) -> dict[str, UowState]:
        return {name: uow.state for name, uow in flows.steps_of(self.store, self.run.id).items()}

    def get(self, name: str):
        return flows.steps_of(self.store, self.run.id)[name]

    def claim(self, name: str):
        (claimed,) = change_uows(
            self.store,
            [UowChange(uow=self.get(name), trigger="claim", changes={"worker_id": "w"})],
            clock=self.clock,
            actor=ACTOR,
        )
        assert not isinstance(claimed, Exception), claimed
        return claimed

    def end(self, name: str, trigger: str = "succeed", **changes):
        claimed = self.claim(name)
        (done,) = change_uows(
            self.store,
            [UowChange(uow=claimed, trigger=trigger, changes=changes or None)],
            clock=self.clock,
            actor=ACTOR,
            announce=self.announced.extend,
        )
        assert not isinstance(done, Exception), done
        return done

    def fail_for_good(self, name: str) -> None:
        failed = self.end(name, "fail")
        change_uow(self.store, failed, "give_up", clock=self.clock, actor=ACTOR, reason="test")

    def flow_run(self):
        return self.store.get_uow(self.run.id)


def test_expansion_creates_pending_steps_and_requests_the_roots(store):
    flow = Flow(store, _entry(*DIAMOND))
    assert flow.run.state is UowState.IN_PROGRESS and flow.run.worker_id is None
    assert flow.states() == {
        "extract": UowState.REQUESTED,
        "t1": UowState.PENDING,
        "t2": UowState.PENDING,
        "t3": UowState.PENDING,
        "load": UowState.PENDING,
        "cleanup": UowState.PENDING,
    }
    assert [u.step for u in flow.announced] == ["extract"]
    extract = flow.get("extract")
    assert (extract.parent, extract.step, extract.flow) == (flow.run.id, "extract", False)
    # a flow run counts once: its steps are not units of work of their own for max_active
    counts = store.count_uows("etl")
    assert sum(counts.values()) == 1
    runs = store.find_uows(UowQuery(process="etl", top_level=True)).items
    assert [u.id for u in runs] == [flow.run.id]
    flows_only = store.find_uows(UowQuery(process="etl", flow=True)).items
    assert [u.id for u in flows_only] == [flow.run.id]
    assert len(store.find_uows(UowQuery(parent=flow.run.id)).items) == 6


def test_a_second_expansion_is_refused_and_creates_nothing(store):
    flow = Flow(store, _entry(*DIAMOND))
    stale = replace(flow.run, state=UowState.REQUESTED, version=1)
    with pytest.raises((StateConflict, TransitionRefused)):
        flows.expand(store, stale, flow.entry, clock=flow.clock, actor=ACTOR)
    assert len(flow.states()) == 6


def test_a_step_end_requests_its_dependents_in_the_same_write(store):
    flow = Flow(store, _entry(*DIAMOND))
    flow.announced.clear()
    flow.end("extract")
    assert flow.states()["t1"] is UowState.REQUESTED
    assert {u.step for u in flow.announced} == {"t1", "t2", "t3"}
    flow.end("t1")
    flow.end("t2")
    assert flow.states()["load"] is UowState.PENDING
    flow.end("t3")
    assert flow.states()["load"] is UowState.REQUESTED
    flow.end("load")
    flow.end("cleanup")
    run = flow.flow_run()
    assert run.state is UowState.PROCESSED
    assert run in flow.announced or any(u.id == run.id for u in flow.announced)
    if store.atomic_groups:
        # the flow run's history tells each step's end (written with it)
        steps_ended = [e for e in store.history("uow", run.id) if e.trigger == "step_ended"]
        assert [e.details["step"] for e in steps_ended] == ["extract", "t1", "t2", "t3", "load"]


def test_results_reach_the_dependents_arguments(store):
    flow = Flow(store, _entry(_step("a"), _step("b", "a")))
    flow.end("a", result={"rows": 42})
    b = flow.get("b")
    assert b.state is UowState.REQUESTED
    assert b.arguments["upstream"] == {"a": {"rows": 42}}
    assert flow.get("a").result == {"rows": 42}


def test_a_failed_step_fails_its_dependents_and_all_done_still_runs(store):
    flow = Flow(store, _entry(*DIAMOND))
    flow.end("extract")
    flow.end("t1")
    flow.fail_for_good("t2")
    flow.end("t3")
    states = flow.states()
    assert states["t2"] is UowState.CANCELED
    assert states["load"] is UowState.UPSTREAM_FAILED
    assert states["cleanup"] is UowState.REQUESTED
    assert flow.flow_run().state is UowState.IN_PROGRESS
    flow.end("cleanup")
    assert flow.flow_run().state is UowState.CANCELED


def test_any_failed_step_is_noop_when_everything_succeeded(store):
    entry = _entry(_step("a"), _step("alert", "a", run_if=RunIf.ANY_FAILED))
    flow = Flow(store, entry)
    flow.end("a")
    assert flow.states()["alert"] is UowState.NOOP
    assert flow.flow_run().state is UowState.PROCESSED


def test_any_failed_step_runs_after_a_failure(store):
    entry = _entry(_step("a"), _step("alert", "a", run_if=RunIf.ANY_FAILED))
    flow = Flow(store, entry)
    flow.fail_for_good("a")
    assert flow.states()["alert"] is UowState.REQUESTED
    flow.end("alert")
    assert flow.flow_run().state is UowState.CANCELED


def test_a_plain_list_runs_in_order_and_stops_at_the_first_failure(store):
    entry = _entry(
        StepEntry(name="one", command=("true",)),
        StepEntry(name="two", command=("true",)),
        StepEntry(name="three", command=("true",)),
    )
    flow = Flow(store, entry)
    assert flow.states() == {
        "one": UowState.REQUESTED,
        "two": UowState.PENDING,
        "three": UowState.PENDING,
    }
    flow.fail_for_good("one")
    assert flow.states() == {
        "one": UowState.CANCELED,
        "two": UowState.UPSTREAM_FAILED,
        "three": UowState.UPSTREAM_FAILED,
    }
    assert flow.flow_run().state is UowState.CANCELED


def test_retry_failed_reruns_only_the_failed_branch(store):
    flow = Flow(store, _entry(*DIAMOND, retries=1))
    flow.end("extract", result={"n": 1})
    flow.end("t1")
    flow.fail_for_good("t2")
    flow.end("t3")
    flow.end("cleanup")
    assert flow.flow_run().state is UowState.CANCELED
    t2_before = flow.get("t2")
    run, rerun = flows.retry_failed(
        store,
        flow.flow_run(),
        flow.entry,
        clock=flow.clock,
        actor=ACTOR,
        announce=flow.announced.extend,
    )
    assert run.state is UowState.IN_PROGRESS
    assert sorted(rerun) == ["load", "t2"]
    states = flow.states()
    assert states["t2"] is UowState.REQUESTED  # its upstream (extract) processed long ago
    assert states["load"] is UowState.PENDING
    assert states["extract"] is UowState.PROCESSED and states["t1"] is UowState.PROCESSED
    t2 = flow.get("t2")
    assert t2.attempt == t2_before.attempt + 1
    assert t2.attempt <= t2.retries  # a fresh retry budget
    assert t2.arguments["upstream"] == {"extract": {"n": 1}}
    # cleanup ran (processed) and is kept; load runs once t2 is back
    flow.end("t2")
    assert flow.states()["load"] is UowState.REQUESTED
    flow.end("load")
    assert flow.flow_run().state is UowState.PROCESSED


def test_retry_failed_is_refused_for_a_flow_run_that_did_not_fail(store):
    flow = Flow(store, _entry(_step("a")))
    with pytest.raises(TransitionRefused):
        flows.retry_failed(store, flow.flow_run(), flow.entry, clock=flow.clock, actor=ACTOR)


def test_cancel_of_a_flow_run_cancels_every_step_not_ended(store):
    flow = Flow(store, _entry(*DIAMOND))
    flow.end("extract")
    flow.claim("t1")
    run = flows.cancel(store, flow.flow_run(), clock=flow.clock, actor=ACTOR, reason="by hand")
    assert run.state is UowState.CANCELED
    states = flow.states()
    assert states["extract"] is UowState.PROCESSED
    assert {states[n] for n in ("t1", "t2", "t3", "load", "cleanup")} == {UowState.CANCELED}


def test_two_parallel_steps_ending_at_once_release_the_join_exactly_once(store):
    entry = _entry(_step("a"), _step("b"), _step("join", "a", "b"))
    flow = Flow(store, entry)
    a = flow.claim("a")
    b = flow.claim("b")
    # both ends are planned before either is written: each sees the other still running
    done_a, _ = flows.group_for(store, _ending(a, flow), a, at=flow.clock.now(), actor=ACTOR)
    done_b, _ = flows.group_for(store, _ending(b, flow), b, at=flow.clock.now(), actor=ACTOR)
    (first,) = store.transition_uows([done_a])
    assert first.state is UowState.PROCESSED
    (second,) = store.transition_uows([done_b])
    if store.atomic_groups:
        # the flow run moved since b's plan: b's whole group is refused, b still in progress
        assert isinstance(second, StateConflict)
        assert flow.get("b").state is UowState.IN_PROGRESS
        # the funnel plans it again from what is stored
        (again,) = change_uows(
            store, [UowChange(uow=b, trigger="succeed")], clock=flow.clock, actor=ACTOR
        )
        assert again.state is UowState.PROCESSED
    else:
        flows.reconcile(store, flow.run.id, clock=flow.clock, actor=ACTOR)
    assert flow.states()["join"] is UowState.REQUESTED
    flow.end("join")
    assert flow.flow_run().state is UowState.PROCESSED


def test_reconcile_finishes_what_a_crash_between_writes_left(store):
    flow = Flow(store, _entry(_step("a"), _step("b", "a")))
    a = flow.claim("a")
    # the step's end written alone, as if the writer died before the flow's changes
    store.transition_uow(
        a.id,
        expected_state=UowState.IN_PROGRESS,
        new_state=UowState.PROCESSED,
        event=_ending(a, flow).event,
    )
    assert flow.states()["b"] is UowState.PENDING
    moved = flows.reconcile_open(store, clock=flow.clock, actor=ACTOR)
    assert moved == 1
    assert flow.states()["b"] is UowState.REQUESTED
    assert flows.reconcile_open(store, clock=flow.clock, actor=ACTOR) == 0


def _ending(uow, flow):
    from db.models import Event, UowTransition

    return UowTransition(
        uow_id=uow.id,
        expected_state=UowState.IN_PROGRESS,
        new_state=UowState.PROCESSED,
        event=Event(
            entity="uow",
            entity_id=uow.id,
            at=flow.clock.now(),
            trigger="succeed",
            from_state="in_progress",
            to_state="processed",
            actor=ACTOR,
        ),
    )
