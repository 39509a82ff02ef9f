"""Credentials (tokens and users) and the audit trail in MongoDB.

One document per credential, unique by (kind, name) and by ``secret_hash`` (indexes in
``schema.py``); one document per audit entry, its ``_id`` the time-ordered entry id, so the
trail pages by ``_id`` like units of work do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pymongo.errors import DuplicateKeyError

from db.backends.base import check_limit, decode_cursor, encode_cursor
from db.backends.mongo.core import MongoCore
from db.backends.mongo.documents import aware_utc, to_utc
from db.backends.mongo.errors import translated
from db.backends.mongo.schema import AUDIT, CREDENTIALS
from db.credentials import AuditEntry, Credential, CredentialKind, Role
from db.errors import DuplicateKey, InvalidInput, NotFound
from db.ids import new_ids
from db.models import Page

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime


class CredentialsMixin(MongoCore):
    """The credential and audit part of the store interface."""

    @translated
    def save_credential(self, credential: Credential) -> Credential:
        """Insert a token or user; DuplicateKey if (kind, name) or the hash is taken."""
        doc = {
            "_id": credential.id,
            "kind": credential.kind.value,
            "name": credential.name,
            "role": credential.role.value,
            "secret_hash": credential.secret_hash,
            "created_at": to_utc(credential.created_at, "created_at"),
            "created_by": credential.created_by,
        }
        try:
            self._db[CREDENTIALS].insert_one(doc)
        except DuplicateKeyError as exc:
            raise DuplicateKey("credential", f"{credential.kind}/{credential.name}") from exc
        return _credential_from(doc)

    @translated
    def find_credential_by_hash(self, secret_hash: str) -> Credential | None:
        """The credential with this exact hash, or None."""
        doc = self._db[CREDENTIALS].find_one({"secret_hash": secret_hash})
        return None if doc is None else _credential_from(doc)

    @translated
    def find_credential(self, kind: CredentialKind, name: str) -> Credential | None:
        """The credential of this kind and name, or None."""
        doc = self._db[CREDENTIALS].find_one({"kind": kind.value, "name": name})
        return None if doc is None else _credential_from(doc)

    @translated
    def list_credentials(self, kind: CredentialKind | None = None) -> list[Credential]:
        """Every credential (optionally of one kind), ordered by (kind, name)."""
        condition = {} if kind is None else {"kind": kind.value}
        docs = self._db[CREDENTIALS].find(condition).sort([("kind", 1), ("name", 1)])
        return [_credential_from(doc) for doc in docs]

    @translated
    def delete_credential(self, kind: CredentialKind, name: str) -> None:
        """Remove a credential; NotFound if there is none of this kind and name."""
        result = self._db[CREDENTIALS].delete_one({"kind": kind.value, "name": name})
        if result.deleted_count == 0:
            raise NotFound("credential", f"{kind}/{name}")

    @translated
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
        doc = {
            "_id": new_ids(1)[0],
            "at": to_utc(at, "at"),
            "who": who,
            "what": what,
            "target": target,
            "details": dict(details or {}),
        }
        self._db[AUDIT].insert_one(doc)
        return _audit_from(doc)

    @translated
    def list_audit(self, *, limit: int = 100, cursor: str | None = None) -> Page[AuditEntry]:
        """Audit entries, newest first, keyset-paginated by ``_id``."""
        limit = check_limit(limit)
        condition = {} if cursor is None else {"_id": {"$lt": _audit_cursor(cursor)}}
        docs = list(self._db[AUDIT].find(condition).sort("_id", -1).limit(limit + 1))
        items = [_audit_from(doc) for doc in docs[:limit]]
        next_cursor = encode_cursor(items[-1].id) if len(docs) > limit else None
        return Page(items, next_cursor)


def _audit_cursor(cursor: str) -> str:
    (value,) = decode_cursor(cursor, 1)
    if not isinstance(value, str):
        raise InvalidInput("cursor", "is not a cursor this server issued")
    return value


def _credential_from(doc: Mapping[str, Any]) -> Credential:
    return Credential(
        id=doc["_id"],
        kind=CredentialKind(doc["kind"]),
        name=doc["name"],
        role=Role(doc["role"]),
        secret_hash=doc["secret_hash"],
        created_at=aware_utc(doc["created_at"]),
        created_by=doc.get("created_by") or "",
    )


def _audit_from(doc: Mapping[str, Any]) -> AuditEntry:
    return AuditEntry(
        id=doc["_id"],
        at=aware_utc(doc["at"]),
        who=doc["who"],
        what=doc["what"],
        target=doc["target"],
        details=dict(doc.get("details") or {}),
    )
