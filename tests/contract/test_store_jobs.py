"""The store contract, jobs and the start of a job's run: the same tests on every backend."""

from __future__ import annotations

from datetime import timedelta

import pytest

from db.errors import DuplicateKey, InvalidInput, NotFound, StateConflict
from db.models import JobQuery, UnitOfWork, UowQuery
from db.states import JobState, Qualifier, UowKind, UowState
from tests.contract.store_helpers import (
    T0,
    _all_pages,
    _fields,
    _job_uows,
    _start,
    event,
    make_job,
    make_uow,
)


def test_job_round_trip_keeps_aware_utc_instants(store):
    job = store.create_job(make_job())
    got = store.get_job("site_hourly", "2026010513")
    assert got == job
    assert got.created_at == T0 and got.created_at.utcoffset() == timedelta(0)
    assert got.qualifier is Qualifier.HOURLY and got.state is JobState.EMBRYO


def test_job_unique_per_process_and_timeperiod(store):
    store.create_job(make_job())
    with pytest.raises(DuplicateKey):
        store.create_job(make_job())
    store.create_job(make_job(timeperiod="2026010514"))
    store.create_job(make_job(process="other"))


def test_job_get_missing(store):
    with pytest.raises(NotFound):
        store.get_job("site_hourly", "2026010513")


def test_ensure_jobs_creates_only_missing(store):
    # given
    store.create_job(make_job(timeperiod="2026010500"))
    jobs = [make_job(timeperiod=f"20260105{h:02d}") for h in range(24)]
    # when
    created = store.ensure_jobs(jobs)
    again = store.ensure_jobs(jobs)
    # then
    assert created == 23
    assert again == 0
    page = store.find_jobs(JobQuery(process="site_hourly"), limit=100)
    assert len(page.items) == 24


def test_ensure_jobs_large_batch(store):
    # several batches, from a one-shot iterator (mongomock checks unique keys by scanning, so
    # the count stays modest)
    jobs = [
        make_job(timeperiod=(T0 + timedelta(hours=h)).strftime("%Y%m%d%H")) for h in range(1300)
    ]
    assert store.ensure_jobs(iter(jobs)) == 1300
    assert store.count_jobs("site_hourly") == {("site_hourly", JobState.EMBRYO): 1300}


def test_find_jobs_paginates_newest_first_without_gaps(store):
    # given 2 processes x 13 hours
    for process in ("a_hourly", "b_hourly"):
        store.ensure_jobs(make_job(process, f"20260105{h:02d}") for h in range(13))
    # when
    items = _all_pages(lambda **kw: store.find_jobs(JobQuery(), **kw), limit=5)
    # then
    keys = [(j.timeperiod, j.process) for j in items]
    assert len(keys) == 26 and len(set(keys)) == 26
    assert keys == sorted(keys, key=lambda k: (-int(k[0]), k[1]))


def test_find_jobs_oldest_first_and_filters(store):
    # given
    store.ensure_jobs(make_job("a", f"20260105{h:02d}") for h in range(10))
    store.ensure_jobs(make_job("b", f"20260105{h:02d}") for h in range(10))
    store.transition_job(
        "a",
        "2026010503",
        expected_state=JobState.EMBRYO,
        new_state=JobState.IN_PROGRESS,
        event=event("job", "a/2026010503", "start", "embryo", "in_progress"),
    )
    # when
    window = _all_pages(
        lambda **kw: store.find_jobs(
            JobQuery(
                process="a",
                from_timeperiod="2026010502",
                to_timeperiod="2026010508",
                newest_first=False,
            ),
            **kw,
        ),
        limit=4,
    )
    active = store.find_jobs(JobQuery(states=frozenset({JobState.IN_PROGRESS}))).items
    # then
    assert [j.timeperiod for j in window] == [f"20260105{h:02d}" for h in range(2, 8)]
    assert [(j.process, j.timeperiod) for j in active] == [("a", "2026010503")]


def test_find_jobs_of_several_processes(store):
    # given 3 processes x 6 hours
    for process in ("a", "b", "c"):
        store.ensure_jobs(make_job(process, f"20260105{h:02d}") for h in range(6))
    # when: two of them from hour 3, in pages of 2
    found = _all_pages(
        lambda **kw: store.find_jobs(
            JobQuery(processes=frozenset({"a", "c"}), from_timeperiod="2026010503"), **kw
        ),
        limit=2,
    )
    # then: newest first, process second, none of b
    assert [(j.timeperiod, j.process) for j in found] == [
        (f"20260105{h:02d}", p) for h in (5, 4, 3) for p in ("a", "c")
    ]


