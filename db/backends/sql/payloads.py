"""Payloads in the SQL store (SPEC section 12): one description per content, unique by SHA-256,
and the bytes in chunks of :data:`CHUNK_BYTES`.

Chunks keep every statement small: MariaDB's default ``max_allowed_packet`` (16 MiB) is the size
of the largest payload ``max_payload_bytes`` allows by default, and one row of that size would
not pass. The chunks are keyed by the content (SHA-256 and number), so two writers of the same
bytes write the same rows, and the description and its chunks commit in one transaction.

The tables join the store's ``metadata`` when this module is imported (the store imports its
mixin), so ``init_schema`` and ``reset_schema`` create and drop them with the others.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from db.backends.sql import rows
from db.backends.sql.core import SqlCore
from db.backends.sql.schema import _MYSQL_TABLE, ID_LENGTH, UtcDateTime, _key, metadata
from db.errors import NotFound, StoreUnavailable
from db.models import Payload

if TYPE_CHECKING:
    from collections.abc import Mapping

#: A SHA-256 in hex.
SHA256_LENGTH = 64

#: Bytes per chunk row (well below every server's packet limit).
CHUNK_BYTES = 1024 * 1024

payloads = sa.Table(
    "payloads",
    metadata,
    sa.Column("id", _key(ID_LENGTH), primary_key=True),
    sa.Column("sha256", _key(SHA256_LENGTH), nullable=False),
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("content_type", sa.String(255), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.UniqueConstraint("sha256", name="uq_payloads_sha256"),
    **_MYSQL_TABLE,
)

payload_chunks = sa.Table(
    "payload_chunks",
    metadata,
    sa.Column("sha256", _key(SHA256_LENGTH), primary_key=True),
    sa.Column("n", sa.Integer(), primary_key=True, autoincrement=False),
    # MEDIUMBLOB on MySQL: BLOB stops at 64 KiB.
    sa.Column(
        "data",
        sa.LargeBinary().with_variant(mysql.MEDIUMBLOB(), "mysql", "mariadb"),
        nullable=False,
    ),
    **_MYSQL_TABLE,
)


class PayloadsMixin(SqlCore):
    """The payload part of :class:`~db.store.Store` on SQL."""

    def save_payload(self, payload: Payload) -> tuple[Payload, bool]:
        """Insert the chunks and the description unless the SHA-256 is stored; the stored one
        either way."""
        found = self._payload_by_sha(payload.sha256)
        if found is not None:
            return found, False  # the bytes are not sent again
        row = {
            "id": payload.id,
            "sha256": payload.sha256,
            "size": payload.size,
            "content_type": payload.content_type,
            "created_at": rows.instant(payload.created_at, "created_at"),
        }
        data = payload.data or b""
        chunks = [
            {"sha256": payload.sha256, "n": n, "data": data[start : start + CHUNK_BYTES]}
            for n, start in enumerate(range(0, len(data), CHUNK_BYTES))
        ]
        insert_chunk = self._insert_ignore(payload_chunks)
        insert = self._insert_ignore(payloads)
        select = sa.select(payloads).where(payloads.c.sha256 == payload.sha256)

        def work(conn: sa.Connection) -> tuple[Payload, bool]:
            for chunk in chunks:  # one statement each: each stays small
                conn.execute(insert_chunk, chunk)
            if conn.execute(insert, row).rowcount == 1:
                return _payload_from(row), True
            # Another writer stored the same bytes first: its insert committed before ours
            # was skipped, so this read sees it (and its chunks are the same as ours).
            stored = conn.execute(select).first()
            if stored is None:
                raise StoreUnavailable(f"payload {payload.sha256}: neither stored nor found")
            return _payload_from(stored._mapping), False

        return self._write(work, entity="payload", key=payload.sha256)

    def get_payload(self, payload_id: str, *, data: bool = True) -> Payload:
        """One payload (with its bytes unless ``data`` is false); NotFound if none."""
        described = sa.select(payloads).where(payloads.c.id == payload_id)
        c = payload_chunks.c

        def work(conn: sa.Connection) -> Payload | None:
            row = conn.execute(described).first()
            if row is None:
                return None
            found = _payload_from(row._mapping)
            if not data:
                return found
            parts = conn.execute(
                sa.select(c.data).where(c.sha256 == found.sha256).order_by(c.n)
            ).scalars()
            return replace(found, data=b"".join(bytes(part) for part in parts))

        found = self._read(work)
        if found is None:
            raise NotFound("payload", payload_id)
        if found.data is not None and len(found.data) != found.size:
            raise StoreUnavailable(
                f"payload {payload_id}: {len(found.data)} of its {found.size} bytes found"
            )
        return found

    def _payload_by_sha(self, sha256: str) -> Payload | None:
        stmt = sa.select(payloads).where(payloads.c.sha256 == sha256)
        row = self._read(lambda conn: conn.execute(stmt).first())
        return None if row is None else _payload_from(row._mapping)


def _payload_from(row: Mapping[str, Any]) -> Payload:
    return Payload(
        id=row["id"],
        sha256=row["sha256"],
        size=int(row["size"]),
        content_type=row["content_type"],
        created_at=rows.instant(row["created_at"], "created_at"),
    )
