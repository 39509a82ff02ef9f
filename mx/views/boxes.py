"""The supervisor page (boxes × processes with start / stop) and the workers page."""

from __future__ import annotations

from itertools import groupby
from typing import TYPE_CHECKING

from flask import Blueprint, url_for

from mx.runtime import runtime
from mx.services import boxes
from mx.views.common import act, ctx, render

if TYPE_CHECKING:
    from flask.typing import ResponseReturnValue

bp = Blueprint("boxes", __name__)


@bp.get("/supervisor")
def supervisor() -> ResponseReturnValue:
    records = boxes.list_boxes(runtime().store)
    grouped = [(box, list(rows)) for box, rows in groupby(records, key=lambda r: r["box_id"])]
    return render("boxes/supervisor.html", fragment="boxes/_supervisor.html", boxes=grouped)


@bp.post("/supervisor/<box_id>/<process>/start")
def start(box_id: str, process: str) -> ResponseReturnValue:
    c = ctx()
    return act(
        lambda: boxes.start_process(c.store, box_id, process, clock=c.clock, actor=c.actor),
        done=lambda _: f"Asked {box_id} to start {process}.",
        to=url_for(".supervisor"),
    )


@bp.post("/supervisor/<box_id>/<process>/stop")
def stop(box_id: str, process: str) -> ResponseReturnValue:
    c = ctx()
    return act(
        lambda: boxes.stop_process(c.store, box_id, process, clock=c.clock, actor=c.actor),
        done=lambda _: f"Asked {box_id} to stop {process}.",
        to=url_for(".supervisor"),
    )


@bp.get("/workers")
def workers() -> ResponseReturnValue:
    rt = runtime()
    rows = boxes.list_workers(rt.store, now=rt.clock.now(), liveness=rt.liveness)
    rows.sort(key=lambda w: (not w["alive"], w["process"], w["box_id"], w["worker_id"]))
    return render("boxes/workers.html", fragment="boxes/_workers.html", workers=rows)
