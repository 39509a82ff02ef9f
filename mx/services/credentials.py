"""Tokens, users and the first admin token: the verbs of mx's security, without Flask.

``launch.py`` creates tokens through :func:`create_token` without loading Flask; ``mx/auth.py``
authenticates requests through :func:`authenticate_token` and :func:`authenticate_password`.
Secrets are never stored: a token is kept as the SHA-256 of its 32 random bytes (a lookup by
hash, no salt needed for a random secret), a password as a salted scrypt hash.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from db.clock import SystemClock
from db.credentials import Credential, CredentialKind, Role
from db.errors import DuplicateKey, InvalidInput
from db.ids import new_id

if TYPE_CHECKING:
    from db.clock import Clock
    from db.store import Store
    from settings import Settings

log = logging.getLogger(f"tactus.{__name__}")

#: Prefix of every token secret, so a leaked one is recognisable (secret scanners, logs).
TOKEN_PREFIX = "tct_"
#: Random bytes in a token secret.
TOKEN_BYTES = 32
#: Names of tokens and users.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
#: scrypt cost parameters (n, r, p): about 16 MiB and 50 ms per hash.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
#: Longest password accepted (hashing cost must not be the attacker's to choose).
MAX_PASSWORD = 1024
#: Longest string worth hashing as a token (anything longer is not one of ours).
MAX_TOKEN = 256
#: Name of the token written on first start.
FIRST_ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for: a token or a user, with its role."""

    kind: CredentialKind
    name: str
    role: Role
    credential_id: str

    @property
    def actor(self) -> str:
        """How histories and the audit name it: ``token deploy`` or ``user alice``."""
        prefix = "token" if self.kind is CredentialKind.TOKEN else "user"
        return f"{prefix} {self.name}"

    @classmethod
    def of(cls, credential: Credential) -> Principal:
        """The principal a stored credential authenticates."""
        return cls(credential.kind, credential.name, credential.role, credential.id)


# -- hashing ---------------------------------------------------------------------------------------


def token_hash(secret: str) -> str:
    """The stored form of a token: SHA-256 hex of its secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def hash_password(password: str) -> str:
    """A salted scrypt hash: ``scrypt$n$r$p$<salt>$<hash>`` (base64 parts)."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "$".join(
        ["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest)]
    )


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a hash made by :func:`hash_password` (constant time)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.urlsafe_b64decode(digest + "==")
        actual = _scrypt(password, base64.urlsafe_b64decode(salt + "=="), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 2**20, dklen=32)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against when the user does not exist, so both cases take as long
    (made on first use: importing this module stays cheap for the command line)."""
    return hash_password(secrets.token_urlsafe(16))


# -- creating --------------------------------------------------------------------------------------


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidInput("name", "must be 1 to 64 letters, digits or _ . @ -")
    return name


def _check_role(role: Any) -> Role:
    try:
        return Role(role)
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise InvalidInput("role", f"must be one of {known} (got {role!r})") from None


def create_token(
    store: Store,
    name: str,
    role: Role | str,
    *,
    created_by: str = "cli",
    clock: Clock | None = None,
) -> str:
    """Create a bearer token and return its secret (shown once; only its hash is stored).

    Args:
        store: where the hash goes.
        name: the token's name (``deploy``), unique among tokens.
        role: ``viewer``, ``operator`` or ``admin``.
        created_by: who creates it, for the record.
        clock: for ``created_at`` (default: the system clock).

    Returns:
        The secret, ``tct_`` followed by 43 URL-safe characters: pass it as
        ``Authorization: Bearer <secret>``.

    Raises:
        InvalidInput: a bad name or role.
        DuplicateKey: a token of that name exists.
    """
    secret = TOKEN_PREFIX + _b64(secrets.token_bytes(TOKEN_BYTES))
    store.save_credential(
        Credential(
            id=new_id(),
            kind=CredentialKind.TOKEN,
            name=_check_name(name),
            role=_check_role(role),
            secret_hash=token_hash(secret),
            created_at=(clock or SystemClock()).now(),
            created_by=created_by,
        )
    )
    log.info("token %s: created (role %s, by %s)", name, role, created_by)
    return secret


def create_user(
    store: Store,
    name: str,
    password: str,
    role: Role | str,
    *,
    created_by: str = "cli",
    clock: Clock | None = None,
) -> Credential:
    """Create a user of the web page with a password (stored as a salted scrypt hash).

    Raises:
        InvalidInput: a bad name, role (``executor`` is for tokens: an executor has no page),
            or a password shorter than 8 characters.
        DuplicateKey: a user of that name exists.
    """
    if _check_role(role) is Role.EXECUTOR:
        raise InvalidInput(
            "role", "executor is a token's role (launch.py token --create NAME --role executor)"
        )
    if not isinstance(password, str) or not 8 <= len(password) <= MAX_PASSWORD:
        raise InvalidInput("password", f"must be 8 to {MAX_PASSWORD} characters")
    credential = store.save_credential(
        Credential(
            id=new_id(),
            kind=CredentialKind.PASSWORD,
            name=_check_name(name),
            role=_check_role(role),
            secret_hash=hash_password(password),
            created_at=(clock or SystemClock()).now(),
            created_by=created_by,
        )
    )
    log.info("user %s: created (role %s, by %s)", name, role, created_by)
    return credential


# -- authenticating --------------------------------------------------------------------------------


def authenticate_token(store: Store, secret: Any) -> Principal | None:
    """The principal of a bearer token's secret, or None when it is not a valid token."""
    if not isinstance(secret, str) or not 0 < len(secret) <= MAX_TOKEN:
        return None
    credential = store.find_credential_by_hash(token_hash(secret))
    if credential is None or credential.kind is not CredentialKind.TOKEN:
        return None
    return Principal.of(credential)


def authenticate_password(store: Store, name: Any, password: Any) -> Principal | None:
    """The principal of a user name and password, or None (in about the same time either way)."""
    if not isinstance(name, str) or not isinstance(password, str):
        return None
    if len(password) > MAX_PASSWORD or not NAME_PATTERN.fullmatch(name):
        return None
    credential = store.find_credential(CredentialKind.PASSWORD, name)
    if credential is None:
        verify_password(password, _dummy_hash())
        return None
    return Principal.of(credential) if verify_password(password, credential.secret_hash) else None


def principal_by_id(
    store: Store, kind: CredentialKind, name: str, credential_id: str
) -> Principal | None:
    """The principal a session names, if that credential still exists (not deleted and made
    again under the same name); else None."""
    credential = store.find_credential(kind, name)
    if credential is None or credential.id != credential_id:
        return None
    return Principal.of(credential)


# -- first start -----------------------------------------------------------------------------------


def ensure_admin_token(store: Store, settings: Settings) -> Path | None:
    """On first start (no credential at all), create an admin token and write it to
    ``settings.admin_token_file`` with mode 0600, as Jupyter does with its token.

    Returns:
        The file's path when this call created the token; None when credentials exist (or
        another process created the first one at the same moment).
    """
    if store.list_credentials():
        return None
    path = Path(settings.admin_token_file)
    try:
        secret = create_token(store, FIRST_ADMIN, Role.ADMIN, created_by="first start")
    except DuplicateKey:
        return None  # another mx or launch.py won the race and wrote the file
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # O_CREAT with 0600 and a chmod for a file that existed: never readable by others, not even
    # between the write and a later chmod.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(secret + "\n")
    log.warning(
        "no credentials existed: an admin token was written to %s (readable only by you); "
        "send it as 'Authorization: Bearer <token>' or paste it on the login page",
        path,
    )
    return path
