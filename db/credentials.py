"""Credentials and the audit trail: the values the store keeps for mx's security.

A credential is a bearer token (for scripts and the remote command line) or a user with a password
(for the web page). Neither is ever stored in the clear: a token as the SHA-256 of its random
secret, a password as a salted scrypt hash (``mx.services.credentials`` makes both). The audit
trail records who did what to which target, and when, for every mutating request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Role(StrEnum):
    """What a principal may do; each role includes the ones before it.

    - ``viewer``: read everything (every GET).
    - ``operator``: also act: trigger, enable, reprocess, skip, cancel, start and stop.
    - ``admin``: also run shell commands by API (ad-hoc tasks, freerun entries with ``command``).
    - ``executor``: apart from the others: only the executor routes (``/api/v1/executor/...``,
      SPEC section 11), which admin may call too; it reads nothing and acts on nothing else.
    """

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"
    EXECUTOR = "executor"

    @property
    def rank(self) -> int:
        """0 for viewer up to 2 for admin; -1 for executor, which includes none of them."""
        return _ROLE_RANK[self]

    def allows(self, needed: Role) -> bool:
        """Whether this role may do what ``needed`` may. ``executor`` stands outside the
        ranks: it allows only itself, and only itself and admin allow it."""
        if Role.EXECUTOR in (self, needed):
            return self is needed or self is Role.ADMIN
        return self.rank >= needed.rank


#: The ranks of the roles that include each other (executor stands apart, below viewer).
_ROLE_RANK = {Role.EXECUTOR: -1, Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


class CredentialKind(StrEnum):
    """How a principal proves who it is."""

    #: ``Authorization: Bearer <secret>``; stored as the SHA-256 hex digest of the secret.
    TOKEN = "token"
    #: A user name and password for the page's login; stored as a salted scrypt hash.
    PASSWORD = "password"


@dataclass(frozen=True, kw_only=True, slots=True)
class Credential:
    """One token or user; unique by (kind, name), and by ``secret_hash``."""

    id: str
    kind: CredentialKind
    #: The token's name (``deploy``, ``admin``) or the user's login name.
    name: str
    role: Role
    #: Token: SHA-256 hex of the secret. Password: ``scrypt$n$r$p$salt$hash`` (base64 parts).
    secret_hash: str
    created_at: datetime
    #: Who created it (``first start``, ``cli``, ``token admin``).
    created_by: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditEntry:
    """One mutating action: who did what to which target, when, and how it ended."""

    #: Time-ordered id (``db.ids``): newest first is id order.
    id: str
    at: datetime
    #: The principal (``token deploy``, ``user alice``).
    who: str
    #: The action (``POST /api/v1/processes/{name}/trigger``, ``login``).
    what: str
    #: What it acted on (``process cron``, ``job site_hourly/2026010513``); "" when none.
    target: str
    #: Extra facts: the response status, the error code, the remote address.
    details: Mapping[str, Any] = field(default_factory=dict)
