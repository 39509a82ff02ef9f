"""``/api/v1/tasks``: ad-hoc shell commands (admin only), their state and their messages."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import jsonify

from db.credentials import Role
from mx.api.common import bp, ctx, json_body, query
from mx.auth import requires
from mx.runtime import runtime
from mx.services import tasks
from mx.services.messages import list_messages
from mx.services.validate import only_fields

if TYPE_CHECKING:
    from flask.typing import ResponseReturnValue

#: Fields of a task submission.
TASK_FIELDS = ("command", "scheduled_at", "arguments", "retries", "payload_id", "payload")


@bp.post("/tasks")
@requires(Role.ADMIN)
def tasks_submit() -> ResponseReturnValue:
    """Submit a one-off shell command -> 201 ``{"task_id", ...}``; 202 when it is stored but
    waits for the broker (published as soon as the broker is back: do not submit again)."""
    query()
    body = json_body()
    only_fields(body, TASK_FIELDS)
    task = tasks.submit(
        ctx(),
        body.get("command"),
        scheduled_at=body.get("scheduled_at"),
        arguments=body.get("arguments"),
        retries=body.get("retries", 0),
        payload_id=body.get("payload_id"),
        payload=body.get("payload"),
    )
    return jsonify(task), 201 if task["published"] else 202


@bp.get("/tasks/<task_id>")
def tasks_get(task_id: str) -> ResponseReturnValue:
    """A task's state and timestamps."""
    query()
    return jsonify(tasks.status_of(ctx(), task_id))


@bp.get("/tasks/<task_id>/messages")
def tasks_messages(task_id: str) -> ResponseReturnValue:
    """The task's messages in order, paged: ``after`` the ``seq`` of the last one the caller
    has."""
    params = query({"after"})
    return jsonify(
        list_messages(
            runtime().store, task_id, after=params.get("after"), limit=params.get("limit")
        )
    )
