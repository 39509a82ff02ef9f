"""``/api/v1/processes``: registered processes, freerun entries and firing by hand."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import jsonify

from db.credentials import Role
from mx.api.common import audit_target, bp, ctx, json_body, query
from mx.auth import require_role
from mx.runtime import runtime
from mx.services import actions, entries, validate, why
from mx.services.paging import page
from mx.services.processes import process_records, process_views
from mx.services.validate import only_fields

if TYPE_CHECKING:
    from flask.typing import ResponseReturnValue

#: Fields of a trigger's (optional) body: the payload of the unit of work it creates.
TRIGGER_FIELDS = ("payload_id", "payload")


@bp.get("/processes")
def processes_list() -> ResponseReturnValue:
    """Registered processes by name, with ``enabled``, ``next_fire`` and counts by state."""
    params = query({"kind"})
    rt = runtime()
    # Cut the page first, then count for its processes only: counting every process's whole
    # history for a page of 100 is what made this route slow on a big store.
    chosen = page(
        process_records(rt.store, validate.kind(params.get("kind"))),
        lambda record: record.name,
        limit=params.get("limit"),
        cursor=params.get("cursor"),
    )
    chosen["items"] = process_views(
        rt.store, chosen["items"], now=rt.clock.now(), default_timezone=rt.settings.timezone
    )
    return jsonify(chosen)


@bp.get("/processes/<name>")
def processes_get(name: str) -> ResponseReturnValue:
    """One process."""
    query()
    rt = runtime()
    return jsonify(
        entries.show_process(
            rt.store, name, now=rt.clock.now(), default_timezone=rt.settings.timezone
        )
    )


@bp.post("/processes")
def processes_create() -> ResponseReturnValue:
    """Create a freerun entry (fields of SPEC section 4) -> 201. A ``command`` needs admin."""
    query()
    body = json_body()
    if isinstance(body.get("name"), str):
        audit_target(f"process {body['name']}")
    if entries.touches_program(body):
        require_role(Role.ADMIN)
    return jsonify(entries.create_freerun(ctx(), body)), 201


@bp.patch("/processes/<name>")
def processes_edit(name: str) -> ResponseReturnValue:
    """Change fields of an entry; null resets a field to its default. ``command`` or ``shell``
    needs admin."""
    query()
    body = json_body()
    if entries.touches_program(body, runtime().store.get_process(name).entry.kind):
        require_role(Role.ADMIN)
    return jsonify(entries.edit_process(ctx(), name, body))


@bp.delete("/processes/<name>")
def processes_delete(name: str) -> ResponseReturnValue:
    """Remove a freerun entry; answers with the removed entry."""
    query()
    return jsonify(entries.delete_freerun(ctx(), name))


@bp.post("/processes/<name>/trigger")
def processes_trigger(name: str) -> ResponseReturnValue:
    """Fire now: 201 with the new unit of work (given the body's ``payload_id`` or inline
    ``payload``, if any); 202 when it is stored but waits for the broker (published as soon as
    the broker is back: do not trigger again), and for a managed process (the scheduler looks
    at it at once)."""
    query()
    body = json_body(required=False)
    only_fields(body, TRIGGER_FIELDS)
    result = actions.trigger(
        ctx(), name, payload_id=body.get("payload_id"), payload=body.get("payload")
    )
    created = result["uow"] is not None and result["published"]
    return jsonify(result), 201 if created else 202


@bp.get("/processes/<name>/why")
def processes_why(name: str) -> ResponseReturnValue:
    """Why the process (at ``timeperiod``) has not run or is waiting: ``reasons``, each a
    ``code``, a ``message`` and the stored ``facts`` it rests on (docs/why.md)."""
    params = query({"timeperiod"})
    rt = runtime()
    return jsonify(
        why.explain(
            rt.store,
            name,
            params.get("timeperiod"),
            now=rt.clock.now(),
            liveness=rt.liveness,
            default_timezone=rt.settings.timezone,
        )
    )
