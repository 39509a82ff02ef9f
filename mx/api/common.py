"""The API blueprint and what its routes share: the service context, request parsing and
pagination. Routes only parse input, call a service verb and render (STYLE 2.15)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from flask import Blueprint, g, request

from db.backends.base import decode_cursor, encode_cursor
from db.errors import InvalidInput
from db.store import MAX_PAGE_SIZE
from mx.auth import current_principal
from mx.runtime import runtime
from mx.services.context import ServiceContext

T = TypeVar("T")

#: Page size when ``limit`` is not given.
DEFAULT_LIMIT = 100
#: Deepest nesting of a request body (MongoDB stops at 100; no entry needs more than a few).
MAX_DEPTH = 32
#: Query parameters every list accepts.
PAGE_PARAMS = frozenset({"limit", "cursor"})

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def ctx() -> ServiceContext:
    """The service context of this request, acting as its principal."""
    principal = current_principal()
    return runtime().context(principal.actor if principal is not None else "anonymous")


def json_body(*, required: bool = True) -> dict[str, Any]:
    """The request's JSON object (any content type is parsed as JSON).

    Raises:
        InvalidInput: field ``body``: missing (when ``required``), malformed, or not an object.
    """
    raw = request.get_data(cache=True)
    if not raw.strip():
        if required:
            raise InvalidInput("body", "a JSON object is required")
        return {}
    try:
        data = request.get_json(force=True, silent=True)
    except RecursionError:
        raise InvalidInput("body", f"nested deeper than {MAX_DEPTH} levels") from None
    if not isinstance(data, dict):
        raise InvalidInput("body", "must be a JSON object")
    if "" in data:
        raise InvalidInput("body", "a field name is empty")
    _check_values(data)
    return data


def _check_values(data: Any) -> None:
    """Refuse what no store can keep: nesting deeper than ``MAX_DEPTH``, integers beyond 64
    bits, NaN and infinities (Python's JSON parser accepts them). The field is the path."""
    stack: list[tuple[str, Any, int]] = [("", data, 0)]
    while stack:
        path, value, depth = stack.pop()
        field = path or "body"
        if depth > MAX_DEPTH:
            raise InvalidInput(field.split(".")[0], f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            if any("\x00" in str(k) for k in value):
                raise InvalidInput(_top(field), "a field name contains a NUL character")
            if "" in value:
                raise InvalidInput(_top(field), "a field name is empty")
            stack.extend(
                (f"{path}.{k}" if path else str(k), v, depth + 1) for k, v in value.items()
            )
        elif isinstance(value, str):
            if "\x00" in value:
                # PostgreSQL cannot store it; nothing Tactus keeps needs one.
                raise InvalidInput(_top(field), "must not contain NUL characters")
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", v, depth + 1) for i, v in enumerate(value))
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int) and not -(2**63) <= value < 2**63:
            raise InvalidInput(field, "integer out of range (64 bits)")
        elif isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput(field, "must be a finite number")


def _top(field: str) -> str:
    """The body field a nested path starts with (``arguments`` for ``arguments.a[2]``)."""
    return field.split(".")[0].split("[")[0] or "body"


def only_fields(data: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Refuse a body field the route does not know (a typo must not be ignored silently)."""
    known = set(allowed)
    for field in data:
        if field not in known:
            raise InvalidInput(field, f"unknown field (known: {', '.join(sorted(known))})")


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


def limit_of(params: Mapping[str, str]) -> int:
    """``limit``: an integer from 1 to 1000 (default 100)."""
    text = params.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    if not (text.isascii() and text.isdigit() and len(text) <= 4) or not (
        1 <= int(text) <= MAX_PAGE_SIZE
    ):
        raise InvalidInput("limit", f"must be an integer from 1 to {MAX_PAGE_SIZE} (got {text!r})")
    return int(text)


def cursor_of(params: Mapping[str, str]) -> str | None:
    """``cursor``: passed through to the store, which refuses one it did not issue."""
    cursor = params.get("cursor")
    if cursor is not None and (not cursor or len(cursor) > 2000):
        raise InvalidInput("cursor", "is not a cursor this server issued")
    return cursor


def page(
    items: list[T],
    key: Callable[[T], str],
    params: Mapping[str, str],
    render: Callable[[T], Any] = lambda item: item,
) -> dict[str, Any]:
    """A page of a list the services return whole, ordered by ``key`` (the same
    ``{"items", "next_cursor"}`` shape and cursor rules as the store's lists)."""
    limit = limit_of(params)
    cursor = cursor_of(params)
    ordered = sorted(items, key=key)
    if cursor is not None:
        (after,) = decode_cursor(cursor, 1)
        if not isinstance(after, str):
            raise InvalidInput("cursor", "is not a cursor this server issued")
        ordered = [item for item in ordered if key(item) > after]
    chosen = ordered[:limit]
    next_cursor = encode_cursor(key(chosen[-1])) if len(ordered) > limit else None
    return {"items": [render(item) for item in chosen], "next_cursor": next_cursor}


def audit_target(target: str) -> None:
    """Name what a mutating request acted on, for the audit trail."""
    g.audit_target = target
