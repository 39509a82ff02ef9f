"""The executors' service verbs on every store backend: claims racing from threads (each with
its own connection) hand out each unit of work once, outcomes under leases, repeats and stale
leases, and a flow run's steps."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from db import open_store
from db.clock import SystemClock
from db.errors import LeaseLost
from db.registration import entry_from_mapping
from db.state_change import change_uow
from db.states import UowState
from mx.services import actions, executors, leases
from mx.services.context import ServiceContext
from tests.mx.conftest import insert_entry
from tests.mx.flows import register_flow


def context(store, clock=None) -> ServiceContext:
    return ServiceContext(
        store=store, clock=clock or SystemClock(), publish=lambda *a: None, actor="test"
    )


def executor(name: str, *processes: str) -> executors.Executor:
    return executors.Executor(name=name, box_id="b1", instance="1", processes=processes)


def register(store, clock, name: str = "job") -> None:
    fields = {"name": name, "kind": "freerun", "trigger": "every 3600", "command": ["true"]}
    insert_entry(store, clock, entry_from_mapping({**fields, "max_active": 1000, "retries": 1}))


def claim(ctx, who) -> dict | None:
    return executors.claim_next(ctx, who, heartbeat_interval=1.0)


def outcome(lease: str, state: str = "processed") -> leases.Outcome:
    return leases.outcome_from({"lease": lease, "state": state, "exit_code": 0})


def in_threads(target, count: int) -> None:
    """``target(n)`` in ``count`` threads at once, waited for."""
    threads = [threading.Thread(target=target, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)


def test_claims_racing_from_threads_hand_out_each_unit_once(concurrent_store_uri):
    # given thirty requested units of work
    clock = SystemClock()
    with open_store(concurrent_store_uri) as store:
        register(store, clock)
        made = {actions.trigger(context(store), "job")["uow"]["id"] for _ in range(30)}
    got: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def claimer(n: int) -> None:
        with open_store(concurrent_store_uri) as own:
            ctx = context(own)
            start.wait()
            while (data := claim(ctx, executor(f"ex{n}", "job"))) is not None:
                with lock:
                    got.append(data["uow_id"])
                leases.record_outcome(ctx, data["uow_id"], outcome(data["lease"]))

    # when four executors claim them at once
    in_threads(claimer, 4)
    # then each was handed out once, and all are processed
    assert sorted(got) == sorted(made)
    with open_store(concurrent_store_uri) as store:
        assert {store.get_uow(u).state for u in made} == {UowState.PROCESSED}


def test_claims_of_several_from_remembered_candidates_hand_out_each_unit_once(
    concurrent_store_uri,
):
    # given thirty requested units of work, and two mx processes with their own memory
    clock = SystemClock()
    with open_store(concurrent_store_uri) as store:
        register(store, clock)
        made = {actions.trigger(context(store), "job")["uow"]["id"] for _ in range(30)}
    memories = [executors.Memory(), executors.Memory()]
    got: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def claimer(n: int) -> None:
        with open_store(concurrent_store_uri) as own:
            ctx, who = context(own), executor(f"ex{n}", "job")
            start.wait()
            while True:
                claims, _ = executors.claim_many(
                    ctx, who, (), count=3, heartbeat_interval=1.0, memory=memories[n % 2]
                )
                if not claims:
                    return
                with lock:
                    got.extend(c["uow_id"] for c in claims)

    # when four executors, two on each mx, claim up to three at a time
    in_threads(claimer, 4)
    # then each unit of work was handed out once (a remembered candidate that another claimed
    # first is refused by the compare-and-set)
    assert sorted(got) == sorted(made)


def test_a_unit_requested_after_the_candidates_were_remembered_is_claimed(store, clock):
    register(store, clock)
    ctx, who, memory = context(store, clock), executor("ex1", "job"), executors.Memory()
    first = actions.trigger(ctx, "job")["uow"]["id"]
    second = actions.trigger(ctx, "job")["uow"]["id"]
    claimed = executors.claim_next(ctx, who, heartbeat_interval=1.0, memory=memory)
    # the other one was claimed elsewhere, and a third requested, after the page was kept
    other = ({first, second} - {claimed["uow_id"]}).pop()
    assert claim(ctx, executor("ex2", "job"))["uow_id"] == other
    third = actions.trigger(ctx, "job")["uow"]["id"]
    # the remembered candidate is refused, and the claim goes on to the store
    again = executors.claim_next(ctx, who, heartbeat_interval=1.0, memory=memory)
    assert again["uow_id"] == third


def test_outcomes_under_leases_on_every_store(store, clock):
    register(store, clock)
    ctx = context(store, clock)
    uow_id = actions.trigger(ctx, "job")["uow"]["id"]
    first = claim(ctx, executor("a"))
    assert first["uow_id"] == uow_id and claim(ctx, executor("b")) is None
    leases.heartbeat(ctx, uow_id, {"lease": first["lease"]}, timeout_of=lambda u: None)
    # the attempt fails; a repeat of its outcome changes nothing
    stored, changed = leases.record_outcome(ctx, uow_id, outcome(first["lease"], "invalid"))
    assert (stored.state, changed) == (UowState.INVALID, True)
    again, changed = leases.record_outcome(ctx, uow_id, outcome(first["lease"], "invalid"))
    assert (again.version, changed) == (stored.version, False)
    # retried and claimed by another: the first lease is stale
    actions_retry(store, clock, uow_id)
    second = claim(ctx, executor("b"))
    assert second["attempt"] == 2
    with pytest.raises(LeaseLost):
        leases.record_outcome(ctx, uow_id, outcome(first["lease"]))
    with pytest.raises(LeaseLost):
        leases.heartbeat(ctx, uow_id, {"lease": first["lease"]}, timeout_of=lambda u: None)
    stored, changed = leases.record_outcome(ctx, uow_id, outcome(second["lease"]))
    assert (stored.state, changed) == (UowState.PROCESSED, True)


def actions_retry(store, clock, uow_id: str) -> None:
    """The scheduler's retry of an invalid unit of work (scheduler/recovery.py)."""
    uow = store.get_uow(uow_id)
    clock.advance(timedelta(seconds=1))
    change_uow(
        store,
        uow,
        "retry",
        clock=clock,
        actor="test",
        changes={"attempt": uow.attempt + 1, "worker_id": None, "heartbeat_at": None},
    )


