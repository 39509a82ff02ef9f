"""The executors' service verbs on every store backend: claims racing from threads (each with
its own connection) hand out each unit of work once, outcomes under leases, repeats and stale
leases, and a flow run's steps."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from db import open_store
from db.clock import SystemClock
from db.errors import LeaseLost, StateConflict, StoreUnavailable
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


def requested(store, count: int) -> set[str]:
    """The ids of ``count`` units of work of the process ``job`` (registered here)."""
    register(store, SystemClock())
    return {actions.trigger(context(store), "job")["uow"]["id"] for _ in range(count)}


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
    with open_store(concurrent_store_uri) as store:
        made = requested(store, 30)
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
    with open_store(concurrent_store_uri) as store:
        made = requested(store, 30)
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


class _SlowCommit:
    """:func:`executors.commit_alone` a little slowed, so that the requests of the other
    threads queue meanwhile and are written together in the next commit."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, ctx, requests, notices, announce):
        time.sleep(0.01)
        self.sizes.append(len(requests))
        return executors.commit_alone(ctx, requests, notices, announce)


def test_claims_of_many_executors_grouped_in_commits_hand_out_each_unit_once(
    concurrent_store_uri,
):
    # given sixty requested units of work, and mx's shared memory and group commit
    with open_store(concurrent_store_uri) as store:
        made = requested(store, 60)
        memory, commit = executors.Memory(), _SlowCommit()
        group = executors.GroupCommit(commit)
        got: dict[str, list[str]] = {}
        lock = threading.Lock()
        start = threading.Barrier(6)

        def claimer(n: int) -> None:
            who = executor(f"ex{n}", "job")
            ctx = context(store).acting_as(f"executor {who.worker_id}")
            start.wait()
            done: list = []  # the outcome of the last claim goes with the next claim
            while True:
                claims, results = executors.claim_many(
                    ctx,
                    who,
                    done,
                    count=2,
                    heartbeat_interval=1.0,
                    memory=memory,
                    commit=group.write,
                )
                assert all(r.state is UowState.PROCESSED for r in results)
                if not claims:
                    return
                with lock:
                    for data in claims:
                        got.setdefault(data["uow_id"], []).append(who.worker_id)
                done = [
                    leases._outcome_change(ctx, store.get_uow(d["uow_id"]), outcome(d["lease"]))
                    for d in claims
                ]

        # when six executors claim them at once, each with the outcomes of its last claims
        in_threads(claimer, 6)
        # then each unit of work was handed out once, ran once and is processed
        assert sorted(got) == sorted(made)
        assert all(len(who) == 1 for who in got.values())
        assert {store.get_uow(u).state for u in made} == {UowState.PROCESSED}
        # and the commits were fewer than the requests: several executors' writes in one
        assert group.commits < group.requests
        assert max(commit.sizes) > 4
        # each claim and outcome is recorded once, in the name of the executor that asked
        for uow_id, (winner,) in got.items():
            events = [
                e for e in store.history("uow", uow_id, limit=50) if e.to_state != "requested"
            ]
            assert [e.to_state for e in events] == ["in_progress", "processed"]
            assert {e.actor for e in events} == {f"executor {winner}"}


def _queued_together(group: executors.GroupCommit, writes: list) -> list:
    """Each of ``writes`` (ctx, requests) asked from a thread of its own while the group's lock
    is held, so that all are written in one commit; what each got (results or the error)."""
    answers: list = [None] * len(writes)

    def ask(n: int) -> None:
        try:
            answers[n] = group.write(*writes[n])
        except Exception as exc:
            answers[n] = exc

    with group.lock:
        threads = [threading.Thread(target=ask, args=(n,)) for n in range(len(writes))]
        for thread in threads:
            thread.start()
        while len(group._queued) < len(writes):
            time.sleep(0.001)
    for thread in threads:
        thread.join(30)
    return answers


def test_two_claims_of_one_unit_in_one_commit_are_one_won_and_one_refused(store, clock):
    # given one requested unit of work, claimed by two executors in one group commit
    register(store, clock)
    uow = store.get_uow(actions.trigger(context(store, clock), "job")["uow"]["id"])
    group = executors.GroupCommit()
    writes = [
        (
            context(store, clock).acting_as(f"executor {who.worker_id}"),
            [executors._claim_change(who, uow, clock.now())],
        )
        for who in (executor("a"), executor("b"))
    ]
    # when it is written
    (first,), (second,) = _queued_together(group, writes)
    # then one claim won and the other was refused by the compare-and-set
    assert group.commits == 1 and group.requests == 2
    assert first.worker_id == executor("a").worker_id
    assert isinstance(second, StateConflict)
    stored = store.get_uow(uow.id)
    assert (stored.state, stored.worker_id) == (UowState.IN_PROGRESS, first.worker_id)
    claims = [e for e in store.history("uow", uow.id, limit=50) if e.to_state == "in_progress"]
    assert [e.actor for e in claims] == [f"executor {first.worker_id}"]


