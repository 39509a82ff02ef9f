"""State machines: every (state, trigger) pair of every table, conditions, and the funnel."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from db import open_store
from db.errors import InvalidInput, StateConflict, TransitionRefused
from db.ids import new_id
from db.machines.job import JOB_MACHINES, JOB_TABLES
from db.machines.supervised import SUPERVISED_MACHINE, SUPERVISED_TRANSITIONS
from db.machines.uow import UOW_MACHINE, UOW_TRANSITIONS
from db.models import Job, ProcessEntry, SupervisedProcess, UnitOfWork, UowQuery
from db.state_change import (
    UowChange,
    change_job,
    change_supervised,
    change_uow,
    change_uows,
    start_job,
)
from db.states import (
    JobState,
    ProcessKind,
    Qualifier,
    StateMachineName,
    SupervisedState,
    UowKind,
    UowState,
)
from db.uow_factory import create_once

T0 = datetime(2026, 1, 5, 13, 0, tzinfo=UTC)

CASES = [(f"job_{name.value}", JOB_MACHINES[name], rows) for name, rows in JOB_TABLES.items()]
CASES += [
    ("uow", UOW_MACHINE, UOW_TRANSITIONS),
    ("supervised", SUPERVISED_MACHINE, SUPERVISED_TRANSITIONS),
]


def _every_pair():
    for label, machine, rows in CASES:
        edges = {(str(r.source), r.trigger): r for r in rows}
        for state in machine.states:
            for trigger in machine.triggers:
                yield pytest.param(
                    machine,
                    state,
                    trigger,
                    edges.get((state, trigger)),
                    id=f"{label}-{state}-{trigger}",
                )


@pytest.mark.parametrize(("machine", "state", "trigger", "row"), list(_every_pair()))
def test_machine_every_state_trigger_pair(machine, state, trigger, row):
    all_facts = dict.fromkeys(machine.conditions, True)
    if row is None:
        with pytest.raises(TransitionRefused) as err:
            machine.decide(state, trigger, "k", **all_facts)
        assert err.value.state == state and err.value.trigger == trigger
        assert f"cannot {trigger} from state {state}" in str(err.value)
    else:
        assert machine.decide(state, trigger, "k", **all_facts) == str(row.dest)


@pytest.mark.parametrize(
    ("label", "machine", "row"),
    [
        pytest.param(label, m, r, id=f"{label}-{r.source}-{r.trigger}-{c}")
        for label, m, rows in CASES
        for r in rows
        if r.conditions
        for c in r.conditions
    ],
)
def test_machine_condition_refuses_when_false(label, machine, row):
    facts = dict.fromkeys(machine.conditions, True)
    failing = row.conditions[0]
    facts[failing] = False
    with pytest.raises(TransitionRefused, match=f"condition not met: {failing}"):
        machine.decide(row.source, row.trigger, "k", **facts)


def test_machine_refuses_unknown_trigger_and_state():
    machine = JOB_MACHINES[StateMachineName.DISCRETE]
    with pytest.raises(TransitionRefused, match="unknown trigger"):
        machine.decide("embryo", "explode")
    with pytest.raises(TransitionRefused, match="unknown state"):
        machine.decide("state_embryo", "start")


def test_machine_tables_cover_spec_states():
    # every state of SPEC section 3 is reachable or initial in each job table
    for name, rows in JOB_TABLES.items():
        reachable = {JobState.EMBRYO} | {r.dest for r in rows}
        expected = set(JobState) - (
            {JobState.FINAL_RUN} if name is StateMachineName.DISCRETE else set()
        )
        assert reachable == expected, name
    assert {r.dest for r in UOW_TRANSITIONS} == set(UowState)
    assert {r.dest for r in SUPERVISED_TRANSITIONS} | {SupervisedState.STOPPED} == set(
        SupervisedState
    )


def test_machine_is_shared_and_thread_safe():
    # given one machine asked from many threads with different stored states
    machine = JOB_MACHINES[StateMachineName.CONTINUOUS]
    errors = []

    def ask(state, trigger, expected):
        for _ in range(500):
            got = machine.decide(state, trigger, closed=True, finalizable=True)
            if got != expected:
                errors.append((state, trigger, got))

    threads = [
        threading.Thread(target=ask, args=("embryo", "start", "in_progress")),
        threading.Thread(target=ask, args=("final_run", "complete", "processed")),
        threading.Thread(target=ask, args=("skipped", "reprocess", "embryo")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# -- the funnel, on the embedded store ------------------------------------------------------------


class _Clock:
    def now(self):
        return T0


@pytest.fixture
def sqlite_store(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 't.db'}")
    store.init_schema()
    yield store
    store.close()


def _job(store) -> Job:
    return store.create_job(
        Job(
            id=new_id(),
            process="p",
            qualifier=Qualifier.HOURLY,
            timeperiod="2026010512",
            created_at=T0,
            updated_at=T0,
        )
    )


def test_change_job_persists_and_records_history(sqlite_store):
    # given
    job = _job(sqlite_store)
    seen = []
    # when
    moved = change_job(
        sqlite_store,
        job,
        "start",
        state_machine=StateMachineName.DISCRETE,
        clock=_Clock(),
        actor="scheduler",
        reason="period closed",
        facts={"closed": True},
        changes={"uow_id": "u1"},
        after_commit=seen.append,
    )
    # then
    assert moved.state is JobState.IN_PROGRESS and moved.uow_id == "u1"
    assert seen == [moved]
    (ev,) = sqlite_store.history("job", job.key)
    assert (ev.from_state, ev.to_state, ev.actor, ev.reason) == (
        "embryo",
        "in_progress",
        "scheduler",
        "period closed",
    )


def test_change_job_refused_writes_nothing(sqlite_store):
    # given
    job = _job(sqlite_store)
    # when
    with pytest.raises(TransitionRefused):
        change_job(
            sqlite_store,
            job,
            "complete",
            state_machine=StateMachineName.DISCRETE,
            clock=_Clock(),
            actor="test",
        )
    # then
    assert sqlite_store.get_job("p", "2026010512") == job
    assert sqlite_store.history("job", job.key) == []


def _entry(**fields) -> ProcessEntry:
    return ProcessEntry(
        name="p",
        kind=ProcessKind.MANAGED,
        time_qualifier=Qualifier.HOURLY,
        command=("true",),
        arguments={"a": 1},
        retries=2,
        **fields,
    )


def test_start_job_moves_the_job_and_creates_its_run_together(sqlite_store):
    # given
    job = _job(sqlite_store)
    seen = []
    # when
    started, uow = start_job(
        sqlite_store,
        job,
        "start",
        entry=_entry(),
        start="2026010512",
        end="2026010513",
        clock=_Clock(),
        actor="scheduler",
        reason="the period is closed",
        facts={"closed": True},
        after_commit=lambda j, u: seen.append((j, u)),
    )
    # then the job points to a fresh unit of work of its run, and the hook saw both stored
    assert started.state is JobState.IN_PROGRESS and started.uow_id == uow.id
    assert (uow.kind, uow.timeperiod, uow.run_key) == (UowKind.MANAGED, "2026010512", "r0v1")
    assert (uow.arguments, uow.retries, uow.state) == ({"a": 1}, 2, UowState.REQUESTED)
    assert seen == [(started, uow)] and sqlite_store.get_uow(uow.id) == uow
    (ev,) = sqlite_store.history("job", job.key)
    assert (ev.trigger, ev.reason, ev.details) == (
        "start",
        "the period is closed",
        {"uow_id": uow.id},
    )


def test_start_job_refused_by_the_machine_writes_nothing(sqlite_store):
    # given a discrete job whose period is not closed
    job = _job(sqlite_store)
    # when
    with pytest.raises(TransitionRefused):
        start_job(
            sqlite_store,
            job,
            "start",
            entry=_entry(),
            start="2026010512",
            end="2026010513",
            clock=_Clock(),
            actor="scheduler",
        )
    # then
    assert sqlite_store.get_job("p", "2026010512") == job
    assert sqlite_store.find_uows(UowQuery(), limit=10).items == []


def test_create_once_refuses_a_managed_unit_of_work():
    # a job's run is created with the job's start only (never apart from its job)
    with pytest.raises(InvalidInput):
        create_once(
            None,
            _entry(),
            clock=_Clock(),
            actor="test",
            reason="",
            kind=UowKind.MANAGED,
            start="2026010512",
            end="2026010513",
            run_key="r0v1",
        )


def test_change_job_race_exactly_one_wins(sqlite_store, tmp_path):
    # given a job and eight actors holding the same (embryo) copy of it
    job = _job(sqlite_store)
    uri = f"sqlite:///{tmp_path / 't.db'}"
    stores = [open_store(uri) for _ in range(8)]
    barrier = threading.Barrier(8)
    results = [None] * 8

    def act(i):
        barrier.wait()
        try:
            results[i] = change_job(
                stores[i],
                job,
                "skip",
                state_machine=StateMachineName.DISCRETE,
                clock=_Clock(),
                actor=f"actor{i}",
            )
        except StateConflict as exc:
            results[i] = exc

    # when
    threads = [threading.Thread(target=act, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # then
    assert sum(isinstance(r, Job) for r in results) == 1
    assert sum(isinstance(r, StateConflict) for r in results) == 7
    assert len(sqlite_store.history("job", job.key)) == 1
    for s in stores:
        s.close()


def test_change_uow_retry_only_while_attempts_remain(sqlite_store):
    # given a unit of work on its last allowed attempt that failed
    uow = sqlite_store.create_uow(
        UnitOfWork(
            id=new_id(),
            process="p",
            kind=UowKind.MANAGED,
            start_timeperiod="2026010512",
            end_timeperiod="2026010513",
            run_key="0",
            state=UowState.INVALID,
            attempt=2,
            retries=1,
            created_at=T0,
            updated_at=T0,
        )
    )
    # when / then
    with pytest.raises(TransitionRefused, match="attempts_remain"):
        change_uow(sqlite_store, uow, "retry", clock=_Clock(), actor="scheduler")
    canceled = change_uow(
        sqlite_store, uow, "give_up", clock=_Clock(), actor="scheduler", reason="retries exhausted"
    )
    assert canceled.state is UowState.CANCELED


def _requested(start: str, **fields) -> UnitOfWork:
    return UnitOfWork(
        id=new_id(),
        process="p",
        kind=UowKind.MANAGED,
        start_timeperiod=start,
        end_timeperiod=start,
        run_key="0",
        created_at=T0,
        updated_at=T0,
        **fields,
    )


def test_change_uows_decides_each_and_writes_the_allowed_ones_together(sqlite_store):
    # given one unit of work running, one requested, one already processed
    running = change_uow(
        sqlite_store, sqlite_store.create_uow(_requested("1")), "claim", clock=_Clock(), actor="w"
    )
    waiting = sqlite_store.create_uow(_requested("2"))
    finished = sqlite_store.create_uow(_requested("3", state=UowState.PROCESSED))
    # when: finish the first and claim the second and the third in one call
    done = change_uows(
        sqlite_store,
        [
            UowChange(uow=running, trigger="succeed", changes={"exit_code": 0}),
            UowChange(uow=waiting, trigger="claim", changes={"worker_id": "w1"}),
            UowChange(uow=finished, trigger="claim"),
        ],
        clock=_Clock(),
        actor="worker w1",
    )
    # then the machine refused the third (nothing written), the others are stored with history
    assert done[0].state is UowState.PROCESSED and done[0].exit_code == 0
    assert done[1].state is UowState.IN_PROGRESS and done[1].worker_id == "w1"
    assert isinstance(done[2], TransitionRefused)
    assert sqlite_store.get_uow(finished.id).version == finished.version
    history = sqlite_store.history("uow", waiting.id)
    assert [(e.trigger, e.actor) for e in history] == [("claim", "worker w1")]


def test_change_uows_reports_a_lost_race_in_its_place(sqlite_store):
    # given a requested unit of work someone else claims after we read it
    stale = sqlite_store.create_uow(_requested("1"))
    change_uow(sqlite_store, stale, "claim", clock=_Clock(), actor="other")
    # when
    (result,) = change_uows(
        sqlite_store, [UowChange(uow=stale, trigger="claim")], clock=_Clock(), actor="w"
    )
    # then
    assert isinstance(result, StateConflict)
    assert [e.actor for e in sqlite_store.history("uow", stale.id)] == ["other"]


def test_change_supervised_start(sqlite_store):
    record = sqlite_store.ensure_supervised(
        SupervisedProcess(box_id="b", process="p", updated_at=T0)
    )
    moved = change_supervised(
        sqlite_store, record, "start", clock=_Clock(), actor="supervisor", changes={"pid": 7}
    )
    assert moved.state is SupervisedState.STARTING and moved.pid == 7
    with pytest.raises(TransitionRefused):
        change_supervised(sqlite_store, moved, "started", clock=_Clock(), actor="supervisor")
