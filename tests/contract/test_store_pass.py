"""The store contract, what a managed scheduler pass reads and writes for all its processes at
once (newest jobs, active windows, units of work by id, job moves and starts together): the
same tests on every backend."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from db.errors import DuplicateKey, InvalidInput, NotFound, StateConflict
from db.models import JobChain, JobStart, JobTransition, QueueSettlement, UowQuery
from db.states import ACTIVE_JOB_STATES, JobState, UowKind, UowState
from tests.contract.store_helpers import (
    T0,
    _claimed_uow,
    _job_uows,
    _step,
    event,
    make_job,
    make_record,
    make_uow,
)


def _transition(job, dst: JobState, trigger: str = "complete", **kw) -> JobTransition:
    return JobTransition(
        process=job.process,
        timeperiod=job.timeperiod,
        expected_state=kw.pop("expected_state", job.state),
        new_state=dst,
        event=event("job", job.key, trigger, job.state, dst, at=kw.pop("at", T0)),
        changes=kw.pop("changes", None),
        expected_version=kw.pop("expected_version", None),
    )


def _start_of(job, uow=None, **kw) -> JobStart:
    uow = uow or make_uow(job.process, job.timeperiod, run_key=f"r{job.run}v{job.version}")
    at = kw.pop("at", T0)
    return JobStart(
        process=job.process,
        timeperiod=job.timeperiod,
        expected_state=kw.pop("expected_state", job.state),
        expected_version=kw.pop("expected_version", job.version),
        new_state=JobState.IN_PROGRESS,
        event=event("job", job.key, "start", job.state, "in_progress", at=at),
        uow=uow,
        uow_event=event("uow", uow.id, "create", None, "requested", at=at),
    )


def test_newest_jobs_of_several_processes(store):
    # given two registered processes with jobs, one registered without, one unregistered
    for name in ("a", "b", "idle"):
        store.insert_process(make_record(name))
    for period in ("2026010510", "2026010512", "2026010511"):
        store.create_job(make_job("a", period, state=JobState.PROCESSED))
    store.create_job(make_job("b", "2026010509"))
    store.create_job(make_job("ghost", "2026010501"))
    # when the newest job of each is read together
    newest = store.newest_jobs(["a", "b", "idle", "ghost", "a", "none"])
    # then each process with jobs has its latest timeperiod's job; the others have no key
    assert {name: job.timeperiod for name, job in newest.items()} == {
        "a": "2026010512",
        "b": "2026010509",
        "ghost": "2026010501",
    }
    assert newest["a"] == store.get_job("a", "2026010512")
    assert store.newest_jobs([]) == {}


@pytest.mark.parametrize("others", [0, 20], ids=["few processes", "many processes"])
def test_job_windows_are_the_oldest_jobs_in_the_states_within_each_limit(store, others):
    # given a process with processed history and five active jobs, and one with one
    for i in range(4):
        store.create_job(make_job("a", f"20260105{i:02d}", state=JobState.PROCESSED))
    states = {4: JobState.IN_PROGRESS, 5: JobState.FINAL_RUN, 6: JobState.EMBRYO}
    for i in range(4, 9):
        store.create_job(make_job("a", f"20260105{i:02d}", state=states.get(i, JobState.EMBRYO)))
    store.create_job(make_job("b", "2026010500"))
    store.create_job(make_job("b", "2026010501", state=JobState.SKIPPED))
    # when the windows are read with a limit each
    # (with ``others`` processes more, read together: a backend may read many another way)
    extra = {f"other{i:02d}": 1 for i in range(others)}
    windows = store.job_windows({"a": 3, "b": 5, "c": 2, **extra}, ACTIVE_JOB_STATES)
    assert all(windows[name] == [] for name in extra)
    # then each holds its oldest active jobs, in timeperiod order, at most its limit
    assert [j.timeperiod for j in windows["a"]] == ["2026010504", "2026010505", "2026010506"]
    assert windows["a"][0] == store.get_job("a", "2026010504")
    assert [j.timeperiod for j in windows["b"]] == ["2026010500"]
    assert windows["c"] == []
    assert [j.timeperiod for j in store.job_windows({"a": 9, **extra}, {JobState.EMBRYO})["a"]] == [
        "2026010506",
        "2026010507",
        "2026010508",
    ]
    with pytest.raises(InvalidInput):
        store.job_windows({"a": 0}, ACTIVE_JOB_STATES)


def test_job_windows_of_more_processes_than_one_statement_binds(store):
    # given 600 processes with two embryos each (more names than one IN list holds)
    periods = ("2026010502", "2026010501")
    store.ensure_jobs(make_job(f"p{i:03d}", period) for i in range(600) for period in periods)
    # when every window is read with a limit of one
    windows = store.job_windows({f"p{i:03d}": 1 for i in range(600)}, ACTIVE_JOB_STATES)
    # then every process has its oldest
    assert len(windows) == 600
    assert {tuple(j.timeperiod for j in w) for w in windows.values()} == {("2026010501",)}


def test_get_uows_by_id(store):
    # given three units of work
    uows = [store.create_uow(make_uow(start=f"20260105{i:02d}")) for i in range(3)]
    # when two of them, one twice, and an unknown id are read together
    found = store.get_uows([uows[2].id, uows[0].id, "nope", uows[2].id])
    # then the known ones are there by id, as stored
    assert found == {uows[2].id: uows[2], uows[0].id: uows[0]}
    assert store.get_uows([]) == {}


def test_transition_jobs_each_compare_and_set_on_its_own(store):
    # given four jobs, one of which another actor moved meanwhile
    a = store.create_job(make_job("a", state=JobState.IN_PROGRESS, uow_id="u1"))
    b = store.create_job(make_job("b", state=JobState.FINAL_RUN))
    c = store.create_job(make_job("c", state=JobState.IN_PROGRESS))
    d = store.create_job(make_job("d", state=JobState.IN_PROGRESS))
    store.transition_job(
        c.process,
        c.timeperiod,
        expected_state=JobState.IN_PROGRESS,
        new_state=JobState.SKIPPED,
        event=event("job", c.key, "skip", "in_progress", "skipped"),
    )
    at = T0 + timedelta(minutes=1)
    # when a pass moves them together, one with changes, one on a version, one unknown
    done = store.transition_jobs(
        [
            _transition(a, JobState.IN_PROGRESS, "reprocess", at=at, changes={"run": 1}),
            _transition(b, JobState.PROCESSED, at=at, expected_version=b.version),
            _transition(c, JobState.PROCESSED, at=at),
            _transition(make_job("ghost"), JobState.PROCESSED, at=at),
            _transition(d, JobState.NOOP, at=at, expected_version=d.version + 1),
        ]
    )
    # then the matching ones moved with their events; each refused one wrote nothing
    moved_a, moved_b, refused_c, missing, refused_d = done
    assert (moved_a.state, moved_a.run, moved_a.version) == (JobState.IN_PROGRESS, 1, 2)
    assert moved_a.uow_id == "u1" and moved_a.updated_at == at
    assert (moved_b.state, moved_b.version) == (JobState.PROCESSED, 2)
    assert moved_a == store.get_job("a", a.timeperiod)
    assert moved_b == store.get_job("b", b.timeperiod)
    assert isinstance(refused_c, StateConflict) and isinstance(missing, NotFound)
    assert isinstance(refused_d, StateConflict)
    assert store.get_job("c", c.timeperiod).state is JobState.SKIPPED
    assert store.get_job("d", d.timeperiod) == d
    assert [e.trigger for e in store.history("job", a.key)] == ["reprocess"]
    assert [e.trigger for e in store.history("job", b.key)] == ["complete"]
    assert [e.trigger for e in store.history("job", c.key)] == ["skip"]
    assert store.history("job", d.key) == []
    assert store.transition_jobs([]) == []


def test_transition_jobs_of_one_job_twice_apply_in_order(store):
    # given a job in progress
    job = store.create_job(make_job(state=JobState.IN_PROGRESS))
    # when two steps of it go together, the second expecting what the first writes
    first = _transition(job, JobState.FINAL_RUN, "finalize")
    second = JobTransition(
        process=job.process,
        timeperiod=job.timeperiod,
        expected_state=JobState.FINAL_RUN,
        new_state=JobState.PROCESSED,
        event=event("job", job.key, "complete", "final_run", "processed"),
    )
    again = _transition(job, JobState.SKIPPED, "skip")
    done = store.transition_jobs([first, second, again])
    # then both apply in order, and a third expecting the first state is refused
    assert [getattr(r, "state", None) for r in done[:2]] == [
        JobState.FINAL_RUN,
        JobState.PROCESSED,
    ]
    assert isinstance(done[2], StateConflict)
    assert [e.trigger for e in store.history("job", job.key)] == ["finalize", "complete"]


def test_transition_jobs_refuse_bad_changes_before_writing(store):
    job = store.create_job(make_job(state=JobState.IN_PROGRESS))
    other = store.create_job(make_job("b", state=JobState.IN_PROGRESS))
    with pytest.raises(InvalidInput):
        store.transition_jobs(
            [
                _transition(other, JobState.PROCESSED),
                _transition(job, JobState.PROCESSED, changes={"state": "noop"}),
            ]
        )
    if store.atomic_groups:  # one transaction: the good step was not written either
        assert store.get_job("b", other.timeperiod) == other


def test_start_jobs_start_each_on_its_own(store):
    # given three embryos, one of which already started, and a unit of work an interrupted
    # start of the third stored
    a = store.create_job(make_job("a"))
    b = store.create_job(make_job("b"))
    c = store.create_job(make_job("c"))
    store.transition_job(
        b.process,
        b.timeperiod,
        expected_state=JobState.EMBRYO,
        new_state=JobState.SKIPPED,
        event=event("job", b.key, "skip", "embryo", "skipped"),
    )
    twin = store.create_uow(make_uow("c", c.timeperiod, run_key=f"r{c.run}v{c.version}"))
    at = T0 + timedelta(minutes=2)
    # when a pass starts them together, and one that does not exist
    done = store.start_jobs(
        [
            _start_of(a, at=at),
            _start_of(b, at=at),
            _start_of(c, at=at),
            _start_of(make_job("ghost"), at=at),
        ]
    )
    # then the first starts with its new unit of work, the third links the stored one, the
    # others are refused and wrote nothing
    (job_a, uow_a), refused_b, (job_c, uow_c), missing = done
    assert job_a == store.get_job("a", a.timeperiod) and job_a.uow_id == uow_a.id
    assert (job_a.state, job_a.version, job_a.updated_at) == (JobState.IN_PROGRESS, 2, at)
    assert uow_a == store.get_uow(uow_a.id)
    assert uow_c == twin and job_c.uow_id == twin.id
    assert isinstance(refused_b, StateConflict) and isinstance(missing, NotFound)
    assert _job_uows(store, b) == [] and _job_uows(store, make_job("ghost")) == []
    assert store.history("job", a.key)[-1].details == {"uow_id": uow_a.id}
    assert store.history("job", c.key)[-1].details == {"uow_id": twin.id, "adopted": True}
    assert [e.trigger for e in store.history("uow", uow_a.id)] == ["create"]
    assert [e.trigger for e in store.history("job", b.key)] == ["skip"]
    assert store.start_jobs([]) == []


def test_start_jobs_refuse_a_taken_key_alone_and_a_wrong_unit_of_work_before_writing(store):
    # given two embryos, the run key of the second held by another job's unit of work
    a = store.create_job(make_job("a"))
    b = store.create_job(make_job("b"))
    store.create_uow(make_uow("b", b.timeperiod, run_key="r0v1", timeperiod="2026010500"))
    # when both start together
    done = store.start_jobs([_start_of(a), _start_of(b)])
    # then the first starts and the second is refused with nothing written
    assert done[0][0].state is JobState.IN_PROGRESS
    assert isinstance(done[1], DuplicateKey)
    assert store.get_job("b", b.timeperiod) == b and store.history("job", b.key) == []
    # and a unit of work of something else is refused before anything is written
    c = store.create_job(make_job("c"))
    wrong = make_uow("c", c.timeperiod, run_key="r0v1", kind=UowKind.FREERUN, timeperiod=None)
    with pytest.raises(InvalidInput):
        store.start_jobs(
            [_start_of(c, make_uow("c", c.timeperiod, run_key="x")), _start_of(c, wrong)]
        )
    assert store.get_job("c", c.timeperiod) == c
    assert store.find_uows(UowQuery(process="c"), limit=10).items == []


def _chain_of(store, *, put=()):
    """Hour 13's unit of work in progress (its job in progress) and hour 14's embryo: the
    step that ends the unit of work, with the chain that finishes 13 and starts 14."""
    job = store.create_job(make_job("a", "2026010513"))
    following = store.create_job(make_job("a", "2026010514"))
    uow = _claimed_uow(store, process="a", start="2026010513", run_key="r0v1")
    (job,) = store.transition_jobs(
        [_transition(job, JobState.IN_PROGRESS, "start", changes={"uow_id": uow.id})]
    )
    at = T0 + timedelta(minutes=3)
    step = _step(uow, UowState.IN_PROGRESS, UowState.PROCESSED, "succeed", at)
    link = JobChain(
        finish=_transition(job, JobState.PROCESSED, expected_version=job.version, at=at),
        start=_start_of(following, at=at),
        put=put,
    )
    return job, following, uow, replace(step, chain=link)


def test_a_step_chain_moves_the_jobs_with_the_outcome_or_not_at_all(store):
    # given an outcome that chains hour 14's start, and another whose chain is stale
    job, following, uow, step = _chain_of(store, put=(("q", b"announce 14"),))
    other_job = store.create_job(make_job("b", "2026010513"))
    other_uow = _claimed_uow(store, process="b", start="2026010513", run_key="r0v1")
    stale = replace(
        _step(other_uow, UowState.IN_PROGRESS, UowState.PROCESSED, "succeed"),
        chain=JobChain(
            finish=_transition(other_job, JobState.PROCESSED, expected_state=JobState.FINAL_RUN),
            start=_start_of(store.create_job(make_job("b", "2026010514"))),
            put=(("q", b"announce b 14"),),
        ),
    )
    # when both outcomes are written together
    done = store.transition_uows([step, stale])
    # then both outcomes are stored
    assert [u.state for u in done] == [UowState.PROCESSED, UowState.PROCESSED]
    started = step.chain.start.uow
    if store.atomic_groups:
        # and the first chain applied whole: 13 processed, 14 in progress with its unit of
        # work, every event, the announcement put
        assert store.get_job("a", "2026010513").state is JobState.PROCESSED
        assert store.get_job("a", "2026010514").uow_id == started.id
        assert store.get_uow(started.id).state is UowState.REQUESTED
        assert [e.trigger for e in store.history("job", job.key)][-1] == "complete"
        assert [e.trigger for e in store.history("uow", started.id)] == ["create"]
        assert [
            m.body
            for m in store.queue_claim(
                "q", "c", now=T0 + timedelta(hours=1), visibility=timedelta(seconds=30), limit=5
            )
        ] == [b"announce 14"]
    else:
        # a backend without transactions leaves chains out: the scheduler moves the jobs
        assert store.get_job("a", "2026010514").state is JobState.EMBRYO
        with pytest.raises(NotFound):
            store.get_uow(started.id)
    # and the stale chain left nothing: its jobs as they were, no unit of work, no message
    assert store.get_job("b", "2026010513").state is JobState.EMBRYO
    assert store.get_job("b", "2026010514").state is JobState.EMBRYO
    with pytest.raises(NotFound):
        store.get_uow(stale.chain.start.uow.id)
    assert store.queue_depth("q", now=T0 + timedelta(hours=1))["ready"] == 0
    assert following.state is JobState.EMBRYO


def test_settle_uows_says_which_chains_it_wrote(store):
    # given an outcome whose chain applies, on the queue-settling path of the store queue
    _, _, _, step = _chain_of(store, put=(("q", b"announce 14"),))
    # when it is settled with an ack-less settlement that claims from the queue
    settlement = QueueSettlement(
        consumer="c1",
        now=T0 + timedelta(hours=1),
        visibility=timedelta(seconds=30),
        claim_queue="q",
        claim_limit=1,
    )
    done, settled = store.settle_uows([step], settlement)
    # then the outcome is stored, and where the chain was written the store says so and the
    # same commit's claim took its announcement
    assert [u.state for u in done] == [UowState.PROCESSED]
    if store.atomic_groups:
        assert settled.chained == (step.chain.start.uow.id,)
        assert [m.body for m in settled.claimed] == [b"announce 14"]
    else:
        assert settled.chained == () and settled.claimed == ()
