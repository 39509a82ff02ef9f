"""``/api/v1/boxes`` and ``/api/v1/workers``: what runs where, and the supervisor's desired
state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import jsonify

from mx.api.common import bp, ctx, page, query
from mx.runtime import runtime
from mx.services import boxes

if TYPE_CHECKING:
    from flask.typing import ResponseReturnValue


@bp.get("/boxes")
def boxes_list() -> ResponseReturnValue:
    """Supervised processes per box with their states, by (box_id, process)."""
    params = query({"box_id"})
    items = boxes.list_boxes(runtime().store, box_id=params.get("box_id") or None)
    return jsonify(page(items, lambda r: f"{r['box_id']}\x00{r['process']}", params))


@bp.get("/workers")
def workers_list() -> ResponseReturnValue:
    """Registered workers with their last heartbeat and whether they look alive."""
    params = query({"box_id", "process"})
    rt = runtime()
    items = [
        w
        for w in boxes.list_workers(rt.store, now=rt.clock.now(), liveness=rt.liveness)
        if params.get("box_id") in (None, "", w["box_id"])
        and params.get("process") in (None, "", w["process"])
    ]
    return jsonify(page(items, lambda w: w["worker_id"], params))


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
