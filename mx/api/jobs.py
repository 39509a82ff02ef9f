"""``/api/v1/jobs``: jobs newest first, one job with its units of work and history, and the
reprocess and skip cascades."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from flask import jsonify

from db.errors import InvalidInput
from mx.api.common import bp, ctx, cursor_of, limit_of, query
from mx.runtime import runtime
from mx.services import actions
from mx.services.jobs import get_job, list_jobs

if TYPE_CHECKING:
    from flask.typing import ResponseReturnValue

#: A timeperiod bound of the ``from``/``to`` filters (SPEC section 2: ten digits).
TIMEPERIOD = re.compile(r"[0-9]{10}")


def _timeperiod(params: dict[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is not None and not TIMEPERIOD.fullmatch(value):
        raise InvalidInput(name, f"must be a timeperiod of ten digits, e.g. 2026010513 ({value!r})")
    return value


@bp.get("/jobs")
def jobs_list() -> ResponseReturnValue:
    """Jobs, newest timeperiod first; ``from`` inclusive, ``to`` exclusive; ``state`` may list
    several states separated by commas."""
    params = query({"process", "state", "from", "to"})
    return jsonify(
        list_jobs(
            runtime().store,
            process=params.get("process") or None,
            state=params.get("state"),
            from_timeperiod=_timeperiod(params, "from"),
            to_timeperiod=_timeperiod(params, "to"),
            limit=limit_of(params),
            cursor=cursor_of(params),
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
