"""The dashboard: processes × recent timeperiods, coloured by state, refreshed live."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, request, url_for

from db.states import JobState, UowState
from mx.runtime import runtime
from mx.services import dashboard
from mx.services.boxes import list_workers
from mx.views import charts
from mx.views.common import render

if TYPE_CHECKING:
    from flask.typing import ResponseReturnValue

bp = Blueprint("dashboard", __name__)


def _offset() -> int:
    try:
        return max(0, int(request.args.get("offset", 0)))
    except ValueError:
        return 0


@bp.get("/")
def index() -> ResponseReturnValue:
    """The grid, one page of rows; ``q`` filters process names."""
    rt = runtime()
    now = rt.clock.now()
    search = request.args.get("q", "")[:200]
    grid = dashboard.build(rt.store, now=now, search=search, offset=_offset())
    root = url_for("entries.process_list")
    workers = list_workers(rt.store, now=rt.clock.now(), liveness=rt.liveness)
    return render(
        "dashboard/index.html",
        fragment="dashboard/_grid.html",
        grid=grid,
        grid_chart=charts.gantt(grid.day, now=now, process_href=lambda name: f"{root}/{name}"),
        search=search,
        job_states=list(JobState),
        uow_states=list(UowState),
        workers_alive=sum(1 for w in workers if w["alive"]),
    )
