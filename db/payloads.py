"""Payloads and messages (SPEC section 12): the rules every door shares.

A payload is bytes with a content type, stored once per content (its SHA-256 is a unique key)
and named by its ``payload_id``. An inline payload (a JSON value in a task, a trigger or an
entry) is stored as the UTF-8 of its compact JSON, so the same value gives the same payload.
Messages are lines of text a running unit of work emits, each cut to :data:`MESSAGE_CHARS`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from db.errors import InvalidInput
from db.ids import new_id
from db.models import Payload

if TYPE_CHECKING:
    from datetime import datetime

    from db.models import ProcessEntry
    from db.store import Store

#: Content type of an inline payload and of a JSON body posted to ``/payloads``.
JSON_TYPE = "application/json"
#: Content type of bytes posted without one.
DEFAULT_TYPE = "application/octet-stream"
#: Longest content type kept.
CONTENT_TYPE_LENGTH = 255
#: What a content type looks like (``type/subtype`` and parameters).
_CONTENT_TYPE = re.compile(r"[\w.+-]+/[\w.+-]+(\s*;\s*[\w.+-]+=(\"[^\"]*\"|[\w.+-]+))*", re.ASCII)
#: What a payload id looks like (db.ids: 24 hex digits; a little room for hand-made ones).
_PAYLOAD_ID = re.compile(r"[0-9a-f]{1,32}")
#: Longest message kept, in characters; a longer line is cut and marked.
MESSAGE_CHARS = 4000


def sha256_of(data: bytes) -> str:
    """The payload key of ``data``: its SHA-256 in lower-case hex."""
    return hashlib.sha256(data).hexdigest()


def new_payload(data: bytes, content_type: str | None, now: datetime) -> Payload:
    """A payload of ``data``, not stored yet (:meth:`db.store.Store.save_payload`).

    Raises:
        InvalidInput: field ``content_type``: not ``type/subtype`` or too long.
    """
    return Payload(
        id=new_id(),
        sha256=sha256_of(data),
        size=len(data),
        content_type=check_content_type(content_type),
        created_at=now,
        data=bytes(data),
    )


def check_content_type(value: str | None) -> str:
    """A content type as stored (``application/octet-stream`` when none is given).

    Raises:
        InvalidInput: field ``content_type``: not ``type/subtype`` or too long.
    """
    if value is None or not value.strip():
        return DEFAULT_TYPE
    value = value.strip()
    if len(value) > CONTENT_TYPE_LENGTH or not _CONTENT_TYPE.fullmatch(value):
        raise InvalidInput("content_type", f"is not a content type (type/subtype): {value[:80]!r}")
    return value


def inline_bytes(value: Any, field: str = "payload") -> bytes:
    """The bytes an inline payload (a JSON value) is stored as: compact JSON with sorted keys,
    so equal values are one payload.

    Raises:
        InvalidInput: ``field``: not a JSON value.
    """
    try:
        return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidInput(field, f"must be a JSON value ({exc})") from None


def check_payload_id(value: Any, field: str = "payload_id") -> str:
    """A well-formed payload id.

    Raises:
        InvalidInput: ``field``: not a payload id.
    """
    if not isinstance(value, str) or not _PAYLOAD_ID.fullmatch(value):
        raise InvalidInput(field, f"is not a payload id (got {str(value)[:40]!r})")
    return value


def store_inline(store: Store, value: Any, now: datetime, field: str = "payload") -> Payload:
    """Store an inline payload (or find it stored) and return it.

    Raises:
        InvalidInput: ``field``: not a JSON value.
    """
    stored, _ = store.save_payload(new_payload(inline_bytes(value, field), JSON_TYPE, now))
    return stored


def resolve(store: Store, payload_id: Any, payload: Any, now: datetime) -> str | None:
    """The payload id a request names: ``payload_id`` (it must exist), or an inline ``payload``
    stored now; None when neither is given (a field set to null counts as absent).

    Raises:
        InvalidInput: both given, or a malformed id.
        NotFound: no payload has this id.
    """
    if payload_id is not None and payload is not None:
        raise InvalidInput("payload", "give either payload_id or payload, not both")
    if payload_id is not None:
        payload_id = check_payload_id(payload_id)
        store.get_payload(payload_id, data=False)  # NotFound: a well-formed id, not stored
        return payload_id
    if payload is not None:
        return store_inline(store, payload, now).id
    return None


def entry_with_stored_payload(store: Store, entry: ProcessEntry, now: datetime) -> ProcessEntry:
    """``entry`` as it is stored: an inline ``payload`` stored and replaced by its
    ``payload_id`` (the same value gives the same id, so registering a file again changes
    nothing); a ``payload_id`` checked to exist.

    Raises:
        NotFound: no payload has the entry's ``payload_id``.
    """
    if entry.payload is not None:
        stored = store_inline(store, entry.payload, now)
        return replace(entry, payload_id=stored.id, payload=None)
    if entry.payload_id is not None:
        store.get_payload(entry.payload_id, data=False)
    return entry


def message_text(line: str) -> str:
    """One message as stored: without its line end, cut to :data:`MESSAGE_CHARS`."""
    line = line.rstrip("\r\n")
    if len(line) > MESSAGE_CHARS:
        return line[: MESSAGE_CHARS - 1] + "…"
    return line