def test_find_jobs_refuses_bad_cursor_and_limit(store):
    with pytest.raises(InvalidInput) as err:
        store.find_jobs(JobQuery(), cursor="garbage!")
    assert err.value.field == "cursor"
    with pytest.raises(InvalidInput) as err:
        store.find_jobs(JobQuery(), limit=0)
    assert err.value.field == "limit"


def test_transition_job_sets_state_changes_and_history(store):
    # given
    job = store.create_job(make_job())
    at = T0 + timedelta(minutes=5)
    # when
    moved = store.transition_job(
        "site_hourly",
        "2026010513",
        expected_state=JobState.EMBRYO,
        new_state=JobState.IN_PROGRESS,
        changes={"uow_id": "u1", "run": 1},
        event=event("job", job.key, "start", "embryo", "in_progress", at=at),
    )
    # then
    assert moved.state is JobState.IN_PROGRESS
    assert moved.uow_id == "u1" and moved.run == 1
    assert moved.version == job.version + 1
    assert moved.updated_at == at
    assert store.get_job("site_hourly", "2026010513") == moved
    (ev,) = store.history("job", job.key)
    assert (ev.trigger, ev.from_state, ev.to_state, ev.actor, ev.reason) == (
        "start",
        "embryo",
        "in_progress",
        "test",
        "because",
    )
    assert ev.at == at


def test_transition_job_refused_when_state_differs(store):
    # given
    job = store.create_job(make_job(state=JobState.PROCESSED))
    # when
    with pytest.raises(StateConflict) as err:
        store.transition_job(
            "site_hourly",
            "2026010513",
            expected_state=JobState.EMBRYO,
            new_state=JobState.IN_PROGRESS,
            event=event("job", job.key, "start", "embryo", "in_progress"),
        )
    # then
    assert err.value.actual == "processed" and err.value.expected == "embryo"
    assert store.get_job("site_hourly", "2026010513") == job
    assert store.history("job", job.key) == []


def test_transition_job_refused_when_version_differs(store):
    job = store.create_job(make_job())
    with pytest.raises(StateConflict):
        store.transition_job(
            "site_hourly",
            "2026010513",
            expected_state=JobState.EMBRYO,
            new_state=JobState.IN_PROGRESS,
            expected_version=job.version + 1,
            event=event("job", job.key, "start", "embryo", "in_progress"),
        )
    assert store.get_job("site_hourly", "2026010513").state is JobState.EMBRYO


def test_transition_job_missing(store):
    with pytest.raises(NotFound):
        store.transition_job(
            "nope",
            "2026010513",
            expected_state=JobState.EMBRYO,
            new_state=JobState.IN_PROGRESS,
            event=event("job", "nope/2026010513", "start", "embryo", "in_progress"),
        )


def test_count_jobs_by_process_and_state(store):
    store.ensure_jobs(make_job("a", f"20260105{h:02d}") for h in range(3))
    store.create_job(make_job("b", state=JobState.SKIPPED))
    assert store.count_jobs() == {("a", JobState.EMBRYO): 3, ("b", JobState.SKIPPED): 1}
    assert store.count_jobs("b") == {("b", JobState.SKIPPED): 1}


# -- starting a job: the job's compare-and-set and its unit of work, as one ---------------------


def test_start_job_moves_links_and_inserts_with_both_events(store):
    # given an embryo job
    job = store.create_job(make_job())
    uow = make_uow(run_key="r0v1")
    at = T0 + timedelta(minutes=5)
    # when it is started
    started, linked = _start(store, job, uow, at=at)
    # then the job moved and points to the unit of work, which is stored as given
    assert started.state is JobState.IN_PROGRESS and started.version == job.version + 1
    assert started.uow_id == uow.id and started.updated_at == at
    assert store.get_job(job.process, job.timeperiod) == started
    assert linked == uow == store.get_uow(uow.id)
    (job_event,) = store.history("job", job.key)
    assert (job_event.trigger, job_event.to_state) == ("start", "in_progress")
    assert job_event.details == {"uow_id": uow.id}
    assert [e.trigger for e in store.history("uow", uow.id)] == ["create"]


