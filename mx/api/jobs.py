"""``/api/v1/jobs``: jobs newest first, one job with its units of work and history, and the
reprocess and skip cascades."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import jsonify

from mx.api.common import bp, ctx, query
from mx.runtime import runtime
from mx.services import actions
from mx.services.jobs import get_job, list_jobs

if TYPE_CHECKING:
    from flask.typing import ResponseReturnValue


@bp.get("/jobs")
def jobs_list() -> ResponseReturnValue:
    """Jobs, newest timeperiod first; ``from`` inclusive, ``to`` exclusive; ``state`` may list
    several states separated by commas."""
    params = query({"process", "state", "from", "to"})
    return jsonify(
        list_jobs(
            runtime().store,
            process=params.get("process"),
            state=params.get("state"),
            from_timeperiod=params.get("from"),
            to_timeperiod=params.get("to"),
            limit=params.get("limit"),
            cursor=params.get("cursor"),
        )
    )


@bp.get("/jobs/<process>/<timeperiod>")
def jobs_get(process: str, timeperiod: str) -> ResponseReturnValue:
    """One job with its units of work and its event history."""
    query()
    return jsonify(get_job(runtime().store, process, timeperiod))


@bp.post("/jobs/<process>/<timeperiod>/reprocess")
def jobs_reprocess(process: str, timeperiod: str) -> ResponseReturnValue:
    """Reprocess the job and its cascade; answers ``{"changed": [jobs]}``."""
    query()
    return jsonify(changed=actions.reprocess(ctx(), process, timeperiod))


@bp.post("/jobs/<process>/<timeperiod>/skip")
def jobs_skip(process: str, timeperiod: str) -> ResponseReturnValue:
    """Skip the job and its cascade; answers ``{"changed": [jobs]}``."""
    query()
    return jsonify(changed=actions.skip(ctx(), process, timeperiod))
