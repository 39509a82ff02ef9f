"""``/api/v1/tasks``: ad-hoc shell commands (admin only), and their state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from flask import jsonify

from db.credentials import Role
from db.errors import InvalidInput
from mx.api.common import bp, ctx, json_body, only_fields, query
from mx.auth import requires
from mx.services import tasks

if TYPE_CHECKING:
    from flask.typing import ResponseReturnValue

#: Fields of a task submission.
TASK_FIELDS = ("command", "scheduled_at", "arguments", "retries")


@bp.post("/tasks")
@requires(Role.ADMIN)
def tasks_submit() -> ResponseReturnValue:
    """Submit a one-off shell command -> 201 ``{"task_id", ...}``."""
    query()
    body = json_body()
    only_fields(body, TASK_FIELDS)
    _check_range(body.get("scheduled_at"))
    task = tasks.submit(
        ctx(),
        body.get("command"),
        scheduled_at=body.get("scheduled_at"),
        arguments=body.get("arguments"),
        retries=body.get("retries", 0),
    )
    return jsonify(task), 201


def _check_range(scheduled_at: object) -> None:
    """Refuse an instant that exists with its offset but not in UTC (year 1 or 9999 at the
    edge): the service would fail converting it."""
    if not isinstance(scheduled_at, str):
        return
    try:
        value = datetime.fromisoformat(scheduled_at.replace("Z", "+00:00"))
    except ValueError:
        return  # the service names the problem
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise InvalidInput("scheduled_at", f"out of range: {scheduled_at!r}") from None


@bp.get("/tasks/<task_id>")
def tasks_get(task_id: str) -> ResponseReturnValue:
    """A task's state and timestamps."""
    query()
    return jsonify(tasks.status_of(ctx(), task_id))
