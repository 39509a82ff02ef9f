"""Pages of the lists that the services return whole (processes, boxes, workers), with the same
``{"items", "next_cursor"}`` shape and cursor rules as the store's lists."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from db.backends.base import decode_cursor, encode_cursor
from db.errors import InvalidInput
from mx.services import validate

T = TypeVar("T")


def page(
    items: list[T],
    key: Callable[[T], str],
    *,
    limit: int | str | None = None,
    cursor: str | None = None,
    render: Callable[[T], Any] = lambda item: item,
) -> dict[str, Any]:
    """The page of ``items`` (ordered by ``key``) after ``cursor``.

    Raises:
        InvalidInput: a bad ``limit``, or a ``cursor`` this list did not issue.
    """
    size = validate.limit(limit)
    after = validate.cursor(cursor)
    ordered = sorted(items, key=key)
    if after is not None:
        (last,) = decode_cursor(after, 1)
        if not isinstance(last, str):
            raise InvalidInput("cursor", "is not a cursor this server issued")
        ordered = [item for item in ordered if key(item) > last]
    chosen = ordered[:size]
    next_cursor = encode_cursor(key(chosen[-1])) if len(ordered) > size else None
    return {"items": [render(item) for item in chosen], "next_cursor": next_cursor}