def test_a_flow_run_is_claimed_step_by_step_on_every_store(store, clock):
    register_flow(store, clock)
    ctx = context(store, clock)
    run = actions.trigger(ctx, "etl")["uow"]["id"]
    steps = []
    while (data := claim(ctx, executor("a", "etl"))) is not None:
        steps.append(data["step"])
        leases.record_outcome(ctx, data["uow_id"], outcome(data["lease"]))
    assert steps[0] == "extract" and steps[-1] == "load" and len(steps) == 4
    assert store.get_uow(run).state is UowState.PROCESSED


class _HeartbeatRacing:
    """The store, with a heartbeat of ``lease`` slipped in after the first read of a unit of
    work (between an outcome's read and its write)."""

    def __init__(self, inner, clock, lease: str) -> None:
        self.inner, self.clock, self.lease = inner, clock, lease
        self.raced = False

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def get_uow(self, uow_id: str):
        uow = self.inner.get_uow(uow_id)
        if not self.raced:
            self.raced = True
            beat = {"lease": self.lease}
            leases.heartbeat(
                context(self.inner, self.clock), uow_id, beat, timeout_of=lambda u: None
            )
        return uow


def test_an_outcome_racing_a_heartbeat_of_its_own_lease_is_recorded(store, clock):
    register(store, clock)
    uow_id = actions.trigger(context(store, clock), "job")["uow"]["id"]
    lease = claim(context(store, clock), executor("a"))["lease"]
    racing = context(_HeartbeatRacing(store, clock, lease), clock)
    stored, changed = leases.record_outcome(racing, uow_id, outcome(lease))
    assert (stored.state, changed) == (UowState.PROCESSED, True)
