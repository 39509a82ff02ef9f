"""Every route: success for its role, 401 without credentials, 403 below its role, CSRF refusal
for a session without the token, and GET never changing the store."""

from __future__ import annotations

import pytest

from db.credentials import Role
from tests.mx.conftest import PUBLIC_ROUTES, ROUTES, snapshot

_LOWER = {Role.OPERATOR: Role.VIEWER, Role.ADMIN: Role.OPERATOR}


def call(client, route, seed, headers=None, **extra):
    return client.open(
        route.url(seed), method=route.method, json=route.json, headers=headers or {}, **extra
    )


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.id)
def test_route_succeeds_for_its_role(client, auth, seed, route):
    response = call(client, route, seed, auth.headers(route.role))
    assert response.status_code == route.ok, response.get_data(as_text=True)


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.id)
def test_route_without_credentials_is_401_and_changes_nothing(client, seed, app_store, route):
    before = snapshot(app_store)
    response = call(client, route, seed)
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthenticated"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    after = snapshot(app_store)
    # only the audit line of the refused attempt is new
    assert {k: v for k, v in after.items() if k != "audit"} == {
        k: v for k, v in before.items() if k != "audit"
    }


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.id)
def test_route_with_a_bad_token_is_401(client, seed, route):
    response = call(client, route, seed, {"Authorization": "Bearer tct_not-a-token"})
    assert response.status_code == 401
    response = call(client, route, seed, {"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 401


@pytest.mark.parametrize("route", [r for r in ROUTES if r.role in _LOWER], ids=lambda r: r.id)
def test_route_below_its_role_is_403_and_changes_nothing(client, auth, seed, app_store, route):
    before = snapshot(app_store)
    response = call(client, route, seed, auth.headers(_LOWER[route.role]))
    assert response.status_code == 403
    assert response.json["error"]["code"] == "forbidden"
    assert snapshot(app_store)["jobs"] == before["jobs"]
    assert snapshot(app_store)["uows"] == before["uows"]
    assert snapshot(app_store)["processes"] == before["processes"]


@pytest.mark.parametrize("route", [r for r in ROUTES if r.mutating], ids=lambda r: r.id)
def test_session_request_without_csrf_token_is_refused(client, auth, seed, app_store, route):
    csrf = auth.login(Role.ADMIN)
    before = snapshot(app_store)
    response = call(client, route, seed)
    assert response.status_code == 403
    assert response.json["error"]["code"] == "csrf_refused"
    response = call(client, route, seed, {"X-CSRF-Token": csrf + "x"})
    assert response.status_code == 403
    after = snapshot(app_store)
    assert {k: v for k, v in after.items() if k != "audit"} == {
        k: v for k, v in before.items() if k != "audit"
    }


@pytest.mark.parametrize("route", [r for r in ROUTES if r.mutating], ids=lambda r: r.id)
def test_session_request_with_csrf_header_succeeds(client, auth, seed, route):
    csrf = auth.login(route.role)
    response = call(client, route, seed, {"X-CSRF-Token": csrf})
    assert response.status_code == route.ok, response.get_data(as_text=True)


def test_session_request_with_csrf_form_field_succeeds(client, auth, seed, app_store):
    csrf = auth.login(Role.OPERATOR)
    response = client.post(f"/api/v1/uows/{seed.task_id}/cancel", data={"csrf_token": csrf})
    assert response.status_code == 200
    assert response.json["state"] == "canceled"


def test_bearer_requests_need_no_csrf_token_even_with_a_session(client, auth, seed):
    auth.login(Role.VIEWER)
    response = client.post("/api/v1/processes/cron/trigger", headers=auth.headers(Role.OPERATOR))
    assert response.status_code == 201
    # the token decides, not the (weaker) session
    assert response.json["uow"]["process"] == "cron"


@pytest.mark.parametrize("route", [r for r in ROUTES if not r.mutating], ids=lambda r: r.id)
def test_get_never_changes_the_store(client, auth, seed, app_store, route):
    before = snapshot(app_store)
    for role in (Role.VIEWER, Role.ADMIN, None):
        call(client, route, seed, auth.headers(role))
    assert snapshot(app_store) == before


@pytest.mark.parametrize("path", PUBLIC_ROUTES)
def test_public_routes_need_no_credentials_and_change_nothing(client, seed, app_store, path):
    before = snapshot(app_store)
    response = client.get(path)
    assert response.status_code == 200
    assert snapshot(app_store) == before


def test_every_mutating_request_is_audited(client, auth, seed, app_store):
    # given one request of each mutating route, allowed or not
    for route in [r for r in ROUTES if r.mutating]:
        call(client, route, seed, auth.headers(route.role))
    call(client, ROUTES[5], seed)  # anonymous trigger: refused
    # then each is in the trail with who, what, target and when
    entries = list(reversed(app_store.list_audit(limit=1000).items))
    mutating = [r for r in ROUTES if r.mutating]
    assert len(entries) == len(mutating) + 1
    first = entries[0]
    assert first.who == "token operator"
    assert first.what == "POST /api/v1/processes"
    assert first.target == "process new"
    assert first.details["status"] == 201
    trigger = next(e for e in entries if e.what.endswith("/trigger"))
    assert trigger.target == "name=cron"
    assert entries[-1].who == "anonymous" and entries[-1].details["status"] == 401