def test_a_group_commit_that_fails_answers_each_request_alone(store, clock):
    # given two units of work, and a commit that fails on the first
    register(store, clock)
    ids = [actions.trigger(context(store, clock), "job")["uow"]["id"] for _ in range(2)]
    bad, good = (store.get_uow(u) for u in ids)

    def commit(ctx, requests, notices, announce):
        if any(r.uow.id == bad.id for r in requests):
            raise StoreUnavailable("down for this one")
        return executors.commit_alone(ctx, requests, notices, announce)

    group = executors.GroupCommit(commit)
    ctx = context(store, clock)
    writes = [
        (ctx, [executors._claim_change(executor("a"), bad, clock.now())]),
        (ctx, [executors._claim_change(executor("b"), good, clock.now())]),
    ]
    # when both are asked for together
    failed, written = _queued_together(group, writes)
    # then the one that fails alone gets the error, and the other is written
    assert isinstance(failed, StoreUnavailable)
    (claimed,) = written
    assert claimed.worker_id == executor("b").worker_id
    assert store.get_uow(bad.id).state is UowState.REQUESTED
    assert store.get_uow(good.id).state is UowState.IN_PROGRESS


class _CountingReads:
    """The store, counting the reads of units of work by id."""

    def __init__(self, inner) -> None:
        self.inner, self.reads = inner, 0

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def get_uow(self, uow_id: str):
        self.reads += 1
        return self.inner.get_uow(uow_id)


def test_an_outcome_of_a_remembered_claim_is_written_without_a_read(store, clock):
    register(store, clock)
    ctx, memory = context(store, clock), executors.Memory()
    uow_id = actions.trigger(ctx, "job")["uow"]["id"]
    data = executors.claim_next(ctx, executor("a"), heartbeat_interval=1.0, memory=memory)
    counting = _CountingReads(store)
    stored, changed = leases.record_outcome(
        context(counting, clock), uow_id, outcome(data["lease"]), recall=memory.claimed.take
    )
    assert (stored.state, changed, counting.reads) == (UowState.PROCESSED, True, 0)
    # remembered until its outcome only: a repeat reads the store, and changes nothing
    again, changed = leases.record_outcome(
        context(counting, clock), uow_id, outcome(data["lease"]), recall=memory.claimed.take
    )
    assert (again.version, changed, counting.reads) == (stored.version, False, 1)


def test_a_remembered_claim_changed_since_is_read_again_by_its_outcome(store, clock):
    # given two units of work claimed through mx's memory
    register(store, clock)
    ctx, memory = context(store, clock), executors.Memory()
    ids = [actions.trigger(ctx, "job")["uow"]["id"] for _ in range(2)]
    beaten, lost = (
        executors.claim_next(ctx, executor("a"), heartbeat_interval=1.0, memory=memory) for _ in ids
    )
    # when one beats through another mx (its version changes), and the other is declared
    # lost, retried and claimed by another executor
    leases.heartbeat(ctx, beaten["uow_id"], {"lease": beaten["lease"]}, timeout_of=lambda u: None)
    change_uow(store, store.get_uow(lost["uow_id"]), "fail", clock=clock, actor="test")
    actions_retry(store, clock, lost["uow_id"])
    assert claim(ctx, executor("b"))["uow_id"] == lost["uow_id"]
    # then the outcome of the first is recorded after a read, and the second's is refused
    items = [(beaten["uow_id"], outcome(beaten["lease"])), (lost["uow_id"], outcome(lost["lease"]))]
    written, refused = leases.record_outcomes(
        ctx,
        items,
        write=lambda changes: (executors.commit_alone(ctx, changes, (), True), False),
        recall=memory.claimed.take,
    )
    assert written[0].state is UowState.PROCESSED and written[1] is True
    assert isinstance(refused, LeaseLost)
    assert store.get_uow(lost["uow_id"]).worker_id == executor("b").worker_id
