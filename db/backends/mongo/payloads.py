"""Payloads in MongoDB (SPEC section 12).

A document's 16 MiB limit is ``max_payload_bytes``' default, so the bytes live in chunks of
:data:`CHUNK_BYTES`, one document each, keyed by the content's SHA-256 and their number. The
chunks are written first and the description last: its insert (unique ``sha256``) is the
insert-if-absent, and a reader finds a description only once every chunk is stored. Two writers
of the same bytes write the same chunks (a duplicate chunk is skipped), and the one whose
description insert loses reads the winner's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pymongo.errors import DuplicateKeyError

from db.backends.mongo.core import MongoCore
from db.backends.mongo.documents import aware_utc, to_utc
from db.backends.mongo.errors import translated
from db.backends.mongo.schema import PAYLOAD_CHUNKS, PAYLOADS
from db.errors import NotFound, StoreUnavailable
from db.models import Payload

if TYPE_CHECKING:
    from collections.abc import Mapping

#: Bytes per chunk document (well below MongoDB's 16 MiB per document).
CHUNK_BYTES = 4 * 1024 * 1024


class PayloadsMixin(MongoCore):
    """The payload part of the store interface."""

    @translated
    def save_payload(self, payload: Payload) -> tuple[Payload, bool]:
        """Store chunks then the description, unless the SHA-256 is stored already."""
        found = self._db[PAYLOADS].find_one({"sha256": payload.sha256})
        if found is not None:
            return _payload_from(found), False
        data = payload.data or b""
        chunks = self._db[PAYLOAD_CHUNKS]
        for number, start in enumerate(range(0, len(data), CHUNK_BYTES)):
            chunk = {
                "_id": f"{payload.sha256}:{number:06d}",
                "sha256": payload.sha256,
                "n": number,
                "data": data[start : start + CHUNK_BYTES],
            }
            try:
                chunks.insert_one(chunk)
            except DuplicateKeyError:
                pass  # the same bytes, stored by another writer (or an interrupted one)
        doc = {
            "_id": payload.id,
            "sha256": payload.sha256,
            "size": payload.size,
            "content_type": payload.content_type,
            "created_at": to_utc(payload.created_at, "created_at"),
        }
        try:
            self._db[PAYLOADS].insert_one(doc)
        except DuplicateKeyError:
            stored = self._db[PAYLOADS].find_one({"sha256": payload.sha256})
            if stored is None:
                raise StoreUnavailable(
                    f"payload {payload.sha256}: neither stored nor found"
                ) from None
            return _payload_from(stored), False
        return _payload_from(doc), True

    @translated
    def get_payload(self, payload_id: str, *, data: bool = True) -> Payload:
        """One payload (with its bytes unless ``data`` is false); NotFound if none."""
        doc = self._db[PAYLOADS].find_one({"_id": payload_id})
        if doc is None:
            raise NotFound("payload", payload_id)
        if not data:
            return _payload_from(doc)
        parts = self._db[PAYLOAD_CHUNKS].find({"sha256": doc["sha256"]}).sort("n", 1)
        content = b"".join(bytes(part["data"]) for part in parts)
        if len(content) != doc["size"]:
            raise StoreUnavailable(
                f"payload {payload_id}: {len(content)} of its {doc['size']} bytes found"
            )
        return _payload_from(doc, content)


def _payload_from(doc: Mapping[str, Any], data: bytes | None = None) -> Payload:
    return Payload(
        id=doc["_id"],
        sha256=doc["sha256"],
        size=int(doc["size"]),
        content_type=doc["content_type"],
        created_at=aware_utc(doc["created_at"]),
        data=data,
    )
