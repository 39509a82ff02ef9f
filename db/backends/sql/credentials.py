"""Credentials (tokens and users) and the audit trail in the SQL store.

The two tables join the store's ``metadata`` when this module is imported (the store imports its
mixin), so ``init_schema`` and ``reset_schema`` create and drop them with the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from db.backends.base import check_limit, decode_cursor, encode_cursor
from db.backends.sql import rows
from db.backends.sql.core import SqlCore
from db.backends.sql.schema import (
    _MYSQL_TABLE,
    ID_LENGTH,
    NAME_LENGTH,
    STATE_LENGTH,
    UtcDateTime,
    _key,
    metadata,
)
from db.credentials import AuditEntry, Credential, CredentialKind, Role
from db.errors import InvalidInput, NotFound
from db.ids import new_ids
from db.models import Page

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

#: Longest stored secret hash (SHA-256 hex is 64 characters, an encoded scrypt hash about 100).
HASH_LENGTH = 255

credentials = sa.Table(
    "credentials",
    metadata,
    sa.Column("id", _key(ID_LENGTH), primary_key=True),
    sa.Column("kind", _key(STATE_LENGTH), nullable=False),
    sa.Column("name", _key(NAME_LENGTH), nullable=False),
    sa.Column("role", sa.String(STATE_LENGTH), nullable=False),
    sa.Column("secret_hash", _key(HASH_LENGTH), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("created_by", sa.String(NAME_LENGTH), nullable=False),
    sa.UniqueConstraint("kind", "name", name="uq_credentials_kind_name"),
    sa.UniqueConstraint("secret_hash", name="uq_credentials_secret_hash"),
    **_MYSQL_TABLE,
)

audit = sa.Table(
    "audit",
    metadata,
    # Time-ordered ids (db.ids): the primary key's order is the trail's order.
    sa.Column("id", _key(ID_LENGTH), primary_key=True),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("who", sa.String(NAME_LENGTH), nullable=False),
    sa.Column("what", sa.String(NAME_LENGTH), nullable=False),
    sa.Column("target", sa.Text(), nullable=False),
    sa.Column("details", sa.JSON(), nullable=False),
    **_MYSQL_TABLE,
)

_INSERT_CREDENTIAL = sa.insert(credentials)
_INSERT_AUDIT = sa.insert(audit)


class CredentialsMixin(SqlCore):
    """The credential and audit part of :class:`~db.store.Store` on SQL."""

    def save_credential(self, credential: Credential) -> Credential:
        """Insert a token or user; DuplicateKey if (kind, name) or the hash is taken."""
        row = {
            "id": credential.id,
            "kind": str(credential.kind),
            "name": credential.name,
            "role": str(credential.role),
            "secret_hash": credential.secret_hash,
            "created_at": rows.instant(credential.created_at, "created_at"),
            "created_by": credential.created_by,
        }
        key = f"{credential.kind}/{credential.name}"
        self._write(
            lambda conn: conn.execute(_INSERT_CREDENTIAL, row), entity="credential", key=key
        )
        return _credential_from(row)

    def find_credential_by_hash(self, secret_hash: str) -> Credential | None:
        """The credential with this exact hash, or None."""
        stmt = sa.select(credentials).where(credentials.c.secret_hash == secret_hash)
        row = self._read(lambda conn: conn.execute(stmt).first())
        return None if row is None else _credential_from(row._mapping)

    def find_credential(self, kind: CredentialKind, name: str) -> Credential | None:
        """The credential of this kind and name, or None."""
        c = credentials.c
        stmt = sa.select(credentials).where(c.kind == str(kind), c.name == name)
        row = self._read(lambda conn: conn.execute(stmt).first())
        return None if row is None else _credential_from(row._mapping)

    def list_credentials(self, kind: CredentialKind | None = None) -> list[Credential]:
        """Every credential (optionally of one kind), ordered by (kind, name)."""
        c = credentials.c
        stmt = sa.select(credentials).order_by(c.kind, c.name)
        if kind is not None:
            stmt = stmt.where(c.kind == str(kind))
        found = self._read(lambda conn: conn.execute(stmt).all())
        return [_credential_from(row._mapping) for row in found]

    def delete_credential(self, kind: CredentialKind, name: str) -> None:
        """Remove a credential; NotFound if there is none of this kind and name."""
        c = credentials.c
        stmt = sa.delete(credentials).where(c.kind == str(kind), c.name == name)

        def work(conn: sa.Connection) -> None:
            if conn.execute(stmt).rowcount == 0:
                raise NotFound("credential", f"{kind}/{name}")

        self._write(work)

    def append_audit(
        self,
        *,
        who: str,
        what: str,
        target: str,
        at: datetime,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """Append one audit entry with a fresh time-ordered id."""
        row = {
            "id": new_ids(1)[0],
            "at": rows.instant(at, "at"),
            "who": who,
            "what": what,
            "target": target,
            "details": dict(details or {}),
        }
        self._write(lambda conn: conn.execute(_INSERT_AUDIT, row))
        return _audit_from(row)

    def list_audit(self, *, limit: int = 100, cursor: str | None = None) -> Page[AuditEntry]:
        """Audit entries, newest first, keyset-paginated by id."""
        limit = check_limit(limit)
        stmt = sa.select(audit).order_by(audit.c.id.desc()).limit(limit + 1)
        if cursor is not None:
            stmt = stmt.where(audit.c.id < _audit_cursor(cursor))
        found = self._read(lambda conn: conn.execute(stmt).all())
        items = [_audit_from(row._mapping) for row in found[:limit]]
        next_cursor = encode_cursor(items[-1].id) if len(found) > limit else None
        return Page(items, next_cursor)


def _audit_cursor(cursor: str) -> str:
    (value,) = decode_cursor(cursor, 1)
    if not isinstance(value, str):
        raise InvalidInput("cursor", "is not a cursor this server issued")
    return value


def _credential_from(row: Mapping[str, Any]) -> Credential:
    return Credential(
        id=row["id"],
        kind=CredentialKind(row["kind"]),
        name=row["name"],
        role=Role(row["role"]),
        secret_hash=row["secret_hash"],
        created_at=rows.instant(row["created_at"], "created_at"),
        created_by=row["created_by"],
    )


def _audit_from(row: Mapping[str, Any]) -> AuditEntry:
    return AuditEntry(
        id=row["id"],
        at=rows.instant(row["at"], "at"),
        who=row["who"],
        what=row["what"],
        target=row["target"],
        details=dict(row["details"] or {}),
    )
