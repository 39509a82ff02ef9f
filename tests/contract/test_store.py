"""The store contract: the same tests on every backend (SQLite, PostgreSQL, MariaDB, mongomock,
MongoDB-wire). Races run on the backends that are atomic across threads and OS processes."""

from __future__ import annotations

import multiprocessing
import threading
from datetime import UTC, datetime, timedelta

import pytest

from db import open_store
from db.errors import Conflict, DuplicateKey, InvalidInput, NotFound, StateConflict
from db.ids import new_id
from db.models import (
    Event,
    FireRecord,
    Job,
    JobQuery,
    ProcessEntry,
    ProcessRecord,
    QueueSettlement,
    SupervisedProcess,
    UnitOfWork,
    UowQuery,
    UowTransition,
    WorkerRecord,
)
from db.states import (
    FireOutcome,
    JobState,
    ProcessKind,
    ProcessSource,
    Qualifier,
    SupervisedState,
    UowKind,
    UowState,
)

T0 = datetime(2026, 1, 5, 13, 0, 0, 123000, tzinfo=UTC)


def make_record(name: str, kind: ProcessKind = ProcessKind.MANAGED, **fields) -> ProcessRecord:
    extra = {"time_qualifier": Qualifier.HOURLY} if kind == ProcessKind.MANAGED else {}
    if kind == ProcessKind.FREERUN:
        extra = {"trigger": "every 60"}
    entry = ProcessEntry(name=name, kind=kind, command=("true",), **{**extra, **fields})
    return ProcessRecord(
        entry=entry,
        source=ProcessSource.FILE,
        registered=entry.to_dict(),
        created_at=T0,
        updated_at=T0,
    )


def make_job(process: str = "site_hourly", timeperiod: str = "2026010513", **fields) -> Job:
    return Job(
        id=new_id(),
        process=process,
        qualifier=fields.pop("qualifier", Qualifier.HOURLY),
        timeperiod=timeperiod,
        created_at=T0,
        updated_at=T0,
        **fields,
    )


def _fields(model) -> dict:
    import dataclasses

    return {f.name: getattr(model, f.name) for f in dataclasses.fields(model)}


def make_uow(process: str = "site_hourly", start: str = "2026010513", **fields) -> UnitOfWork:
    return UnitOfWork(
        id=fields.pop("id", new_id()),
        process=process,
        kind=fields.pop("kind", UowKind.MANAGED),
        start_timeperiod=start,
        end_timeperiod=fields.pop("end", "2026010514"),
        run_key=fields.pop("run_key", "0"),
        timeperiod=fields.pop("timeperiod", start),
        created_at=T0,
        updated_at=T0,
        **fields,
    )


def event(entity: str, entity_id: str, trigger: str, src, dst, at: datetime = T0, **kw) -> Event:
    return Event(
        entity=entity,
        entity_id=entity_id,
        at=at,
        trigger=trigger,
        from_state=None if src is None else str(src),
        to_state=None if dst is None else str(dst),
        actor=kw.pop("actor", "test"),
        reason=kw.pop("reason", "because"),
        details=kw.pop("details", {}),
    )


# -- processes ----------------------------------------------------------------------------------


def test_process_insert_get_list(store):
    # given
    store.insert_process(make_record("b_hourly"))
    store.insert_process(make_record("a_cron", ProcessKind.FREERUN))
    # when
    names = [r.name for r in store.list_processes()]
    freeruns = [r.name for r in store.list_processes(ProcessKind.FREERUN)]
    got = store.get_process("b_hourly")
    # then
    assert names == ["a_cron", "b_hourly"]
    assert freeruns == ["a_cron"]
    assert got.entry == make_record("b_hourly").entry
    assert got.registered == make_record("b_hourly").entry.to_dict()
    assert got.version == 1
    assert got.created_at == T0


def test_process_duplicate_refused(store):
    store.insert_process(make_record("p"))
    with pytest.raises(DuplicateKey):
        store.insert_process(make_record("p"))


def test_process_get_missing(store):
    with pytest.raises(NotFound, match="process nope not found"):
        store.get_process("nope")


def test_process_update_is_compare_and_set_on_version(store):
    # given
    rec = store.insert_process(make_record("p"))
    changed = make_record("p", enabled=False)
    # when
    updated = store.update_process(changed, expected_version=rec.version)
    # then
    assert updated.version == rec.version + 1
    assert store.get_process("p").entry.enabled is False
    with pytest.raises(Conflict):
        store.update_process(make_record("p", retries=9), expected_version=rec.version)
    assert store.get_process("p").entry.retries == 3


def test_process_update_appends_event(store):
    rec = store.insert_process(make_record("p"))
    ev = event("process", "p", "disable", None, None, actor="alice")
    store.update_process(make_record("p", enabled=False), expected_version=rec.version, event=ev)
    assert [e.trigger for e in store.history("process", "p")] == ["disable"]
    assert store.history("process", "p")[0].actor == "alice"


def test_process_delete(store):
    store.insert_process(make_record("p"))
    store.delete_process("p")
    assert store.list_processes() == []
    with pytest.raises(NotFound):
        store.delete_process("p")


# -- jobs ---------------------------------------------------------------------------------------


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


def _all_pages(fetch, limit):
    items, cursor, pages = [], None, 0
    while True:
        page = fetch(limit=limit, cursor=cursor)
        items.extend(page.items)
        pages += 1
        assert pages < 100, "pagination does not end"
        if page.next_cursor is None:
            return items
        cursor = page.next_cursor


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


def _start(store, job: Job, uow: UnitOfWork | None = None, **kw):
    """``store.start_job`` of ``job`` as read, with a fresh unit of work of its run."""
    uow = uow or make_uow(run_key=f"r{job.run}v{job.version}")
    at = kw.pop("at", T0)
    return store.start_job(
        job.process,
        job.timeperiod,
        expected_state=kw.pop("expected_state", job.state),
        expected_version=kw.pop("expected_version", job.version),
        new_state=JobState.IN_PROGRESS,
        event=event("job", job.key, "start", job.state, "in_progress", at=at, **kw),
        uow=uow,
        uow_event=event("uow", uow.id, "create", None, "requested", at=at),
    )


def _job_uows(store, job: Job) -> list[UnitOfWork]:
    query = UowQuery(process=job.process, timeperiod=job.timeperiod, newest_first=False)
    return store.find_uows(query, limit=100).items


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


# -- units of work ------------------------------------------------------------------------------