def test_start_job_refused_writes_nothing(store):
    # given a job at version 1, and another already started
    job = store.create_job(make_job())
    done = store.create_job(make_job(timeperiod="2026010512", state=JobState.PROCESSED))
    # when a start expects another version, another state, or a job that does not exist
    with pytest.raises(StateConflict):
        _start(store, job, expected_version=2)
    with pytest.raises(StateConflict):
        _start(store, done, make_uow(start="2026010512"), expected_state=JobState.EMBRYO)
    with pytest.raises(NotFound):
        _start(store, make_job(timeperiod="2026010511"), make_uow(start="2026010511"))
    # then no job changed, no unit of work and no event was left behind
    assert store.get_job(job.process, job.timeperiod) == job
    assert store.get_job(done.process, done.timeperiod) == done
    assert store.find_uows(UowQuery(), limit=10).items == []
    assert store.history("job", job.key) == [] and store.history("job", done.key) == []


def test_start_job_links_the_unit_of_work_an_interrupted_start_stored(store):
    # given a unit of work stored under the key of the job's start, never linked (what a
    # scheduler killed between the two writes of a start leaves on MongoDB), since claimed
    job = store.create_job(make_job())
    stored = store.create_uow(make_uow(run_key="r0v1", state=UowState.IN_PROGRESS))
    # when the start is made again, with a unit of work of its own
    started, linked = _start(store, job, make_uow(run_key="r0v1"))
    # then the stored one is linked as it is (not inserted twice, not canceled, not revived)
    assert linked == stored and started.uow_id == stored.id
    assert _job_uows(store, job) == [stored]
    assert store.history("job", job.key)[-1].details == {"uow_id": stored.id, "adopted": True}


def test_start_job_refuses_a_key_or_a_unit_of_work_of_something_else(store):
    job = store.create_job(make_job())
    # a freerun's unit of work, or one of another job, as the job's run
    for wrong in (
        make_uow(run_key="r0v1", kind=UowKind.FREERUN, timeperiod=None),
        make_uow(run_key="r0v1", timeperiod="2026010512"),
        make_uow(process="other", run_key="r0v1"),
    ):
        with pytest.raises(InvalidInput):
            _start(store, job, wrong)
    # the key held by another job's unit of work
    store.create_uow(make_uow(run_key="r0v1", timeperiod="2026010500"))
    with pytest.raises(DuplicateKey):
        _start(store, job, make_uow(run_key="r0v1"))
    # a naive instant
    naive = UnitOfWork(
        **{**_fields(make_uow(run_key="r0v2")), "created_at": T0.replace(tzinfo=None)}
    )
    with pytest.raises(InvalidInput):
        _start(store, job, naive)
    assert store.get_job(job.process, job.timeperiod) == job
    assert store.history("job", job.key) == []
    assert len(store.find_uows(UowQuery(), limit=10).items) == 1


def _interrupt_the_job_write(store, monkeypatch) -> type[Exception]:
    """Make the job's compare-and-set of ``start_job`` fail as a crash would, after the unit of
    work's write on MongoDB, inside the transaction on SQL."""

    class Crash(Exception):
        pass

    if hasattr(store, "_cas"):  # SQL: one transaction, rolled back by the crash
        real = store._cas

        def crashing(conn, table, *args, **kwargs):
            if table.name == "jobs":
                raise Crash
            return real(conn, table, *args, **kwargs)

        monkeypatch.setattr(store, "_cas", crashing)
    else:  # MongoDB: the unit of work is written first, then the job
        real = store._change

        def crashing(collection, **kwargs):
            if collection.name == "jobs":
                raise Crash
            return real(collection, **kwargs)

        monkeypatch.setattr(store, "_change", crashing)
    return Crash


def test_start_job_interrupted_between_its_writes_is_completed_by_the_next_start(
    store, monkeypatch
):
    # given a start interrupted at the job's write
    job = store.create_job(make_job())
    crash = _interrupt_the_job_write(store, monkeypatch)
    first = make_uow(run_key="r0v1")
    with pytest.raises(crash):
        _start(store, job, first)
    monkeypatch.undo()
    # then the job is untouched; what is left is nothing (SQL) or the unit of work, requested
    assert store.get_job(job.process, job.timeperiod) == job
    left = _job_uows(store, job)
    assert left == [] or [(u.id, u.state) for u in left] == [(first.id, UowState.REQUESTED)]
    # when a restarted scheduler starts the same job version again
    started, linked = _start(store, job, make_uow(run_key="r0v1"))
    # then exactly one unit of work exists, requested and linked; none was ever canceled
    assert _job_uows(store, job) == [linked]
    assert started.uow_id == linked.id and linked.state is UowState.REQUESTED
    assert [e.trigger for e in store.history("uow", linked.id)] == ["create"]
    assert [e.trigger for e in store.history("job", job.key)] == ["start"]
