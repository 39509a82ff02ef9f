"""``/api/v1/boxes`` and ``/api/v1/workers``: what runs where, and the supervisor's desired
state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import jsonify

from mx.api.common import bp, ctx, query
from mx.runtime import runtime
from mx.services import boxes
from mx.services.paging import page

if TYPE_CHECKING:
    from flask.typing import ResponseReturnValue


@bp.get("/boxes")
def boxes_list() -> ResponseReturnValue:
    """Supervised processes per box with their states, by (box_id, process)."""
    params = query({"box_id"})
    items = boxes.list_boxes(runtime().store, box_id=params.get("box_id"))
    return jsonify(page(items, _box_key, limit=params.get("limit"), cursor=params.get("cursor")))


def _box_key(record: dict) -> str:
    """The order of the boxes list: by box, then process (NUL sorts before any character)."""
    return f"{record['box_id']}\x00{record['process']}"


@bp.get("/workers")
def workers_list() -> ResponseReturnValue:
    """Registered workers with their last heartbeat and whether they look alive."""
    params = query({"box_id", "process"})
    rt = runtime()
    items = boxes.list_workers(
        rt.store,
        now=rt.clock.now(),
        liveness=rt.liveness,
        box_id=params.get("box_id"),
        process=params.get("process"),
    )
    return jsonify(
        page(
            items, lambda w: w["worker_id"], limit=params.get("limit"), cursor=params.get("cursor")
        )
    )


@bp.post("/boxes/<box_id>/processes/<name>/start")
def boxes_start(box_id: str, name: str) -> ResponseReturnValue:
    """Ask the supervisor of the box to run the process (a ``fatal`` one starts afresh)."""
    query()
    context = ctx()
    changed = boxes.start_process(
        context.store, box_id, name, clock=context.clock, actor=context.actor
    )
    return jsonify(items=changed)


@bp.post("/boxes/<box_id>/processes/<name>/stop")
def boxes_stop(box_id: str, name: str) -> ResponseReturnValue:
    """Ask the supervisor of the box to stop the process."""
    query()
    context = ctx()
    changed = boxes.stop_process(
        context.store, box_id, name, clock=context.clock, actor=context.actor
    )
    return jsonify(items=changed)
