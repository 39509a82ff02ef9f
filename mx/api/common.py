"""The API blueprint and what its routes share: the service context, the request's body and
query parameters. Routes only parse input, call a service verb and render (STYLE 2.15); every
rule about a value lives in :mod:`mx.services.validate`."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from flask import Blueprint, g, request

from db.errors import InvalidInput
from mx.auth import current_principal
from mx.runtime import runtime
from mx.services import validate
from mx.services.context import ServiceContext

#: Query parameters every list accepts.
PAGE_PARAMS = frozenset({"limit", "cursor"})

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def ctx() -> ServiceContext:
    """The service context of this request, acting as its principal."""
    principal = current_principal()
    return runtime().context(principal.actor if principal is not None else "anonymous")


def json_body(*, required: bool = True) -> dict[str, Any]:
    """The request's JSON object, whatever its ``Content-Type`` (a form or ``text/plain``
    content type is parsed as JSON too: the API has no form routes).

    Raises:
        InvalidInput: field ``body``: missing (when ``required``), not UTF-8, not JSON, or not
            an object; or a value no store can keep (:func:`mx.services.validate.json_value`).
    """
    # Never parsed as a form: reading request.form would consume the body.
    raw = request.get_data(cache=True, parse_form_data=False)
    if not raw.strip():
        if required:
            raise InvalidInput("body", "a JSON object is required")
        return {}
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidInput("body", f"is not UTF-8 text (byte {exc.start})") from None
    except RecursionError:
        raise InvalidInput("body", f"nested deeper than {validate.MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise InvalidInput("body", f"is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InvalidInput("body", f"must be a JSON object (got {type(data).__name__})")
    return validate.json_value(data)


def query(allowed: Iterable[str] = ()) -> dict[str, str]:
    """The query parameters, refusing unknown or repeated ones (each named)."""
    known = set(allowed) | PAGE_PARAMS
    values: dict[str, str] = {}
    for name in request.args:
        if name not in known:
            raise InvalidInput(
                name or "query", f"unknown query parameter (known: {', '.join(sorted(known))})"
            )
        given = request.args.getlist(name)
        if len(given) > 1:
            raise InvalidInput(name, "given more than once")
        values[name] = given[0]
    return values


def audit_target(target: str) -> None:
    """Name what a mutating request acted on, for the audit trail."""
    g.audit_target = target
