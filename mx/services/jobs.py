"""Verbs on jobs: list and show."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from db.errors import InvalidInput
from db.models import JobQuery, UowQuery
from db.states import JobState
from mx.services.serialize import event_json, job_json, uow_json

if TYPE_CHECKING:
    from db.store import Store


def parse_states(enum: type, values: str | list[str] | None, field: str = "state") -> frozenset:
    """``"a,b"`` or ``["a", "b"]`` -> a frozenset of enum members; None -> None."""
    if values is None or values == "" or values == []:
        return None
    items = values.split(",") if isinstance(values, str) else values
    try:
        return frozenset(enum(v.strip()) for v in items)
    except ValueError as exc:
        known = ", ".join(m.value for m in enum)
        raise InvalidInput(field, f"unknown state in {values!r} (known: {known})") from exc


def list_jobs(
    store: Store,
    *,
    process: str | None = None,
    state: str | list[str] | None = None,
    from_timeperiod: str | None = None,
    to_timeperiod: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    """A page of jobs, newest first: ``{"items": [...], "next_cursor": ...}``."""
    page = store.find_jobs(
        JobQuery(
            process=process,
            states=parse_states(JobState, state),
            from_timeperiod=from_timeperiod,
            to_timeperiod=to_timeperiod,
        ),
        limit=limit,
        cursor=cursor,
    )
    return {"items": [job_json(j) for j in page.items], "next_cursor": page.next_cursor}


def get_job(store: Store, process: str, timeperiod: str) -> dict[str, Any]:
    """One job with its units of work and its history."""
    job = store.get_job(process, timeperiod)
    uows = store.find_uows(UowQuery(process=process, timeperiod=timeperiod), limit=100).items
    data = job_json(job)
    data["uows"] = [uow_json(u) for u in uows]
    data["history"] = [event_json(e) for e in store.history("job", job.key)]
    return data
