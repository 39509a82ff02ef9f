"""Security by default: tokens and passwords stored hashed, session logins with CSRF, roles, and
the first admin token."""

from __future__ import annotations

import hashlib
import os
import re
import stat

import pytest

from db.credentials import CredentialKind, Role
from db.errors import DuplicateKey, InvalidInput
from mx.auth import create_token, ensure_admin_token
from mx.services.credentials import (
    authenticate_password,
    authenticate_token,
    create_user,
    hash_password,
    verify_password,
)
from tests.mx.conftest import PASSWORD


def test_create_token_stores_only_the_sha256_of_the_secret(app_store):
    secret = create_token(app_store, "deploy", "operator")
    assert re.fullmatch(r"tct_[A-Za-z0-9_-]{43}", secret)
    (stored,) = app_store.list_credentials()
    assert stored.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in repr(stored)
    assert authenticate_token(app_store, secret).actor == "token deploy"
    assert authenticate_token(app_store, secret + "x") is None
    with pytest.raises(DuplicateKey):
        create_token(app_store, "deploy", "viewer")
    with pytest.raises(InvalidInput) as exc:
        create_token(app_store, "x", "root")
    assert exc.value.field == "role"
    with pytest.raises(InvalidInput) as exc:
        create_token(app_store, "bad name", "viewer")
    assert exc.value.field == "name"


def test_passwords_are_salted_scrypt_hashes(app_store):
    user = create_user(app_store, "alice", PASSWORD, Role.VIEWER)
    assert user.secret_hash.startswith("scrypt$") and PASSWORD not in user.secret_hash
    assert hash_password(PASSWORD) != hash_password(PASSWORD)
    assert verify_password(PASSWORD, user.secret_hash)
    assert not verify_password("wrong", user.secret_hash)
    assert not verify_password(PASSWORD, "garbage")
    assert authenticate_password(app_store, "alice", PASSWORD).role is Role.VIEWER
    assert authenticate_password(app_store, "alice", "wrong") is None
    assert authenticate_password(app_store, "bob", PASSWORD) is None
    with pytest.raises(InvalidInput):
        create_user(app_store, "carol", "short", Role.VIEWER)


def test_ensure_admin_token_writes_a_private_file_once(app_store, settings):
    # given a store without credentials
    path = ensure_admin_token(app_store, settings)
    # then the admin token is in a file only its owner can read
    assert path is not None and str(path) == settings.admin_token_file
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    secret = path.read_text().strip()
    assert authenticate_token(app_store, secret).role is Role.ADMIN
    # and a second start leaves everything as it is
    assert ensure_admin_token(app_store, settings) is None
    assert len(app_store.list_credentials()) == 1


def test_login_with_json_gives_a_session_and_csrf_token(client, app_store, seed):
    create_user(app_store, "alice", PASSWORD, Role.OPERATOR)
    response = client.post("/login", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200
    assert response.json["user"] == "alice" and response.json["role"] == "operator"
    csrf = response.json["csrf_token"]
    cookie = response.headers["Set-Cookie"]
    assert "tactus_session=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert client.get("/api/v1/processes").status_code == 200
    response = client.post("/api/v1/processes/cron/trigger", headers={"X-CSRF-Token": csrf})
    assert response.status_code == 201
    assert response.json["uow"] is not None
    assert app_store.history("uow", response.json["uow"]["id"])[0].actor == "user alice"


def test_login_with_wrong_password_is_401_and_audited(client, app_store):
    create_user(app_store, "alice", PASSWORD, Role.OPERATOR)
    response = client.post("/login", json={"username": "alice", "password": "nope"})
    assert response.status_code == 401
    (entry,) = app_store.list_audit().items
    assert (entry.who, entry.what, entry.details["status"]) == ("anonymous", "POST /login", 401)
    assert entry.details["username"] == "alice"
    assert client.get("/api/v1/processes").status_code == 401


def test_login_form_needs_the_page_csrf_token_and_redirects_locally(client, app_store):
    create_user(app_store, "alice", PASSWORD, Role.VIEWER)
    form = {"username": "alice", "password": PASSWORD, "next": "https://evil.example/"}
    assert client.post("/login", data=form).status_code == 403
    page = client.get("/login?next=/api/v1/jobs").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post("/login", data={**form, "csrf_token": csrf})
    assert response.status_code == 302 and response.headers["Location"] == "/"
    response = client.post(
        "/login", data={**form, "csrf_token": csrf_of(client), "next": "/api/v1/jobs"}
    )
    assert response.headers["Location"] == "/api/v1/jobs"


def csrf_of(client) -> str:
    page = client.get("/login").get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def test_login_form_accepts_the_admin_token(client, app_store, settings):
    secret = ensure_admin_token(app_store, settings).read_text().strip()
    response = client.post("/login", data={"token": secret, "csrf_token": csrf_of(client)})
    assert response.status_code == 302
    assert client.get("/api/v1/processes").status_code == 200


def test_login_form_with_wrong_credentials_shows_the_page_again(client):
    response = client.post(
        "/login", data={"username": "x", "password": "y", "csrf_token": csrf_of(client)}
    )
    assert response.status_code == 401
    assert "Wrong user name, password or token" in response.get_data(as_text=True)


def test_logout_ends_the_session(client, auth):
    csrf = auth.login(Role.VIEWER)
    assert client.post("/logout").status_code == 403  # without the CSRF token
    assert client.post("/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert client.get("/api/v1/processes").status_code == 401


def test_deleted_credential_ends_its_session_and_its_token(client, auth, app_store):
    auth.login(Role.VIEWER)
    app_store.delete_credential(CredentialKind.PASSWORD, "user_viewer")
    assert client.get("/api/v1/processes").status_code == 401
    headers = auth.headers(Role.VIEWER)
    app_store.delete_credential(CredentialKind.TOKEN, "viewer")
    assert client.get("/api/v1/processes", headers=headers).status_code == 401


def test_a_bad_authorization_header_never_falls_back_to_the_session(client, auth):
    auth.login(Role.ADMIN)
    response = client.get("/api/v1/processes", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401


def test_viewer_session_cannot_act(client, auth, seed):
    csrf = auth.login(Role.VIEWER)
    response = client.post("/api/v1/processes/cron/trigger", headers={"X-CSRF-Token": csrf})
    assert response.status_code == 403
    assert response.json["error"]["code"] == "forbidden"


def test_public_routes_ignore_a_bad_token(client):
    response = client.get("/api/v1/health", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 200
