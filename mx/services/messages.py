"""Messages of units of work and tasks (SPEC section 12): one page in order, to follow."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from db.errors import InvalidInput
from db.states import TERMINAL_UOW_STATES
from mx.services import validate
from mx.services.serialize import instant

if TYPE_CHECKING:
    from db.models import UowMessage
    from db.store import Store

#: Messages a unit of work's page shows: its last ones.
PAGE_TAIL = 200


def list_messages(
    store: Store, uow_id: str, *, after: Any = None, limit: Any = None
) -> dict[str, Any]:
    """One page of a unit of work's messages, oldest first.

    Args:
        store: the store.
        uow_id: the unit of work (or task).
        after: the ``seq`` of the last message the caller has (a string of digits from a query,
            or an int); None or empty: from the first.
        limit: page size (1 to 1000; default 100).

    Returns:
        ``{"uow_id", "state", "items": [{"seq", "attempt", "at", "text"}], "dropped", "more",
        "next_after"}``: pass ``next_after`` back as ``after`` to follow; ``state`` tells
        whether more can come (``finished``: the unit of work ended).

    Raises:
        InvalidInput: a bad ``after`` or ``limit``.
        NotFound: no such unit of work.
    """
    uow = store.get_uow(validate.identifier(uow_id, "uow_id"))
    start = _after(after)
    page = store.list_messages(uow.id, after=start, limit=validate.limit(limit))
    return {
        "uow_id": uow.id,
        "state": uow.state.value,
        "finished": uow.state in TERMINAL_UOW_STATES,
        "items": [message_json(m) for m in page.items],
        "dropped": page.dropped,
        "more": page.more,
        "next_after": page.items[-1].seq if page.items else start,
    }


def message_json(message: UowMessage) -> dict[str, Any]:
    """One message in the API's shape."""
    return {
        "seq": message.seq,
        "attempt": message.attempt,
        "at": instant(message.at),
        "text": message.text,
    }


def tail(store: Store, uow_id: str) -> dict[str, Any]:
    """A unit of work's last :data:`PAGE_TAIL` messages and how many the cap dropped (its
    page)."""
    page = store.list_messages(uow_id, limit=PAGE_TAIL, newest=True)
    items = [message_json(m) for m in page.items]
    return {"items": items, "dropped": page.dropped, "earlier": bool(items) and items[0]["seq"] > 1}


def _after(value: Any) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise InvalidInput("after", f"must be the seq of a message, 0 or more (got {str(value)!r})")
