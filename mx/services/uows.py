"""Verbs on units of work: list and show."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from db.backends.base import encode_cursor
from db.models import UowQuery
from db.states import UowState
from mx.services.jobs import parse_states
from mx.services.serialize import event_json, uow_json

if TYPE_CHECKING:
    from db.models import UnitOfWork
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
    if states is not None and len(states) == len(UowState):
        states = None  # every state: no filter, and the plain id order
    if states is not None and len(states) > 1:
        items, next_cursor = _merged_by_state(store, process, states, limit, cursor)
    else:
        page = store.find_uows(UowQuery(process=process, states=states), limit=limit, cursor=cursor)
        items, next_cursor = page.items, page.next_cursor
    return {"items": [uow_json(u) for u in items], "next_cursor": next_cursor}


def _merged_by_state(
    store: Store,
    process: str | None,
    states: frozenset[UowState],
    limit: int,
    cursor: str | None,
) -> tuple[list[UnitOfWork], str | None]:
    """One page over several states, read as one page per state and merged by id.

    Each single-state page walks the (state, id) or (process, state, id) index from the cursor
    and stops after ``limit`` rows. One ``state IN (...)`` page instead walks the id order and
    filters it, reading the whole store when the states are rare: 2 s for
    ``state=invalid,requested`` over 1,000,000 units of work on SQLite (bench/mx.py). The
    cursor is the store's own (the last id), so every state's page continues from it.
    """
    pages = [
        store.find_uows(
            UowQuery(process=process, states=frozenset({s})), limit=limit, cursor=cursor
        )
        for s in sorted(states)
    ]
    merged = sorted((u for page in pages for u in page.items), key=lambda u: u.id, reverse=True)
    more = len(merged) > limit or any(page.next_cursor is not None for page in pages)
    items = merged[:limit]
    return items, encode_cursor(items[-1].id) if more and items else None


def get_uow(store: Store, uow_id: str) -> dict[str, Any]:
    """One unit of work with its history (attempts, exit codes, output tail)."""
    data = uow_json(store.get_uow(uow_id))
    data["history"] = [event_json(e) for e in store.history("uow", uow_id)]
    return data
