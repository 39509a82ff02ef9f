"""``/api/v1/uows``: units of work newest first, one with its history and its messages, and
cancel."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import jsonify

from mx.api.common import bp, ctx, query
from mx.runtime import runtime
from mx.services import actions
from mx.services.messages import list_messages
from mx.services.uows import get_uow, list_uows

if TYPE_CHECKING:
    from flask.typing import ResponseReturnValue


@bp.get("/uows")
def uows_list() -> ResponseReturnValue:
    """Units of work, newest first; ``state`` may list several states separated by commas."""
    params = query({"process", "state"})
    return jsonify(
        list_uows(
            runtime().store,
            process=params.get("process"),
            state=params.get("state"),
            limit=params.get("limit"),
            cursor=params.get("cursor"),
        )
    )


@bp.get("/uows/<uow_id>")
def uows_get(uow_id: str) -> ResponseReturnValue:
    """One unit of work: attempts, exit code, the tail of its output and its history."""
    query()
    return jsonify(get_uow(runtime().store, uow_id))


@bp.get("/uows/<uow_id>/messages")
def uows_messages(uow_id: str) -> ResponseReturnValue:
    """Its messages in order, paged: ``after`` the ``seq`` of the last one the caller has."""
    params = query({"after"})
    return jsonify(
        list_messages(runtime().store, uow_id, after=params.get("after"), limit=params.get("limit"))
    )


@bp.post("/uows/<uow_id>/cancel")
def uows_cancel(uow_id: str) -> ResponseReturnValue:
    """Cancel for good; its job then becomes skipped."""
    query()
    return jsonify(actions.cancel(ctx(), uow_id))


@bp.post("/uows/<uow_id>/retry-failed")
def uows_retry_failed(uow_id: str) -> ResponseReturnValue:
    """A canceled flow run back in progress, re-running only its failed steps (SPEC 10)."""
    query()
    return jsonify(actions.retry_failed(ctx(), uow_id))
