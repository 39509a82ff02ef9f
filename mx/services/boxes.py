"""Verbs on boxes and workers: what runs where."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from mx.services.serialize import supervised_json, worker_json

if TYPE_CHECKING:
    from db.store import Store

#: A worker that has not beaten for this long is shown as not alive.
DEFAULT_LIVENESS = timedelta(seconds=30)


def list_boxes(store: Store, *, box_id: str | None = None) -> list[dict[str, Any]]:
    """Supervised processes per box with their states."""
    return [supervised_json(r) for r in store.list_supervised(box_id)]


def list_workers(
    store: Store, *, now: datetime, liveness: timedelta = DEFAULT_LIVENESS
) -> list[dict[str, Any]]:
    """Registered workers with their last heartbeat and whether they look alive."""
    return [
        worker_json(w, alive=w.state == "alive" and now - w.heartbeat_at <= liveness)
        for w in store.list_workers()
    ]