def test_uow_round_trip(store):
    # given
    uow = make_uow(
        arguments={"x": [1, 2], "y": {"z": "é"}},
        retries=3,
        scheduled_at=T0 + timedelta(seconds=1),
        submitted_at=T0 + timedelta(seconds=2),
    )
    # when
    created = store.create_uow(uow)
    # then
    assert created == uow
    assert store.get_uow(uow.id) == uow
    assert store.find_uow_by_key("site_hourly", "2026010513", "2026010514", "0") == uow
    assert store.find_uow_by_key("site_hourly", "2026010513", "2026010514", "1") is None


def test_uow_window_holds_a_freerun_fire_stamp(store):
    # a freerun's window bounds are its fire instant to the second (14 characters)
    uow = make_uow(
        start="20261101053000", end="20261101053000", kind=UowKind.FREERUN, timeperiod=None
    )
    store.create_uow(uow)
    assert store.find_uow_by_key("site_hourly", "20261101053000", "20261101053000", "0") == uow


def test_uow_unique_key(store):
    # given
    store.create_uow(make_uow())
    # when / then
    with pytest.raises(DuplicateKey):
        store.create_uow(make_uow())
    store.create_uow(make_uow(run_key="1"))
    store.create_uow(make_uow(end="2026010515"))
    store.create_uow(make_uow(process="other"))


def test_create_uows_inserts_a_batch_and_refuses_taken_keys_one_by_one(store):
    # given one unit of work stored already
    store.create_uow(make_uow(start="2026010511", end="2026010512"))
    batch = [
        make_uow(start=f"20260105{hour:02d}", end=f"20260105{hour + 1:02d}")
        for hour in range(10, 14)
    ]
    # when four are created together, the second of them under the taken key
    done = store.create_uows(
        [(uow, event("uow", uow.id, "create", None, "requested")) for uow in batch]
    )
    # then the other three are stored with their events, the taken one refused alone
    assert [type(result) for result in done] == [UnitOfWork, DuplicateKey, UnitOfWork, UnitOfWork]
    for uow, result in zip(batch, done, strict=True):
        if isinstance(result, UnitOfWork):
            assert store.get_uow(uow.id) == result == uow
            assert [e.trigger for e in store.history("uow", uow.id)] == ["create"]
        else:
            assert (
                store.find_uow_by_key(uow.process, uow.start_timeperiod, uow.end_timeperiod, "0").id
                != uow.id
            )
            assert store.history("uow", uow.id) == []
    assert store.create_uows([]) == []
    # and a batch repeating a key inside itself keeps the first
    twins = [make_uow(start="2026010600"), make_uow(start="2026010600")]
    assert [type(r) for r in store.create_uows([(u, None) for u in twins])] == [
        UnitOfWork,
        DuplicateKey,
    ]


def test_create_uows_with_a_bad_value_writes_nothing(store):
    good, naive = make_uow(start="2026010520"), make_uow(start="2026010521")
    naive = UnitOfWork(**{**_fields(naive), "created_at": datetime(2026, 1, 5, 13, 0)})
    with pytest.raises(InvalidInput):
        store.create_uows([(good, None), (naive, None)])
    assert (
        store.find_uow_by_key(good.process, good.start_timeperiod, good.end_timeperiod, "0") is None
    )


def test_uow_get_missing(store):
    with pytest.raises(NotFound):
        store.get_uow("nope")


def test_uow_creation_event(store):
    uow = make_uow()
    store.create_uow(uow, event=event("uow", uow.id, "create", None, "requested"))
    assert [e.trigger for e in store.history("uow", uow.id)] == ["create"]


def test_transition_uow_compare_and_set(store):
    # given
    uow = store.create_uow(make_uow())
    at = T0 + timedelta(seconds=30)
    # when
    claimed = store.transition_uow(
        uow.id,
        expected_state=UowState.REQUESTED,
        new_state=UowState.IN_PROGRESS,
        changes={"worker_id": "w1", "box_id": "b1", "pid": 42, "started_at": at},
        event=event("uow", uow.id, "claim", "requested", "in_progress", at=at),
    )
    # then
    assert claimed.state is UowState.IN_PROGRESS
    assert (claimed.worker_id, claimed.box_id, claimed.pid, claimed.started_at) == (
        "w1",
        "b1",
        42,
        at,
    )
    assert claimed.version == 2 and claimed.updated_at == at
    with pytest.raises(StateConflict) as err:
        store.transition_uow(
            uow.id,
            expected_state=UowState.REQUESTED,
            new_state=UowState.IN_PROGRESS,
            changes={"worker_id": "w2"},
            event=event("uow", uow.id, "claim", "requested", "in_progress"),
        )
    assert err.value.actual == "in_progress"
    assert store.get_uow(uow.id).worker_id == "w1"
    assert len(store.history("uow", uow.id)) == 1


def test_transition_uow_refuses_unchangeable_fields(store):
    uow = store.create_uow(make_uow())
    with pytest.raises(InvalidInput):
        store.transition_uow(
            uow.id,
            expected_state=UowState.REQUESTED,
            new_state=UowState.IN_PROGRESS,
            changes={"process": "evil"},
            event=event("uow", uow.id, "claim", "requested", "in_progress"),
        )
    assert store.get_uow(uow.id).state is UowState.REQUESTED


def _step(uow, src: UowState, dst: UowState, trigger: str, at: datetime = T0, **changes):
    return UowTransition(
        uow_id=uow.id,
        expected_state=src,
        new_state=dst,
        event=event("uow", uow.id, trigger, src.value, dst.value, at=at),
        changes=changes or None,
    )


def _claimed_uow(store, **fields) -> UnitOfWork:
    """A new unit of work, moved to in_progress."""
    uow = store.create_uow(make_uow(**fields))
    return store.transition_uow(
        uow.id,
        expected_state=UowState.REQUESTED,
        new_state=UowState.IN_PROGRESS,
        event=event("uow", uow.id, "claim", "requested", "in_progress"),
    )


