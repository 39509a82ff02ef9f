"""The store contract for mx's security: credentials and the audit trail, on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from db.credentials import Credential, CredentialKind, Role
from db.errors import DuplicateKey, InvalidInput, NotFound
from db.ids import new_id

T0 = datetime(2026, 1, 5, 13, 0, 0, 123000, tzinfo=UTC)


def make_credential(
    name: str = "deploy",
    kind: CredentialKind = CredentialKind.TOKEN,
    role: Role = Role.OPERATOR,
    secret_hash: str | None = None,
) -> Credential:
    return Credential(
        id=new_id(),
        kind=kind,
        name=name,
        role=role,
        secret_hash=secret_hash or new_id() + new_id(),
        created_at=T0,
        created_by="cli",
    )


def test_credential_save_and_find_by_hash(store):
    saved = store.save_credential(make_credential(secret_hash="a" * 64))
    assert store.find_credential_by_hash("a" * 64) == saved
    assert saved.created_at == T0 and saved.role is Role.OPERATOR
    assert store.find_credential_by_hash("b" * 64) is None


def test_credential_find_by_kind_and_name(store):
    user = store.save_credential(make_credential("alice", CredentialKind.PASSWORD, Role.VIEWER))
    assert store.find_credential(CredentialKind.PASSWORD, "alice") == user
    assert store.find_credential(CredentialKind.TOKEN, "alice") is None


def test_credential_duplicate_name_or_hash_is_refused(store):
    store.save_credential(make_credential("deploy", secret_hash="c" * 64))
    with pytest.raises(DuplicateKey):
        store.save_credential(make_credential("deploy"))
    with pytest.raises(DuplicateKey):
        store.save_credential(make_credential("other", secret_hash="c" * 64))
    # the same name of another kind is a different credential
    store.save_credential(make_credential("deploy", CredentialKind.PASSWORD))
    assert len(store.list_credentials()) == 2


def test_credential_list_is_ordered_and_filtered(store):
    for name, kind in [
        ("zed", CredentialKind.TOKEN),
        ("bob", CredentialKind.PASSWORD),
        ("amy", CredentialKind.TOKEN),
    ]:
        store.save_credential(make_credential(name, kind))
    assert [(c.kind.value, c.name) for c in store.list_credentials()] == [
        ("password", "bob"),
        ("token", "amy"),
        ("token", "zed"),
    ]
    assert [c.name for c in store.list_credentials(CredentialKind.TOKEN)] == ["amy", "zed"]
    assert store.list_credentials(CredentialKind.PASSWORD)[0].name == "bob"


def test_credential_delete(store):
    saved = store.save_credential(make_credential("deploy"))
    store.delete_credential(CredentialKind.TOKEN, "deploy")
    assert store.find_credential_by_hash(saved.secret_hash) is None
    with pytest.raises(NotFound):
        store.delete_credential(CredentialKind.TOKEN, "deploy")


def test_audit_append_and_list_newest_first(store):
    first = store.append_audit(
        who="token deploy", what="POST /api/v1/uows/{id}/cancel", target="uow 1", at=T0
    )
    second = store.append_audit(
        who="user alice",
        what="login",
        target="",
        at=T0 + timedelta(seconds=1),
        details={"status": 200, "remote": "127.0.0.1"},
    )
    page = store.list_audit()
    assert [e.id for e in page.items] == [second.id, first.id]
    assert page.next_cursor is None
    assert page.items[0].details == {"status": 200, "remote": "127.0.0.1"}
    assert page.items[1].who == "token deploy" and page.items[1].at == T0
    assert page.items[1].target == "uow 1" and page.items[1].details == {}


def test_audit_pages_by_cursor(store):
    ids = [store.append_audit(who="cli", what=f"act {i}", target="", at=T0).id for i in range(5)]
    seen, cursor = [], None
    while True:
        page = store.list_audit(limit=2, cursor=cursor)
        seen.extend(e.id for e in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == list(reversed(ids))


def test_audit_refuses_bad_cursor_limit_and_naive_instant(store):
    with pytest.raises(InvalidInput) as exc:
        store.list_audit(cursor="not a cursor!")
    assert exc.value.field == "cursor"
    with pytest.raises(InvalidInput) as exc:
        store.list_audit(limit=0)
    assert exc.value.field == "limit"
    with pytest.raises(InvalidInput):
        store.append_audit(who="cli", what="x", target="", at=datetime(2026, 1, 5))


def test_credentials_and_audit_survive_nothing_on_reset(store):
    store.save_credential(make_credential("deploy"))
    store.append_audit(who="cli", what="x", target="", at=T0)
    store.reset_schema()
    assert store.list_credentials() == []
    assert store.list_audit().items == []
