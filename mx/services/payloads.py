"""Payloads (SPEC section 12): post bytes once, read them back."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from db.errors import InvalidInput, PayloadTooLarge
from db.payloads import JSON_TYPE, check_content_type, new_payload
from mx.services import validate
from mx.services.serialize import instant

if TYPE_CHECKING:
    from db.models import Payload
    from db.store import Store
    from mx.services.context import ServiceContext

log = logging.getLogger(f"tactus.{__name__}")


def post_payload(
    ctx: ServiceContext, data: bytes, content_type: str | None, *, limit: int
) -> dict[str, Any]:
    """Store ``data`` as a payload, or find the payload of the same bytes.

    Args:
        ctx: the service context.
        data: the bytes.
        content_type: their content type (``application/octet-stream`` when None); a JSON
            content type needs a JSON document.
        limit: ``max_payload_bytes``.

    Returns:
        ``{"payload_id", "sha256", "size", "content_type", "created_at", "created"}``:
        ``created`` is False when the same bytes were posted before (that payload is returned).

    Raises:
        PayloadTooLarge: more than ``limit`` bytes.
        InvalidInput: no bytes, a bad content type, or a JSON content type with a body that
            is not JSON.
    """
    if len(data) > limit:
        raise PayloadTooLarge(limit, len(data))
    if not data:
        raise InvalidInput("body", "a payload needs at least one byte")
    kind = check_content_type(content_type)
    if kind.split(";")[0].strip().lower() == JSON_TYPE:
        try:
            json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise InvalidInput("body", f"is not a JSON document ({exc})") from None
    payload, created = ctx.store.save_payload(new_payload(data, kind, ctx.clock.now()))
    if created:
        log.info("payload %s: %d bytes stored by %s", payload.id, payload.size, ctx.actor)
    return {**payload_json(payload), "created": created}


def payload_json(payload: Payload) -> dict[str, Any]:
    """A payload's description in the API's shape."""
    return {
        "payload_id": payload.id,
        "sha256": payload.sha256,
        "size": payload.size,
        "content_type": payload.content_type,
        "created_at": instant(payload.created_at),
    }


def read_payload(store: Store, payload_id: str) -> Payload:
    """A payload with its bytes.

    Raises:
        InvalidInput: an empty id, or one with a NUL or a lone surrogate.
        NotFound: no such payload.
    """
    return store.get_payload(validate.identifier(payload_id, "payload_id"))
