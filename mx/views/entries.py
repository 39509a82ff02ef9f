"""Processes: the list with enable / disable / trigger, one process with its recent fires, and
the freerun entry form (create, edit, delete)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from flask import Blueprint, flash, redirect, request, url_for

from db.credentials import Role
from db.errors import InvalidInput, TactusError
from db.states import ProcessKind
from mx.auth import require_role, requires
from mx.runtime import runtime
from mx.services import actions, entries, runs, validate
from mx.services.processes import next_fire, process_records
from mx.services.serialize import fire_json, instant
from mx.views import charts
from mx.views.common import act, ctx, render
from mx.views.forms import command_text, entry_fields
from mx.views.why import why_panel

if TYPE_CHECKING:
    from flask.typing import ResponseReturnValue

bp = Blueprint("entries", __name__)

#: Fires shown on a freerun's page.
RECENT_FIRES = 20


@bp.get("/processes")
def process_list() -> ResponseReturnValue:
    """Every registered process (no counts: they would read the whole history)."""
    rt = runtime()
    now = rt.clock.now()
    kind = request.args.get("kind", "")
    rows = [
        {
            **record.entry.to_dict(),
            "next_fire": instant(next_fire(record, now, rt.settings.timezone)),
        }
        for record in process_records(rt.store, validate.kind(kind or None))
    ]
    return render("entries/list.html", processes=rows, kind=kind, kinds=list(ProcessKind))


@bp.get("/processes/<name>")
def process_detail(name: str) -> ResponseReturnValue:
    rt = runtime()
    process = entries.show_process(
        rt.store, name, now=rt.clock.now(), default_timezone=rt.settings.timezone
    )
    fires = [fire_json(f) for f in rt.store.list_fires(name, limit=RECENT_FIRES)]
    recent = runs.recent_runs(rt.store, name, now=rt.clock.now())
    root = url_for("work.uow_list")
    return render(
        "entries/detail.html",
        fragment="entries/_runs.html",
        process=process,
        runs=recent,
        chart=charts.durations(recent, uow_href=lambda uow_id: f"{root}/{quote(uow_id, safe='')}"),
        fires=fires,
        form=_form_values(process),
        error=None,
        why=why_panel(name),
    )


@bp.get("/entries/new")
@requires(Role.OPERATOR)
def process_new() -> ResponseReturnValue:
    return render("entries/new.html", form={"enabled": True, "arguments": "{}"}, error=None)


@bp.post("/entries/new")
def process_create() -> ResponseReturnValue:
    form = request.form
    try:
        fields = entry_fields(form, creating=True)
        if entries.touches_program({k: v for k, v in fields.items() if v}):
            require_role(Role.ADMIN)
        created = entries.create_freerun(ctx(), fields)
    except TactusError as exc:
        return _form_refused("entries/new.html", exc, form=dict(form.to_dict(), enabled=_on(form)))
    flash(f"Created freerun entry {created['name']}.", "ok")
    return redirect(url_for(".process_detail", name=created["name"]), code=303)


@bp.post("/processes/<name>/edit")
def process_edit(name: str) -> ResponseReturnValue:
    rt = runtime()
    form = request.form
    try:
        current = entries.show_process(
            rt.store, name, now=rt.clock.now(), default_timezone=rt.settings.timezone
        )
        if current["kind"] != ProcessKind.FREERUN.value:
            raise InvalidInput("kind", "only freerun entries are edited on the page")
        changes = entry_fields(form, creating=False)
        # The form always sends the command: only a real change of it needs the admin role.
        if command_text(changes.get("command")) == command_text(current.get("command")):
            changes.pop("command", None)
        if changes.get("shell") == current.get("shell"):
            changes.pop("shell", None)
        if entries.touches_program(changes):
            require_role(Role.ADMIN)
        entries.edit_process(ctx(), name, changes)
    except TactusError as exc:
        process = entries.show_process(
            rt.store, name, now=rt.clock.now(), default_timezone=rt.settings.timezone
        )
        fires = [fire_json(f) for f in rt.store.list_fires(name, limit=RECENT_FIRES)]
        return _form_refused(
            "entries/detail.html",
            exc,
            form=dict(form.to_dict(), enabled=_on(form)),
            process=process,
            fires=fires,
            why=why_panel(name),
        )
    flash(f"Saved {name}.", "ok")
    return redirect(url_for(".process_detail", name=name), code=303)


@bp.post("/processes/<name>/enable")
def process_enable(name: str) -> ResponseReturnValue:
    return act(
        lambda: actions.set_enabled(ctx(), name, True),
        done=lambda _: f"Enabled {name}.",
        to=url_for(".process_detail", name=name),
    )


@bp.post("/processes/<name>/disable")
def process_disable(name: str) -> ResponseReturnValue:
    return act(
        lambda: actions.set_enabled(ctx(), name, False),
        done=lambda _: f"Disabled {name}.",
        to=url_for(".process_detail", name=name),
    )


@bp.post("/processes/<name>/trigger")
def process_trigger(name: str) -> ResponseReturnValue:
    def done(result: dict[str, Any]) -> str:
        uow = result["uow"]
        if uow is None:
            return f"Asked the scheduler to look at {name} now."
        if not result["published"]:
            return (
                f"Triggered {name}: unit of work {uow['id']} is stored; the broker is away, "
                "so it is published as soon as the broker is back (do not trigger again)."
            )
        return f"Triggered {name}: unit of work {uow['id']}."

    return act(
        lambda: actions.trigger(ctx(), name),
        done=done,
        to=url_for(".process_detail", name=name),
    )


@bp.post("/processes/<name>/delete")
def process_delete(name: str) -> ResponseReturnValue:
    return act(
        lambda: entries.delete_freerun(ctx(), name),
        done=lambda _: f"Deleted freerun entry {name}.",
        to=url_for(".process_list"),
    )


def _on(form: Any) -> bool:
    return form.get("enabled") == "on"


def _form_values(process: dict[str, Any]) -> dict[str, Any]:
    """A process as its form shows it."""
    values = {k: ("" if v is None else v) for k, v in process.items()}
    values["command"] = command_text(process.get("command"))
    values["arguments"] = json.dumps(process.get("arguments") or {}, indent=2, sort_keys=True)
    return values


def _form_refused(template: str, exc: TactusError, **context: Any) -> ResponseReturnValue:
    field = getattr(exc, "field", None)
    message = f"{field}: {exc.message}" if field else exc.message
    return render(template, error=message, **context), exc.http_status
