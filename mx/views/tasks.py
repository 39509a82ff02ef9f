"""The ad-hoc task form: a shell command run once (admin only, like the API)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, flash, redirect, request, url_for

from db.credentials import Role
from db.errors import TactusError
from mx.auth import requires
from mx.services import tasks
from mx.views.common import ctx, render
from mx.views.forms import task_fields

if TYPE_CHECKING:
    from flask.typing import ResponseReturnValue

bp = Blueprint("tasks", __name__)


@bp.get("/tasks/new")
@requires(Role.ADMIN)
def task_new() -> ResponseReturnValue:
    return render("tasks/new.html", form={"retries": "0"}, error=None)


@bp.post("/tasks/new")
@requires(Role.ADMIN)
def task_create() -> ResponseReturnValue:
    try:
        fields = task_fields(request.form)
        task = tasks.submit(ctx(), fields.pop("command"), **fields)
    except TactusError as exc:
        field = getattr(exc, "field", None)
        message = f"{field}: {exc.message}" if field else exc.message
        return render("tasks/new.html", form=request.form.to_dict(), error=message), exc.http_status
    waiting = "" if task["published"] else " (the broker is away: it is published when it is back)"
    flash(f"Submitted task {task['task_id']}{waiting}.", "ok")
    return redirect(url_for("work.uow_detail", uow_id=task["task_id"]), code=303)
