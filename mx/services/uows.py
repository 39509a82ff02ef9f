"""Verbs on units of work: list and show."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from db.models import UowQuery
from db.states import UowState
from mx.services.jobs import parse_states
from mx.services.serialize import event_json, uow_json

if TYPE_CHECKING:
    from db.store import Store


def list_uows(
    store: Store,
    *,
    process: str | None = None,
    state: str | list[str] | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    """A page of units of work, newest first."""
    states = parse_states(UowState, state)
    page = store.find_uows(UowQuery(process=process, states=states), limit=limit, cursor=cursor)
    return {"items": [uow_json(u) for u in page.items], "next_cursor": page.next_cursor}


def get_uow(store: Store, uow_id: str) -> dict[str, Any]:
    """One unit of work with its history (attempts, exit codes, output tail)."""
    data = uow_json(store.get_uow(uow_id))
    data["history"] = [event_json(e) for e in store.history("uow", uow_id)]
    return data
