"""Verbs on jobs: list and show."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from db.models import JobQuery, UowQuery
from db.states import JobState
from mx.services import validate
from mx.services.serialize import event_json, job_json, uow_json

if TYPE_CHECKING:
    from collections.abc import Iterable

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
    job = store.get_job(validate.process_name(process), validate.timeperiod(timeperiod))
    uows = store.find_uows(UowQuery(process=process, timeperiod=timeperiod), limit=100).items
    data = job_json(job)
    data["uows"] = [uow_json(u) for u in uows]
    data["history"] = [event_json(e) for e in store.history("job", job.key)]
    return data