def test_transition_uows_applies_each_step_and_refuses_each_on_its_own(store):
    # given one unit of work in progress, one requested, one claimed by someone else
    running = _claimed_uow(store, start="2026010510")
    waiting = store.create_uow(make_uow(start="2026010511"))
    taken = store.create_uow(make_uow(start="2026010512"))
    store.transition_uow(
        taken.id,
        expected_state=UowState.REQUESTED,
        new_state=UowState.IN_PROGRESS,
        changes={"worker_id": "other"},
        event=event("uow", taken.id, "claim", "requested", "in_progress"),
    )
    at = T0 + timedelta(seconds=9)
    # when: finish the first, claim the second and the third, and one that does not exist
    done = store.transition_uows(
        [
            _step(running, UowState.IN_PROGRESS, UowState.PROCESSED, "succeed", at, exit_code=0),
            _step(waiting, UowState.REQUESTED, UowState.IN_PROGRESS, "claim", at, worker_id="w1"),
            _step(taken, UowState.REQUESTED, UowState.IN_PROGRESS, "claim", at, worker_id="w1"),
            UowTransition(
                uow_id="ghost",
                expected_state=UowState.REQUESTED,
                new_state=UowState.IN_PROGRESS,
                event=event("uow", "ghost", "claim", "requested", "in_progress"),
            ),
        ]
    )
    # then the applied ones are stored with their events, the refused ones changed nothing
    assert [type(result) for result in done] == [UnitOfWork, UnitOfWork, StateConflict, NotFound]
    assert done[0].state is UowState.PROCESSED and done[0].exit_code == 0
    assert done[1].state is UowState.IN_PROGRESS and done[1].worker_id == "w1"
    assert done[1].updated_at == at
    assert done[2].actual == "in_progress"
    assert store.get_uow(running.id).state is UowState.PROCESSED
    assert store.get_uow(waiting.id).state is UowState.IN_PROGRESS
    assert store.get_uow(taken.id).worker_id == "other"
    assert [e.trigger for e in store.history("uow", running.id)] == ["claim", "succeed"]
    assert [e.trigger for e in store.history("uow", waiting.id)] == ["claim"]
    assert [e.trigger for e in store.history("uow", taken.id)] == ["claim"]


def test_transition_uows_with_a_bad_change_writes_nothing(store):
    first = store.create_uow(make_uow(start="2026010510"))
    second = store.create_uow(make_uow(start="2026010511"))
    with pytest.raises(InvalidInput):
        store.transition_uows(
            [
                _step(first, UowState.REQUESTED, UowState.IN_PROGRESS, "claim"),
                _step(second, UowState.REQUESTED, UowState.IN_PROGRESS, "claim", process="evil"),
            ]
        )
    assert store.get_uow(first.id).state is UowState.REQUESTED
    assert store.get_uow(second.id).state is UowState.REQUESTED
    assert store.history("uow", first.id) == []


def test_update_uow_without_state_change(store):
    # given
    uow = store.create_uow(make_uow())
    beat = T0 + timedelta(seconds=5)
    # when
    updated = store.update_uow(
        uow.id,
        expected_state=UowState.REQUESTED,
        changes={"end_timeperiod": "2026010515", "heartbeat_at": beat},
    )
    # then
    assert updated.end_timeperiod == "2026010515" and updated.heartbeat_at == beat
    assert updated.version == uow.version + 1
    assert store.history("uow", uow.id) == []
    with pytest.raises(StateConflict):
        store.update_uow(uow.id, expected_state=UowState.IN_PROGRESS, changes={"pid": 1})


def test_update_uow_output_and_error_keep_text(store):
    uow = store.create_uow(make_uow())
    text = "line\n" * 2000 + "ünïcode ✓"
    store.update_uow(uow.id, expected_state=UowState.REQUESTED, changes={"output": text})
    assert store.get_uow(uow.id).output == text


def test_find_uows_filters_and_pagination(store):
    # given 12 units of work on two processes, some failed with a retry time
    ids = []
    for i in range(12):
        process = "a" if i % 2 else "b"
        uow = store.create_uow(
            make_uow(process=process, start=f"20260105{i:02d}", kind=UowKind.FREERUN)
        )
        ids.append(uow.id)
    failing = store.get_uow(ids[3])
    store.transition_uow(
        failing.id,
        expected_state=UowState.REQUESTED,
        new_state=UowState.IN_PROGRESS,
        event=event("uow", failing.id, "claim", "requested", "in_progress"),
    )
    store.transition_uow(
        failing.id,
        expected_state=UowState.IN_PROGRESS,
        new_state=UowState.INVALID,
        changes={"retry_at": T0 + timedelta(minutes=1)},
        event=event("uow", failing.id, "fail", "in_progress", "invalid"),
    )
    # when
    newest = _all_pages(lambda **kw: store.find_uows(UowQuery(), **kw), limit=5)
    oldest = _all_pages(lambda **kw: store.find_uows(UowQuery(newest_first=False), **kw), limit=5)
    only_a = store.find_uows(UowQuery(process="a"), limit=100).items
    invalid_due = store.find_uows(
        UowQuery(states=frozenset({UowState.INVALID}), retry_due_before=T0 + timedelta(minutes=2))
    ).items
    invalid_not_due = store.find_uows(
        UowQuery(states=frozenset({UowState.INVALID}), retry_due_before=T0)
    ).items
    # then
    assert [u.id for u in newest] == sorted(ids, reverse=True)
    assert [u.id for u in oldest] == sorted(ids)
    assert {u.process for u in only_a} == {"a"} and len(only_a) == 6
    assert [u.id for u in invalid_due] == [failing.id]
    assert invalid_not_due == []
    assert store.find_uows(UowQuery(kind=UowKind.ADHOC)).items == []
    by_tp = store.find_uows(UowQuery(process="a", timeperiod="2026010503")).items
    assert [u.id for u in by_tp] == [failing.id]


def test_find_uows_stale_queries(store):
    # given: one submitted long ago, one recently; one beat long ago, one never
    old = store.create_uow(make_uow(start="2026010501", submitted_at=T0 - timedelta(hours=2)))
    store.create_uow(make_uow(start="2026010502", submitted_at=T0))
    beat = store.create_uow(make_uow(start="2026010503", heartbeat_at=T0 - timedelta(minutes=5)))
    never = store.create_uow(make_uow(start="2026010504"))
    fresh = store.create_uow(make_uow(start="2026010505", heartbeat_at=T0))
    # when
    stale_submit = store.find_uows(UowQuery(submitted_before=T0 - timedelta(hours=1))).items
    stale_beat = store.find_uows(UowQuery(heartbeat_before=T0 - timedelta(minutes=1))).items
    # then
    assert [u.id for u in stale_submit] == [old.id]
    assert {u.id for u in stale_beat} >= {beat.id, never.id}
    assert fresh.id not in {u.id for u in stale_beat}


