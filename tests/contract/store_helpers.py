"""What the store contract suite (``tests/contract/test_store_*.py``) builds its tests from:
records, jobs, units of work and events of fixed instants, and the helpers several of its files
share."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from db.ids import new_id
from db.models import Event, Job, ProcessEntry, ProcessRecord, UnitOfWork, UowQuery, UowTransition
from db.states import JobState, ProcessKind, ProcessSource, Qualifier, UowKind, UowState

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


def _claimed_uow(store, **fields) -> UnitOfWork:
    """A new unit of work, moved to in_progress."""
    uow = store.create_uow(make_uow(**fields))
    return store.transition_uow(
        uow.id,
        expected_state=UowState.REQUESTED,
        new_state=UowState.IN_PROGRESS,
        event=event("uow", uow.id, "claim", "requested", "in_progress"),
    )


def _step(uow, src: UowState, dst: UowState, trigger: str, at: datetime = T0, **changes):
    return UowTransition(
        uow_id=uow.id,
        expected_state=src,
        new_state=dst,
        event=event("uow", uow.id, trigger, src.value, dst.value, at=at),
        changes=changes or None,
    )


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


def stamped(at: datetime, *texts: str) -> list[tuple[datetime, str]]:
    """Messages for :meth:`~db.store.Store.append_messages`, all emitted at ``at``."""
    return [(at, text) for text in texts]
