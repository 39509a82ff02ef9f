"""``/api/v1/payloads``: post bytes once (operator), read them back (SPEC section 12)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Response, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from db.errors import PayloadTooLarge
from mx.api.common import bp, ctx, query
from mx.runtime import runtime
from mx.services import payloads

if TYPE_CHECKING:
    from flask.typing import ResponseReturnValue

#: The endpoint whose body may be as large as ``max_payload_bytes`` (mx/app.py's default limit
#: is 1 MiB).
POST_ENDPOINT = "api.payloads_post"


def allow_payload_body() -> None:
    """Before anything reads the body of ``POST /payloads``: raise its size limit to
    ``max_payload_bytes``, and refuse a larger declared ``Content-Length`` at once with our
    413 naming the limit (werkzeug's own 413 does not)."""
    if request.endpoint != POST_ENDPOINT:
        return
    limit = runtime().settings.max_payload_bytes
    # One byte more: a stream without Content-Length (chunked) is read up to the limit and
    # stops there without a word, so a body cut at limit + 1 is the one that is too large.
    request.max_content_length = limit + 1
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(limit, request.content_length)
    try:
        request.get_data(cache=True, parse_form_data=False)
    except RequestEntityTooLarge:
        # A body without Content-Length (chunked) that runs past the limit.
        raise PayloadTooLarge(limit) from None


@bp.post("/payloads")
def payloads_post() -> ResponseReturnValue:
    """Store the body as a payload (JSON, or any bytes with their ``Content-Type``) -> 201
    ``{"payload_id", "sha256", "size", ...}``; the same bytes again give the same payload
    (``created`` false)."""
    query()
    answer = payloads.post_payload(
        ctx(),
        request.get_data(cache=True, parse_form_data=False),
        request.headers.get("Content-Type"),
        limit=runtime().settings.max_payload_bytes,
    )
    return jsonify(answer), 201


@bp.get("/payloads/<payload_id>")
def payloads_get(payload_id: str) -> ResponseReturnValue:
    """The payload's bytes, with its content type."""
    query()
    payload = payloads.read_payload(runtime().store, payload_id)
    response = Response(payload.data, content_type=payload.content_type)
    response.headers["X-Payload-Sha256"] = payload.sha256
    response.headers["Cache-Control"] = "private, max-age=31536000, immutable"
    return response