def test_count_uows(store):
    store.create_uow(make_uow(process="a"))
    store.create_uow(make_uow(process="a", run_key="1"))
    store.create_uow(make_uow(process="b"))
    assert store.count_uows() == {("a", UowState.REQUESTED): 2, ("b", UowState.REQUESTED): 1}
    assert store.count_uows("b") == {("b", UowState.REQUESTED): 1}
    assert store.count_uows(["b", "c"]) == {("b", UowState.REQUESTED): 1}
    assert store.count_uows(iter(["a", "b"])) == store.count_uows()
    assert store.count_uows([]) == {}


def test_count_uows_of_some_states(store):
    # given a requested, an in-progress and a processed unit of work of one process
    store.create_uow(make_uow(process="a"))
    _claimed_uow(store, process="a", run_key="1")
    done = _claimed_uow(store, process="a", run_key="2")
    store.transition_uow(
        done.id,
        expected_state=UowState.IN_PROGRESS,
        new_state=UowState.PROCESSED,
        event=event("uow", done.id, "succeed", "in_progress", "processed"),
    )
    # when only what is in flight is counted
    active = {UowState.REQUESTED, UowState.IN_PROGRESS, UowState.INVALID}
    # then the processed one is left out
    assert store.count_uows(["a", "b"], states=active) == {
        ("a", UowState.REQUESTED): 1,
        ("a", UowState.IN_PROGRESS): 1,
    }
    assert store.count_uows("a", states=[UowState.PROCESSED]) == {("a", UowState.PROCESSED): 1}
    assert store.count_uows(states=[]) == {}


# -- history ------------------------------------------------------------------------------------


def test_history_oldest_first_and_limited(store):
    # given
    store.insert_process(make_record("p"))
    for i in range(7):
        store.append_event(
            event(
                "process",
                "p",
                f"edit{i}",
                None,
                None,
                at=T0 + timedelta(seconds=i),
                details={"n": i},
            )
        )
    # when
    everything = store.history("process", "p")
    latest = store.history("process", "p", limit=3)
    # then
    assert [e.trigger for e in everything] == [f"edit{i}" for i in range(7)]
    assert [e.trigger for e in latest] == ["edit4", "edit5", "edit6"]
    assert latest[-1].details == {"n": 6}
    assert store.history("process", "other") == []


def test_history_needs_an_existing_entity(store):
    with pytest.raises(NotFound):
        store.append_event(event("process", "ghost", "edit", None, None))
    with pytest.raises(NotFound):
        store.append_event(event("job", "ghost/2026010513", "edit", None, None))


def test_update_uow_keeps_updated_at(store):
    uow = store.create_uow(make_uow())
    updated = store.update_uow(
        uow.id, expected_state=UowState.REQUESTED, changes={"heartbeat_at": T0 + timedelta(1)}
    )
    assert updated.updated_at == uow.updated_at


# -- fires --------------------------------------------------------------------------------------


def test_fire_recorded_once(store):
    # given
    at = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    fire = FireRecord(process="cron", scheduled_at=at, outcome=FireOutcome.FIRED, recorded_at=T0)
    # when / then
    assert store.record_fire(fire) is True
    assert store.record_fire(fire) is False
    assert (
        store.record_fire(
            FireRecord(
                process="cron",
                scheduled_at=at,
                outcome=FireOutcome.SKIPPED,
                recorded_at=T0,
            )
        )
        is False
    )
    assert store.list_fires("cron")[0].outcome is FireOutcome.FIRED


def test_fire_last_and_list_and_link(store):
    # given
    base = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    for i in range(5):
        store.record_fire(
            FireRecord(
                process="cron",
                scheduled_at=base + timedelta(minutes=i),
                outcome=FireOutcome.SKIPPED if i == 2 else FireOutcome.FIRED,
                recorded_at=T0,
                reason="max_active reached" if i == 2 else "",
            )
        )
    # when
    store.set_fire_uow("cron", base + timedelta(minutes=4), "u4")
    # then
    last = store.last_fire("cron")
    assert last.scheduled_at == base + timedelta(minutes=4) and last.uow_id == "u4"
    fires = store.list_fires("cron", limit=3)
    assert [f.scheduled_at for f in fires] == [base + timedelta(minutes=i) for i in (4, 3, 2)]
    assert fires[2].reason == "max_active reached"
    assert store.last_fire("other") is None


def test_fires_recorded_and_linked_in_batches(store):
    # given one fire recorded already
    base = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    at = [base + timedelta(minutes=i) for i in range(4)]

    def fire(process: str, when: datetime) -> FireRecord:
        return FireRecord(
            process=process, scheduled_at=when, outcome=FireOutcome.FIRED, recorded_at=T0
        )

    store.record_fire(fire("cron", at[1]))
    # when a pass records four, one of them the recorded one, and links three
    recorded = store.record_fires(
        [fire("cron", at[0]), fire("cron", at[1]), fire("cron", at[2]), fire("other", at[0])]
    )
    store.set_fire_uows([("cron", at[0], "u0"), ("cron", at[2], "u2"), ("other", at[0], "o0")])
    store.set_fire_uows([("ghost", at[3], "g3")])  # no such fire: nothing happens
    # then each is recorded once, the one recorded before is passed over, the links hold
    assert recorded == [True, False, True, True]
    assert [(f.scheduled_at, f.uow_id) for f in store.list_fires("cron")] == [
        (at[2], "u2"),
        (at[1], None),
        (at[0], "u0"),
    ]
    assert store.last_fire("other").uow_id == "o0"
    assert store.last_fire("ghost") is None
    assert store.record_fires([]) == []
    store.set_fire_uows([])


# -- supervised processes -----------------------------------------------------------------------


def _supervised(box="b1", process="worker_a", **kw) -> SupervisedProcess:
    return SupervisedProcess(box_id=box, process=process, updated_at=T0, **kw)


def test_supervised_ensure_is_idempotent(store):
    first = store.ensure_supervised(_supervised())
    again = store.ensure_supervised(_supervised(desired=False))
    assert again == first and again.desired is True
    store.ensure_supervised(_supervised(box="b2"))
    assert [s.box_id for s in store.list_supervised()] == ["b1", "b2"]
    assert [s.box_id for s in store.list_supervised("b2")] == ["b2"]


