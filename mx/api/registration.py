"""``/api/v1/registration``: a registration file's processes, upserted as ``launch.py register``
does on the store (``launch.py register FILE --url`` reads the file where it runs and sends its
entries here). Admin only: entries name programs to run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import jsonify

from db.credentials import Role
from db.errors import InvalidInput
from db.registration import load_entries
from mx.api.common import audit_target, bp, ctx, json_body, query
from mx.auth import requires
from mx.services.processes import register_entries, registration_json
from mx.services.validate import only_fields

if TYPE_CHECKING:
    from flask.typing import ResponseReturnValue

#: Fields of a registration.
FIELDS = ("processes", "source", "check", "prune")
#: Longest ``source`` kept (it names the file in the histories).
MAX_SOURCE = 500


@bp.put("/registration")
@requires(Role.ADMIN)
def registration_put() -> ResponseReturnValue:
    """Validate the entries, then create, update (and with ``prune``, remove) processes as a
    registration file would; with ``check`` only say what would change. Idempotent."""
    query()
    body = json_body()
    only_fields(body, FIELDS)
    if "processes" not in body:
        raise InvalidInput("processes", "required: the entries of the registration file")
    source = body.get("source", "the REST API")
    if not isinstance(source, str) or not 0 < len(source) <= MAX_SOURCE:
        raise InvalidInput("source", f"must be a string of 1 to {MAX_SOURCE} characters")
    flags = {}
    for name in ("check", "prune"):
        value = body.get(name, False)
        if not isinstance(value, bool):
            raise InvalidInput(name, f"must be true or false (got {value!r})")
        flags[name] = value
    audit_target(f"registration {source}")
    entries = load_entries(body["processes"], source)
    context = ctx()
    result = register_entries(
        context.store,
        entries,
        source=source,
        clock=context.clock,
        actor=context.actor,
        check=flags["check"],
        prune=flags["prune"],
    )
    return jsonify(registration_json(result))
