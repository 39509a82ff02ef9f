"""Code shared by every store backend: cursors, limits, URI masking, field whitelists."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from db.errors import InvalidInput
from db.store import MAX_PAGE_SIZE

#: Unit-of-work fields that ``transition_uow``/``update_uow`` may change.
UOW_CHANGEABLE_FIELDS = frozenset(
    {
        "timeperiod",
        "attempt",
        "retries",
        "arguments",
        "scheduled_at",
        "submitted_at",
        "started_at",
        "finished_at",
        "retry_at",
        "heartbeat_at",
        "worker_id",
        "box_id",
        "pid",
        "exit_code",
        "output",
        "error",
        "end_timeperiod",
        "result",
    }
)
#: Job fields that ``transition_job`` may change besides the state.
JOB_CHANGEABLE_FIELDS = frozenset({"uow_id", "run"})
#: Supervised-process fields that ``transition_supervised`` may change besides the state.
SUPERVISED_CHANGEABLE_FIELDS = frozenset(
    {
        "pid",
        "create_time",
        "started_at",
        "stopped_at",
        "exit_code",
        "start_attempts",
        "backoff_until",
        "stats",
    }
)


def check_changes(entity: str, changes: dict[str, Any] | None, allowed: frozenset[str]) -> dict:
    """Return ``changes`` as a dict after refusing fields the caller may not change."""
    changes = dict(changes or {})
    bad = sorted(set(changes) - allowed)
    if bad:
        raise InvalidInput("changes", f"{entity} fields {', '.join(bad)} cannot be changed here")
    return changes


def check_limit(limit: int) -> int:
    """Clamp a page size to [1, MAX_PAGE_SIZE]; refuse non-positive or non-integer sizes."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidInput("limit", f"must be a positive integer (got {limit!r})")
    return min(limit, MAX_PAGE_SIZE)


def check_count(value: int, field: str, *, minimum: int = 1) -> int:
    """Refuse a count (``after``, a cap) that is not an integer of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInput(field, f"must be an integer of at least {minimum} (got {value!r})")
    return value


def encode_cursor(*values: Any) -> str:
    """An opaque cursor holding the sort key of the last item of a page."""
    raw = json.dumps(list(values), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    """Inverse of :func:`encode_cursor`; refuses cursors of the wrong shape."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError) as exc:
        raise InvalidInput("cursor", "is not a cursor this server issued") from exc
    if not isinstance(values, list) or len(values) != arity:
        raise InvalidInput("cursor", "is not a cursor this server issued")
    if not all(isinstance(v, str | int) for v in values):
        raise InvalidInput("cursor", "is not a cursor this server issued")
    return values


def mask_uri(uri: str) -> str:
    """The URI with its password replaced by ``***`` (safe for logs and pages)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[-1]}"))