def test_supervised_transition_and_desired(store):
    # given
    store.ensure_supervised(_supervised())
    at = T0 + timedelta(seconds=1)
    # when
    started = store.transition_supervised(
        "b1",
        "worker_a",
        expected_state=SupervisedState.STOPPED,
        new_state=SupervisedState.STARTING,
        changes={"pid": 4242, "create_time": 1767618000.25, "started_at": at},
        event=event("supervised", "b1/worker_a", "start", "stopped", "starting", at=at),
    )
    store.set_desired(
        "b1", "worker_a", False, event=event("supervised", "b1/worker_a", "stop", None, None)
    )
    store.update_supervised_stats("b1", "worker_a", {"rss": 1024, "cpu_percent": 1.5}, at)
    # then
    got = store.get_supervised("b1", "worker_a")
    assert started.state is SupervisedState.STARTING
    assert (got.pid, got.create_time, got.started_at) == (4242, 1767618000.25, at)
    assert got.desired is False and got.stats == {"rss": 1024, "cpu_percent": 1.5}
    assert [e.trigger for e in store.history("supervised", "b1/worker_a")] == ["start", "stop"]
    with pytest.raises(StateConflict):
        store.transition_supervised(
            "b1",
            "worker_a",
            expected_state=SupervisedState.STOPPED,
            new_state=SupervisedState.STARTING,
            event=event("supervised", "b1/worker_a", "start", "stopped", "starting"),
        )
    store.delete_supervised("b1", "worker_a")
    with pytest.raises(NotFound):
        store.get_supervised("b1", "worker_a")


# -- workers ------------------------------------------------------------------------------------


def test_workers_register_beat_and_state(store):
    # given
    worker = WorkerRecord(
        worker_id="w1", process="a", box_id="b1", pid=10, started_at=T0, heartbeat_at=T0
    )
    store.save_worker(worker)
    store.save_worker(
        WorkerRecord(
            worker_id="w2", process="b", box_id="b2", pid=11, started_at=T0, heartbeat_at=T0
        )
    )
    # when
    store.beat_worker("w1", T0 + timedelta(seconds=5), current_uow="u1")
    # then
    (w1,) = store.list_workers(box_id="b1")
    assert w1.heartbeat_at == T0 + timedelta(seconds=5) and w1.current_uow == "u1"
    assert [w.worker_id for w in store.list_workers()] == ["w1", "w2"]
    assert [w.worker_id for w in store.list_workers(process="b")] == ["w2"]
    assert store.set_worker_state("w1", "lost", expected_state="alive") is True
    assert store.set_worker_state("w1", "lost", expected_state="alive") is False
    store.delete_worker("w1")
    assert [w.worker_id for w in store.list_workers()] == ["w2"]
    with pytest.raises(NotFound):
        store.beat_worker("w1", T0)


# -- races ---------------------------------------------------------------------------------------


def _race_threads(n: int, action) -> list[object]:
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = action(i)
        except Exception as exc:  # noqa: BLE001 - the test inspects what each racer got
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_race_threads_transition_job_exactly_one_wins(concurrent_store_uri):
    # given
    setup = open_store(concurrent_store_uri)
    job = setup.create_job(make_job())
    stores = [open_store(concurrent_store_uri) for _ in range(6)]

    # when six threads claim the same job at once
    def claim(i):
        return stores[i].transition_job(
            job.process,
            job.timeperiod,
            expected_state=JobState.EMBRYO,
            new_state=JobState.IN_PROGRESS,
            changes={"uow_id": f"u{i}"},
            event=event("job", job.key, "start", "embryo", "in_progress", actor=f"t{i}"),
        )

    results = _race_threads(6, claim)
    # then
    winners = [r for r in results if isinstance(r, Job)]
    losers = [r for r in results if isinstance(r, StateConflict)]
    assert len(winners) == 1 and len(losers) == 5, results
    stored = setup.get_job(job.process, job.timeperiod)
    assert stored.uow_id == winners[0].uow_id
    assert len(setup.history("job", job.key)) == 1
    for s in [setup, *stores]:
        s.close()


@pytest.mark.parametrize("windows", ["same", "different"])
def test_race_threads_start_job_exactly_one_wins(concurrent_store_uri, windows):
    # given an embryo job
    setup = open_store(concurrent_store_uri)
    job = setup.create_job(make_job())
    stores = [open_store(concurrent_store_uri) for _ in range(6)]

    # when six threads start it at once, each with a unit of work of the same key, or each
    # with its own window (a continuous run's end is the hour after the racer's now)
    def start(i):
        end = "2026010514" if windows == "same" else f"202601{15 + i}00"
        return _start(stores[i], job, make_uow(run_key="r0v1", end=end), actor=f"t{i}")

    results = _race_threads(6, start)
    # then one won, the others lost the compare-and-set, and one unit of work exists: linked
    winners = [r for r in results if isinstance(r, tuple)]
    losers = [r for r in results if isinstance(r, StateConflict)]
    assert len(winners) == 1 and len(losers) == 5, results
    stored = setup.get_job(job.process, job.timeperiod)
    ((won, linked),) = winners
    assert stored == won and stored.uow_id == linked.id
    assert _job_uows(setup, job) == [linked]
    assert len(setup.history("job", job.key)) == 1
    for s in [setup, *stores]:
        s.close()


def test_race_threads_create_once(concurrent_store_uri):
    # given
    stores = [open_store(concurrent_store_uri) for _ in range(6)]
    at = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)

    # when six threads create the same job, the same unit of work and the same fire
    def create(i):
        outcome = []
        for action in (
            lambda: stores[i].create_job(make_job()),
            lambda: stores[i].create_uow(make_uow()),
            lambda: stores[i].record_fire(
                FireRecord(
                    process="cron", scheduled_at=at, outcome=FireOutcome.FIRED, recorded_at=T0
                )
            ),
        ):
            try:
                outcome.append(action())
            except DuplicateKey as exc:
                outcome.append(exc)
        return outcome

    results = _race_threads(6, create)
    # then
    assert sum(isinstance(r[0], Job) for r in results) == 1, results
    assert sum(isinstance(r[1], UnitOfWork) for r in results) == 1, results
    assert sum(r[2] is True for r in results) == 1, results
    for s in stores:
        s.close()


