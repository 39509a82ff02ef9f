"""Payloads in the SQL store (SPEC section 12): one row per content, unique by SHA-256.

The table joins the store's ``metadata`` when this module is imported (the store imports its
mixin), so ``init_schema`` and ``reset_schema`` create and drop it with the others.
"""

from __future__ import annotations

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

payloads = sa.Table(
    "payloads",
    metadata,
    sa.Column("id", _key(ID_LENGTH), primary_key=True),
    sa.Column("sha256", _key(SHA256_LENGTH), nullable=False),
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("content_type", sa.String(255), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    # LONGBLOB on MySQL: MEDIUMBLOB stops one byte short of 16 MiB, the default limit.
    sa.Column(
        "data", sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb"), nullable=False
    ),
    sa.UniqueConstraint("sha256", name="uq_payloads_sha256"),
    **_MYSQL_TABLE,
)

#: Every column but the bytes.
_DESCRIPTION = [c for c in payloads.c if c.name != "data"]


class PayloadsMixin(SqlCore):
    """The payload part of :class:`~db.store.Store` on SQL."""

    def save_payload(self, payload: Payload) -> tuple[Payload, bool]:
        """Insert the payload unless its SHA-256 is stored; the stored one either way."""
        found = self._payload_by_sha(payload.sha256)
        if found is not None:
            return found, False  # the bytes are not sent again
        row = {
            "id": payload.id,
            "sha256": payload.sha256,
            "size": payload.size,
            "content_type": payload.content_type,
            "created_at": rows.instant(payload.created_at, "created_at"),
            "data": payload.data or b"",
        }
        stmt = self._insert_ignore(payloads)
        select = sa.select(*_DESCRIPTION).where(payloads.c.sha256 == payload.sha256)

        def work(conn: sa.Connection) -> tuple[Payload, bool]:
            if conn.execute(stmt, row).rowcount == 1:
                return _payload_from({**row, "data": None}), True
            # Another writer stored the same bytes first: its insert committed before ours
            # was skipped, so this read sees it.
            stored = conn.execute(select).first()
            if stored is None:
                raise StoreUnavailable(f"payload {payload.sha256}: neither stored nor found")
            return _payload_from(stored._mapping), False

        return self._write(work, entity="payload", key=payload.sha256)

    def get_payload(self, payload_id: str, *, data: bool = True) -> Payload:
        """One payload (with its bytes unless ``data`` is false); NotFound if none."""
        columns = list(payloads.c) if data else _DESCRIPTION
        stmt = sa.select(*columns).where(payloads.c.id == payload_id)
        row = self._read(lambda conn: conn.execute(stmt).first())
        if row is None:
            raise NotFound("payload", payload_id)
        return _payload_from(row._mapping)

    def _payload_by_sha(self, sha256: str) -> Payload | None:
        stmt = sa.select(*_DESCRIPTION).where(payloads.c.sha256 == sha256)
        row = self._read(lambda conn: conn.execute(stmt).first())
        return None if row is None else _payload_from(row._mapping)


def _payload_from(row: Mapping[str, Any]) -> Payload:
    data = row.get("data")
    return Payload(
        id=row["id"],
        sha256=row["sha256"],
        size=int(row["size"]),
        content_type=row["content_type"],
        created_at=rows.instant(row["created_at"], "created_at"),
        data=None if data is None else bytes(data),
    )
