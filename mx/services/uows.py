"""Verbs on units of work: list and show."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from db.models import UowQuery
from db.states import UowState
from mx.services import validate
from mx.services.serialize import event_json, uow_json

if TYPE_CHECKING:
    from collections.abc import Iterable

    from db.store import Store


def list_uows(
    store: Store,
    *,
    process: str | None = None,
    state: str | Iterable[str] | None = None,
    limit: int | str | None = None,
    cursor: str | None = None,
) -> dict[str, Any]:
    """A page of units of work, newest first (the arguments as :func:`mx.services.jobs.list_jobs`).

    Raises:
        InvalidInput: a bad filter, limit or cursor (the field is named).
    """
    query = UowQuery(
        process=validate.process_filter(process), states=validate.states(UowState, state)
    )
    page = store.find_uows(query, limit=validate.limit(limit), cursor=validate.cursor(cursor))
    return {"items": [uow_json(u) for u in page.items], "next_cursor": page.next_cursor}


def get_uow(store: Store, uow_id: str) -> dict[str, Any]:
    """One unit of work with its history (attempts, exit codes, output tail).

    Raises:
        InvalidInput: an empty id, or one with a NUL or a lone surrogate.
        NotFound: no such unit of work.
    """
    data = uow_json(store.get_uow(validate.identifier(uow_id, "uow_id")))
    data["history"] = [event_json(e) for e in store.history("uow", uow_id)]
    return data
