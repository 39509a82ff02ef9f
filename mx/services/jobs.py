"""Verbs on jobs: list and show, and what a job's page adds: the jobs it waits for (its tree
children and its dependencies' counterparts) and the attempts of its units of work."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from db.models import JobQuery, UowQuery
from db.relations import Registry, relation, timeperiod_of
from db.states import JobState
from mx.services import validate
from mx.services.runs import job_attempts
from mx.services.serialize import event_json, job_json, uow_json
from mx.services.uows import flow_steps

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    from db.models import Job, UnitOfWork
    from db.relations import Relation
    from db.store import Store


def list_jobs(
    store: Store,
    *,
    process: str | None = None,
    state: str | Iterable[str] | None = None,
    from_timeperiod: str | None = None,
    to_timeperiod: str | None = None,
    limit: int | str | None = None,
    cursor: str | None = None,
) -> dict[str, Any]:
    """A page of jobs, newest first: ``{"items": [...], "next_cursor": ...}``.

    Args:
        store: the store.
        process: only this process (None or empty: every process).
        state: one state, several separated by commas, or a list (None or empty: every state).
        from_timeperiod: the first timeperiod (inclusive), ten digits.
        to_timeperiod: the timeperiod to stop before (exclusive), ten digits.
        limit: page size, 1 to 1000 (default 100); a string of digits is accepted.
        cursor: ``next_cursor`` of the previous page (None or empty: the first page).

    Raises:
        InvalidInput: a bad filter, limit or cursor (the field is named).
    """
    query = JobQuery(
        process=validate.process_filter(process),
        states=validate.states(JobState, state),
        from_timeperiod=validate.timeperiod_bound(from_timeperiod, "from"),
        to_timeperiod=validate.timeperiod_bound(to_timeperiod, "to"),
    )
    page = store.find_jobs(query, limit=validate.limit(limit), cursor=validate.cursor(cursor))
    return {"items": [job_json(j) for j in page.items], "next_cursor": page.next_cursor}


def get_job(store: Store, process: str, timeperiod: str) -> dict[str, Any]:
    """One job with its units of work and its history.

    Raises:
        InvalidInput: a malformed process name or timeperiod.
        NotFound: no such job.
    """
    return _job(store, process, timeperiod)[0]


def _job(
    store: Store, process: str, timeperiod: str
) -> tuple[dict[str, Any], Job, list[UnitOfWork]]:
    job = store.get_job(validate.process_name(process), validate.timeperiod(timeperiod))
    uows = store.find_uows(
        UowQuery(process=process, timeperiod=timeperiod, top_level=True), limit=100
    ).items
    data = job_json(job)
    data["uows"] = [uow_json(u) for u in uows]
    data["history"] = [event_json(e) for e in store.history("job", job.key)]
    return data, job, uows


def job_page(store: Store, process: str, timeperiod: str, *, now: datetime) -> dict[str, Any]:
    """:func:`get_job`, plus what the job's page shows:

    - ``relations``: the jobs it waits for, one entry per related process: its tree children
      (the next finer process of its tree) and the counterparts of the processes it depends
      on, each with their states and the periods that have no job yet;
    - ``attempts``: the attempts of its newest units of work (:func:`runs.job_attempts`);
    - ``flow``: when the job's unit of work is a flow run, its id, state and steps
      (:func:`mx.services.uows.flow_steps`), else None; the steps are left out of ``uows``;
    - each unit of work's ``returned`` (what a worker class returned, from its history) and
      ``current`` (it is the job's unit of work; the others were superseded by a reprocess).

    Raises:
        InvalidInput: a malformed process name or timeperiod.
        NotFound: no such job.
    """
    data, job, uows = _job(store, process, timeperiod)
    data["uows"] = [item for item in data["uows"] if item["parent"] is None]
    current = next((u for u in uows if u.id == job.uow_id), None)
    data["flow"] = (
        None
        if current is None or not current.flow
        else {
            "uow_id": current.id,
            "state": current.state.value,
            "steps": flow_steps(store, current),
        }
    )
    registry = Registry.from_entries(r.entry for r in store.list_processes())
    period = timeperiod_of(job)
    relations = []
    if process in registry.entries:
        child = registry.child(process)
        if child is not None:
            rel = relation(store, period, child, now, f"children {child.name}")
            relations.append(_relation_json("children", child.name, rel))
        for dep in registry.dependencies(process):
            rel = relation(store, period, dep, now, f"dependency {dep.name}")
            relations.append(_relation_json("dependency", dep.name, rel))
    data["relations"] = relations
    attempts = job_attempts(store, uows)
    for item in data["uows"]:
        item["current"] = item["id"] == job.uow_id
        ended = [a for a in attempts.get(item["id"], ()) if a.finished is not None]
        item["returned"] = ended[-1].returned if ended else None
    data["attempts"] = [a for u in reversed(uows) for a in attempts.get(u.id, ())]
    return data


def _relation_json(kind: str, process: str, rel: Relation) -> dict[str, Any]:
    return {
        "kind": kind,
        "process": process,
        "label": rel.label,
        "jobs": [job_json(j) for j in rel.jobs],
        "missing": [str(p) for p in rel.missing],
        "absent": len(rel.absent),
        "first": None if rel.first is None else str(rel.first),
        "finished": rel.finished,
        "succeeded": rel.succeeded,
    }