def test_race_threads_ensure_jobs_never_duplicates(concurrent_store_uri):
    stores = [open_store(concurrent_store_uri) for _ in range(4)]
    jobs = [make_job(timeperiod=f"202601{d:02d}{h:02d}") for d in (5, 6) for h in range(24)]
    created = _race_threads(4, lambda i: stores[i].ensure_jobs(jobs))
    assert all(isinstance(c, int) for c in created), created
    assert sum(created) == 48
    assert stores[0].count_jobs() == {("site_hourly", JobState.EMBRYO): 48}
    for s in stores:
        s.close()


def _process_racer(uri: str, job_key: tuple[str, str], barrier, results, index: int) -> None:
    store = open_store(uri)
    try:
        barrier.wait(30)
        store.transition_job(
            job_key[0],
            job_key[1],
            expected_state=JobState.EMBRYO,
            new_state=JobState.IN_PROGRESS,
            changes={"uow_id": f"p{index}"},
            event=event("job", "/".join(job_key), "start", "embryo", "in_progress"),
        )
        results[index] = "won"
    except StateConflict:
        results[index] = "lost"
    except Exception as exc:  # noqa: BLE001 - reported back to the parent test
        results[index] = f"error: {exc!r}"
    finally:
        store.close()


@pytest.mark.slow
def test_race_processes_transition_job_exactly_one_wins(concurrent_store_uri):
    # given
    setup = open_store(concurrent_store_uri)
    job = setup.create_job(make_job())
    ctx = multiprocessing.get_context("spawn")
    n = 4
    barrier = ctx.Barrier(n)
    manager = ctx.Manager()
    results = manager.list([None] * n)
    # when four OS processes try the same transition at once
    procs = [
        ctx.Process(
            target=_process_racer,
            args=(concurrent_store_uri, (job.process, job.timeperiod), barrier, results, i),
        )
        for i in range(n)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(90)
    # then
    outcome = list(results)
    manager.shutdown()
    assert sorted(outcome) == ["lost"] * (n - 1) + ["won"], outcome
    assert len(setup.history("job", job.key)) == 1
    assert setup.get_job(job.process, job.timeperiod).state is JobState.IN_PROGRESS
    setup.close()


# -- the embedded queue --------------------------------------------------------------------------

VISIBILITY = timedelta(seconds=30)


def _claim(store, consumer: str = "c1", *, at: datetime = T0, queue: str = "q", **kw):
    return store.queue_claim(
        queue, consumer, now=at, visibility=kw.pop("visibility", VISIBILITY), **kw
    )


def test_queue_put_returns_ids_in_publish_order(store):
    # given one batch and then single messages published right after each other
    batch = store.queue_put("q", [b"a", b"b", b"c"], available_at=T0)
    singles = [store.queue_put("q", [bytes([i])], available_at=T0)[0] for i in range(20)]
    # then ids sort in publish order, even within one millisecond
    ids = batch + singles
    assert len(set(ids)) == 23 and ids == sorted(ids)
    assert store.queue_put("q", [], available_at=T0) == []


def test_queue_claim_takes_oldest_first_for_one_consumer(store):
    # given
    ids = store.queue_put("q", [b"m0", b"m1", b"m2", b"m3", b"m4"], available_at=T0)
    store.queue_put("other", [b"x"], available_at=T0)
    # when
    first = _claim(store, limit=3)
    second = _claim(store, "c2", limit=3)
    # then
    assert [m.id for m in first] == ids[:3] and [m.body for m in first] == [b"m0", b"m1", b"m2"]
    assert [m.id for m in second] == ids[3:]
    message = first[0]
    assert message.queue == "q" and message.deliveries == 1 and message.claimed_by == "c1"
    assert message.available_at == T0 and message.claimed_until == T0 + VISIBILITY
    assert message.created_at.tzinfo is not None
    assert _claim(store) == []


def test_queue_body_keeps_any_bytes(store):
    body = bytes(range(256)) * 400  # 100 KiB, more than a MySQL BLOB holds
    store.queue_put("q", [body, b""], available_at=T0)
    assert [m.body for m in _claim(store, limit=2)] == [body, b""]


def test_queue_delayed_message_invisible_until_due(store):
    # given
    store.queue_put("q", [b"later"], available_at=T0 + timedelta(seconds=10))
    # when / then (boundaries a second apart: nx-27017 compares instants to the second)
    assert _claim(store, at=T0 + timedelta(seconds=9)) == []
    assert [m.body for m in _claim(store, at=T0 + timedelta(seconds=10))] == [b"later"]


def test_queue_expired_claim_is_delivered_again(store):
    # given c1 claimed the message and went quiet
    [message] = store.queue_put("q", [b"m"], available_at=T0)
    _claim(store, "c1")
    # when the visibility timeout passes
    assert _claim(store, "c2", at=T0 + VISIBILITY - timedelta(seconds=1)) == []
    [again] = _claim(store, "c2", at=T0 + VISIBILITY)
    # then c2 holds it, counted as a second delivery, and c1's claim is lost
    assert again.id == message and again.deliveries == 2 and again.claimed_by == "c2"
    assert store.queue_ack(message, "c1") is False
    assert store.queue_ack(message, "c2") is True


def test_queue_ack_only_by_the_claim_holder(store):
    # given
    [message] = store.queue_put("q", [b"m"], available_at=T0)
    _claim(store, "c1")
    # when / then
    assert store.queue_ack(message, "c2") is False
    assert store.queue_depth("q", now=T0) == {"ready": 0, "delayed": 0, "claimed": 1}
    assert store.queue_ack(message, "c1") is True
    assert store.queue_ack(message, "c1") is False
    assert store.queue_ack("nosuchmessage", "c1") is False
    assert store.queue_depth("q", now=T0) == {"ready": 0, "delayed": 0, "claimed": 0}


def test_queue_ack_puts_messages_with_it(store):
    # given a claimed message
    [message] = store.queue_put("q", [b"m"], available_at=T0)
    _claim(store, "c1")
    # when its holder acks it with two messages for other queues
    acked = store.queue_ack(
        message, "c1", then_put=[("status", b"s1"), ("other", b"o1")], available_at=T0
    )
    # then the message is gone and the others are ready to claim
    assert acked is True
    assert store.queue_depth("q", now=T0)["claimed"] == 0
    assert [m.body for m in _claim(store, "c2", queue="status")] == [b"s1"]
    assert [m.body for m in _claim(store, "c2", queue="other")] == [b"o1"]
    # and a lost claim still puts them (a status is a hint; the truth is in the store)
    assert store.queue_ack(message, "c1", then_put=[("status", b"s2")], available_at=T0) is False
    assert [m.body for m in _claim(store, "c3", queue="status")] == [b"s2"]
    with pytest.raises(ValueError, match="available_at"):
        store.queue_ack(message, "c1", then_put=[("status", b"s3")])


def test_queue_ack_many_deletes_only_what_the_consumer_holds(store):
    # given three messages claimed by c1 and one by c2
    ids = store.queue_put("q", [b"a", b"b", b"c", b"d"], available_at=T0)
    _claim(store, "c1", limit=3)
    _claim(store, "c2")
    # when c1 acks its three, c2's and an unknown id
    acked = store.queue_ack_many([*ids, "nosuchmessage", ids[0]], "c1")
    # then its three are gone and c2's claim stands
    assert acked == 3
    assert store.queue_depth("q", now=T0) == {"ready": 0, "delayed": 0, "claimed": 1}
    assert store.queue_ack_many([], "c1") == 0
    assert store.queue_ack(ids[3], "c2") is True


def _settlement(consumer: str = "c1", **fields) -> QueueSettlement:
    return QueueSettlement(consumer=consumer, now=T0, visibility=VISIBILITY, **fields)


def test_settle_uows_writes_the_steps_and_the_queue_work_together(store):
    # given a unit of work in progress and a requested one, whose messages c1 holds, and two
    # more messages waiting
    running = _claimed_uow(store, start="2026010510")
    waiting = store.create_uow(make_uow(start="2026010511"))
    first, second, third, fourth = store.queue_put("q", [b"1", b"2", b"3", b"4"], available_at=T0)
    _claim(store, "c1", limit=2)
    at = T0 + timedelta(seconds=9)
    # when c1 finishes the first, claims the second unit of work, acks the first message, puts
    # a status message and claims one message more, all at once
    done, settled = store.settle_uows(
        [
            _step(running, UowState.IN_PROGRESS, UowState.PROCESSED, "succeed", at, exit_code=0),
            _step(waiting, UowState.REQUESTED, UowState.IN_PROGRESS, "claim", at, worker_id="c1"),
        ],
        _settlement(ack=(first,), put=(("status", b"s1"),), claim_queue="q", claim_limit=1),
    )
    # then both steps are stored with their events
    assert [type(result) for result in done] == [UnitOfWork, UnitOfWork]
    assert store.get_uow(running.id).state is UowState.PROCESSED
    assert store.get_uow(waiting.id).worker_id == "c1"
    assert [e.trigger for e in store.history("uow", running.id)] == ["claim", "succeed"]
    # and the first message is gone, the third is c1's, the fourth waits, the status is ready
    assert settled.acked == 1
    assert [(m.id, m.body, m.claimed_by) for m in settled.claimed] == [(third, b"3", "c1")]
    assert settled.claimed[0].claimed_until == T0 + VISIBILITY
    assert store.queue_depth("q", now=T0) == {"ready": 1, "delayed": 0, "claimed": 2}
    assert [m.id for m in _claim(store, "c2")] == [fourth]
    assert store.queue_ack(second, "c1") and store.queue_ack(third, "c1")
    assert [m.body for m in _claim(store, "c2", queue="status")] == [b"s1"]


def test_settle_uows_does_the_queue_work_when_the_steps_are_refused(store):
    # given a unit of work claimed by another worker, and a message whose claim c1 lost to c2
    taken = _claimed_uow(store)
    [message] = store.queue_put("q", [b"m"], available_at=T0)
    _claim(store, "c2")
    # when c1 settles a claim of it, and when it settles with no step at all
    done, settled = store.settle_uows(
        [_step(taken, UowState.REQUESTED, UowState.IN_PROGRESS, "claim")],
        _settlement(ack=(message,), put=(("status", b"s1"),), claim_queue="q", claim_limit=2),
    )
    nothing, put_only = store.settle_uows([], _settlement(put=(("status", b"s2"),)))
    # then the step is refused, the lost claim is not acked, and the status messages are put
    assert [type(result) for result in done] == [StateConflict]
    assert (settled.acked, settled.claimed) == (0, ())
    assert (nothing, put_only.acked, put_only.claimed) == ([], 0, ())
    assert store.queue_depth("q", now=T0)["claimed"] == 1
    assert [m.body for m in _claim(store, "c3", queue="status", limit=5)] == [b"s1", b"s2"]


def test_settle_uows_with_a_bad_change_writes_nothing(store):
    # given a unit of work and a message c1 holds
    uow = store.create_uow(make_uow())
    [message] = store.queue_put("q", [b"m"], available_at=T0)
    _claim(store, "c1")
    # when a step would change what no step may change
    with pytest.raises(InvalidInput):
        store.settle_uows(
            [_step(uow, UowState.REQUESTED, UowState.IN_PROGRESS, "claim", process="evil")],
            _settlement(ack=(message,), put=(("status", b"s1"),)),
        )
    # then neither the unit of work nor the queues changed
    assert store.get_uow(uow.id).state is UowState.REQUESTED
    assert store.queue_depth("q", now=T0)["claimed"] == 1
    assert store.queue_depth("status", now=T0)["ready"] == 0


def test_queue_ack_after_expiry_while_nobody_took_it(store):
    # given c1's claim expired, and no other consumer claimed the message since
    [message] = store.queue_put("q", [b"m"], available_at=T0)
    _claim(store, "c1")
    assert store.queue_depth("q", now=T0 + VISIBILITY)["ready"] == 1
    # when / then c1 still holds it: the late ack counts
    assert store.queue_ack(message, "c1") is True
    assert _claim(store, "c2", at=T0 + VISIBILITY) == []


def test_queue_release_with_delay(store):
    # given
    [message] = store.queue_put("q", [b"m"], available_at=T0)
    _claim(store, "c1")
    # when
    later = T0 + timedelta(seconds=10)
    assert store.queue_release(message, "c2", available_at=T0) is False
    assert store.queue_release(message, "c1", available_at=later) is True
    # then
    assert store.queue_depth("q", now=T0) == {"ready": 0, "delayed": 1, "claimed": 0}
    assert _claim(store, "c2") == []
    [again] = _claim(store, "c2", at=later)
    assert again.id == message and again.deliveries == 2 and again.available_at == later
    assert store.queue_release(message, "c1", available_at=T0) is False


def test_queue_release_to_another_queue(store):
    # given
    [message] = store.queue_put("q", [b"bad"], available_at=T0)
    _claim(store, "c1")
    # when the consumer dead-letters it
    assert store.queue_release(message, "c1", available_at=T0, to_queue="q.dead") is True
    # then
    assert _claim(store, "c2") == []
    [dead] = _claim(store, "c2", queue="q.dead")
    assert (dead.id, dead.queue, dead.body) == (message, "q.dead", b"bad")
    assert store.queue_depth("q", now=T0)["ready"] == 0


def test_queue_extend_keeps_the_claim(store):
    # given
    [message] = store.queue_put("q", [b"m"], available_at=T0)
    _claim(store, "c1", visibility=timedelta(seconds=10))
    # when
    assert store.queue_extend(message, "c2", until=T0 + timedelta(seconds=60)) is False
    assert store.queue_extend(message, "c1", until=T0 + timedelta(seconds=60)) is True
    # then nobody else gets it until the new expiry
    assert _claim(store, "c2", at=T0 + timedelta(seconds=59)) == []
    assert [m.id for m in _claim(store, "c2", at=T0 + timedelta(seconds=60))] == [message]
    assert store.queue_extend(message, "c1", until=T0 + timedelta(seconds=90)) is False


def test_queue_depth_counts_ready_delayed_and_claimed(store):
    # given 3 ready, 2 delayed; then one claimed, one claimed and expired
    store.queue_put("q", [b"r1", b"r2", b"r3"], available_at=T0)
    store.queue_put("q", [b"d1", b"d2"], available_at=T0 + timedelta(minutes=5))
    store.queue_put("other", [b"x"], available_at=T0)
    _claim(store, "c1", visibility=timedelta(seconds=5))
    _claim(store, "c2", visibility=timedelta(minutes=1))
    # when / then
    assert store.queue_depth("q", now=T0) == {"ready": 1, "delayed": 2, "claimed": 2}
    at = T0 + timedelta(seconds=5)
    assert store.queue_depth("q", now=at) == {"ready": 2, "delayed": 2, "claimed": 1}
    at = T0 + timedelta(minutes=5)
    assert store.queue_depth("q", now=at) == {"ready": 5, "delayed": 0, "claimed": 0}
    assert store.queue_depth("empty", now=T0) == {"ready": 0, "delayed": 0, "claimed": 0}
    # and several queues in one call give what each would
    names = ["q", "other", "empty", "q"]
    for when in (T0, T0 + timedelta(seconds=5)):
        assert store.queue_depths(names, now=when) == {
            name: store.queue_depth(name, now=when) for name in ("q", "other", "empty")
        }
    assert store.queue_depths([], now=T0) == {}


def test_queue_purge_drops_claimed_and_unclaimed(store):
    # given
    store.queue_put("q", [b"1", b"2", b"3"], available_at=T0)
    store.queue_put("q", [b"later"], available_at=T0 + timedelta(hours=1))
    [claimed] = _claim(store)
    store.queue_put("other", [b"x"], available_at=T0)
    # when / then
    assert store.queue_purge("q") == 4
    assert store.queue_purge("q") == 0
    assert store.queue_ack(claimed.id, "c1") is False
    assert store.queue_depth("other", now=T0)["ready"] == 1


def test_queue_refuses_bad_arguments(store):
    store.queue_put("q", [b"m"], available_at=T0)
    naive = datetime(2026, 1, 5, 13, 0)
    with pytest.raises(InvalidInput) as err:
        store.queue_put("q", [b"m"], available_at=naive)
    assert err.value.field == "available_at"
    with pytest.raises(InvalidInput) as err:
        _claim(store, at=naive)
    assert err.value.field == "now"
    with pytest.raises(InvalidInput) as err:
        _claim(store, limit=0)
    assert err.value.field == "limit"
    with pytest.raises(InvalidInput) as err:
        _claim(store, visibility=timedelta(0))
    assert err.value.field == "visibility"
    assert store.queue_depth("q", now=T0)["ready"] == 1


#: Messages the queue races hand out; every one must be delivered exactly once.
RACE_MESSAGES = 200


def _drain(store, consumer: str, limit: int) -> list[str]:
    """Claim until the queue is empty; the ids this consumer got."""
    got: list[str] = []
    while batch := store.queue_claim(
        "q", consumer, now=T0, visibility=timedelta(minutes=10), limit=limit
    ):
        got.extend(m.id for m in batch)
    return got


def test_race_threads_queue_claim_delivers_each_message_once(concurrent_store_uri):
    # given
    setup = open_store(concurrent_store_uri)
    ids = setup.queue_put("q", [str(i).encode() for i in range(RACE_MESSAGES)], available_at=T0)
    stores = [open_store(concurrent_store_uri) for _ in range(6)]
    # when six threads drain the queue at once, some a message at a time, some in batches
    results = _race_threads(6, lambda i: _drain(stores[i], f"t{i}", 1 + i % 3))
    # then
    assert all(isinstance(r, list) for r in results), results
    got = [message_id for r in results for message_id in r]
    assert len(got) == RACE_MESSAGES and sorted(got) == sorted(ids)
    assert setup.queue_depth("q", now=T0) == {"ready": 0, "delayed": 0, "claimed": RACE_MESSAGES}
    for s in [setup, *stores]:
        s.close()


def _queue_racer(uri: str, barrier, results, index: int) -> None:
    store = open_store(uri)
    try:
        barrier.wait(30)
        results[index] = _drain(store, f"p{index}", 1 + index % 2)
    except Exception as exc:  # noqa: BLE001 - reported back to the parent test
        results[index] = f"error: {exc!r}"
    finally:
        store.close()


@pytest.mark.slow
def test_race_processes_queue_claim_delivers_each_message_once(concurrent_store_uri):
    # given
    setup = open_store(concurrent_store_uri)
    ids = setup.queue_put("q", [str(i).encode() for i in range(RACE_MESSAGES)], available_at=T0)
    ctx = multiprocessing.get_context("spawn")
    n = 4
    barrier = ctx.Barrier(n)
    manager = ctx.Manager()
    results = manager.list([None] * n)
    # when four OS processes drain the queue at once
    procs = [
        ctx.Process(target=_queue_racer, args=(concurrent_store_uri, barrier, results, i))
        for i in range(n)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(90)
    # then
    outcome = list(results)
    manager.shutdown()
    assert all(isinstance(r, list) for r in outcome), outcome
    got = [message_id for r in outcome for message_id in r]
    assert len(got) == RACE_MESSAGES and sorted(got) == sorted(ids)
    setup.close()
