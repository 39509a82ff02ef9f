"""The credentials part of the store interface: tokens, users and the audit trail (mx)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from db.credentials import AuditEntry, Credential, CredentialKind
    from db.models import Page


class CredentialStore(ABC):
    """Credentials and the audit trail: a part of :class:`~db.store.Store`."""

    @abstractmethod
    def save_credential(self, credential: Credential) -> Credential:
        """Store a new token or user (secrets are stored hashed by the caller, never in clear).

        Args:
            credential: the credential, its ``secret_hash`` already computed.

        Returns:
            The stored credential.

        Raises:
            DuplicateKey: a credential of the same (kind, name), or the same ``secret_hash``,
                exists; nothing was written.
        """

    @abstractmethod
    def find_credential_by_hash(self, secret_hash: str) -> Credential | None:
        """The credential whose ``secret_hash`` is exactly this (a bearer token's lookup), or
        None."""

    @abstractmethod
    def find_credential(self, kind: CredentialKind, name: str) -> Credential | None:
        """The credential of this kind and name (a user's login), or None."""

    @abstractmethod
    def list_credentials(self, kind: CredentialKind | None = None) -> list[Credential]:
        """Every credential (optionally of one kind), ordered by (kind, name)."""

    @abstractmethod
    def delete_credential(self, kind: CredentialKind, name: str) -> None:
        """Remove a token or user; requests authenticated by it fail from then on.

        Raises:
            NotFound: no credential of this kind and name.
        """

    @abstractmethod
    def append_audit(
        self,
        *,
        who: str,
        what: str,
        target: str,
        at: datetime,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """Append one entry to the audit trail (append-only: entries are never changed).

        Args:
            who: the principal (``token deploy``, ``user alice``).
            what: the action (``POST /api/v1/uows/{id}/cancel``).
            target: what it acted on ("" when nothing in particular).
            at: when (aware).
            details: JSON-compatible facts (status, error code).

        Returns:
            The stored entry with its time-ordered id.

        Raises:
            InvalidInput: ``at`` is naive.
        """

    @abstractmethod
    def list_audit(self, *, limit: int = 100, cursor: str | None = None) -> Page[AuditEntry]:
        """Audit entries, newest first, keyset-paginated by id.

        Raises:
            InvalidInput: bad ``cursor`` or ``limit``.
        """
