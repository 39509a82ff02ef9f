"""One parametrized bad-input table per route (status, code and field), 404 and 409 for every
route that can answer them, and the error shape of routing errors."""

from __future__ import annotations

import pytest

from db.credentials import Role
from db.models import UowQuery
from tests.mx.conftest import WORKER_ENTRY, register

#: (method, path, body or raw bytes, the field named). Sent by an admin, so only the input is
#: wrong.
BAD_INPUT = [
    ("GET", "/api/v1/processes?kind=bogus", None, "kind"),
    ("GET", "/api/v1/processes?limit=0", None, "limit"),
    ("GET", "/api/v1/processes?limit=1001", None, "limit"),
    ("GET", "/api/v1/processes?limit=99999999999999999999", None, "limit"),
    ("GET", "/api/v1/processes?limit=%C2%B2", None, "limit"),
    ("GET", "/api/v1/processes?cursor=%21%21%21", None, "cursor"),
    ("GET", "/api/v1/processes?limit=1&limit=2", None, "limit"),
    ("GET", "/api/v1/processes/cron?verbose=1", None, "verbose"),
    ("POST", "/api/v1/processes", b"{not json", "body"),
    ("POST", "/api/v1/processes", b"[1, 2]", "body"),
    ("POST", "/api/v1/processes", b"", "body"),
    (
        "POST",
        "/api/v1/processes",
        {"name": "Bad Name", "trigger": "every 60", "worker": "a:B"},
        "name",
    ),
    (
        "POST",
        "/api/v1/processes",
        {"name": "x", "trigger": "every soon", "worker": "a:B"},
        "trigger",
    ),
    ("POST", "/api/v1/processes", {"name": "x", "trigger": "every 60"}, "worker"),
    ("POST", "/api/v1/processes", {"name": "x", "kind": "managed", "worker": "a:B"}, "kind"),
    (
        "POST",
        "/api/v1/processes",
        {"name": "x", "trigger": "every 60", "worker": "a:B", "retries": "three"},
        "retries",
    ),
    (
        "POST",
        "/api/v1/processes",
        {"name": "x", "trigger": "every 60", "worker": "a:B", "colour": "red"},
        "colour",
    ),
    ("PATCH", "/api/v1/processes/cron", {"retries": -1}, "retries"),
    ("PATCH", "/api/v1/processes/cron", {"enabled": "yes"}, "enabled"),
    ("PATCH", "/api/v1/processes/cron", {"kind": "managed"}, "kind"),
    ("PATCH", "/api/v1/processes/cron", {"name": "other"}, "name"),
    ("PATCH", "/api/v1/processes/cron", {}, "body"),
    ("PATCH", "/api/v1/processes/cron", {"trigger": "at 25:00"}, "trigger"),
    ("PATCH", "/api/v1/processes/h", {"depends_on": ["ghost"]}, "depends_on"),
    ("DELETE", "/api/v1/processes/cron?force=1", None, "force"),
    ("GET", "/api/v1/jobs?state=bogus", None, "state"),
    ("GET", "/api/v1/jobs?from=yesterday", None, "from"),
    ("GET", "/api/v1/jobs?to=20260105", None, "to"),
    ("GET", "/api/v1/jobs?cursor=bm90IGEgY3Vyc29y", None, "cursor"),
    ("GET", "/api/v1/jobs?limit=-5", None, "limit"),
    ("GET", "/api/v1/jobs/h/2026010511?x=1", None, "x"),
    ("POST", "/api/v1/jobs/h/2026010511/reprocess?x=1", None, "x"),
    ("POST", "/api/v1/jobs/h/2026010511/skip?x=1", None, "x"),
    ("GET", "/api/v1/uows?state=done", None, "state"),
    ("GET", "/api/v1/uows?cursor=%FF", None, "cursor"),
    ("GET", "/api/v1/uows/{uow}?x=1", None, "x"),
    ("POST", "/api/v1/uows/{uow}/cancel?x=1", None, "x"),
    ("POST", "/api/v1/tasks", {"command": ""}, "command"),
    ("POST", "/api/v1/tasks", {"command": 42}, "command"),
    ("POST", "/api/v1/tasks", {"command": "true", "retries": -1}, "retries"),
    ("POST", "/api/v1/tasks", {"command": "true", "retries": True}, "retries"),
    ("POST", "/api/v1/tasks", {"command": "true", "scheduled_at": "soon"}, "scheduled_at"),
    (
        "POST",
        "/api/v1/tasks",
        {"command": "true", "scheduled_at": "2026-01-05T13:00:00"},
        "scheduled_at",
    ),
    (
        "POST",
        "/api/v1/tasks",
        {"command": "true", "scheduled_at": "0001-01-01T00:00:00+01:00"},
        "scheduled_at",
    ),
    ("POST", "/api/v1/tasks", {"command": "true", "arguments": [1]}, "arguments"),
    ("POST", "/api/v1/tasks", {"command": "true", "when": "now"}, "when"),
    ("POST", "/api/v1/tasks", None, "body"),
    ("GET", "/api/v1/tasks/{task}?x=1", None, "x"),
    ("GET", "/api/v1/boxes?limit=ten", None, "limit"),
    ("GET", "/api/v1/workers?cursor=WzFd", None, "cursor"),
    ("POST", "/api/v1/boxes/b1/processes/d/start?x=1", None, "x"),
    ("POST", "/api/v1/boxes/b1/processes/d/stop?x=1", None, "x"),
    ("PUT", "/api/v1/registration", {}, "processes"),
    ("PUT", "/api/v1/registration", {"processes": "all of them"}, "processes"),
    ("PUT", "/api/v1/registration", {"processes": [], "check": "yes"}, "check"),
    ("PUT", "/api/v1/registration", {"processes": [], "prune": 1}, "prune"),
    ("PUT", "/api/v1/registration", {"processes": [], "source": ""}, "source"),
    ("PUT", "/api/v1/registration", {"processes": [], "colour": "red"}, "colour"),
    (
        "PUT",
        "/api/v1/registration",
        {"processes": [{"name": "x", "kind": "managed", "time_qualifier": "weekly"}]},
        "time_qualifier",
    ),
    ("PUT", "/api/v1/registration?x=1", {"processes": []}, "x"),
    ("PUT", "/api/v1/registration", {"processes": [{"": 1}]}, "processes"),
    ("POST", "/api/v1/tasks", {"command": "true", "arguments": {"": 1}}, "arguments"),
]


def _send(client, auth, seed, method, path, body):
    path = path.format(uow=seed.uow_id, task=seed.task_id)
    headers = auth.headers(Role.ADMIN)
    if isinstance(body, bytes):
        return client.open(
            path, method=method, data=body, headers=headers, content_type="application/json"
        )
    return client.open(path, method=method, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body", "field"), BAD_INPUT)
def test_route_bad_input_is_400_naming_the_field(client, auth, seed, method, path, body, field):
    response = _send(client, auth, seed, method, path, body)
    assert response.status_code == 400, response.json
    error = response.json["error"]
    assert error["code"] == "invalid_input"
    assert error["field"] == field
    assert error["message"]


NOT_FOUND = [
    ("GET", "/api/v1/processes/ghost"),
    ("PATCH", "/api/v1/processes/ghost"),
    ("DELETE", "/api/v1/processes/ghost"),
    ("POST", "/api/v1/processes/ghost/trigger"),
    ("GET", "/api/v1/jobs/ghost/2026010511"),
    ("GET", "/api/v1/jobs/h/2030010100"),
    ("POST", "/api/v1/jobs/ghost/2026010511/reprocess"),
    ("POST", "/api/v1/jobs/h/2030010100/skip"),
    ("GET", "/api/v1/uows/ghost"),
    ("POST", "/api/v1/uows/ghost/cancel"),
    ("GET", "/api/v1/tasks/ghost"),
    ("POST", "/api/v1/boxes/b1/processes/ghost/start"),
    ("POST", "/api/v1/boxes/nowhere/processes/d/stop"),
]


@pytest.mark.parametrize(("method", "path"), NOT_FOUND)
def test_route_unknown_entity_is_404(client, auth, seed, method, path):
    body = {"retries": 1} if method == "PATCH" else None
    response = client.open(path, method=method, json=body, headers=auth.headers(Role.ADMIN))
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


#: (method, path, body, code): requests the state refuses. Each is sent twice; the second must
#: be refused (the first may succeed).
CONFLICTS = [
    ("POST", "/api/v1/processes/cron/trigger", None, "conflict"),
    (
        "POST",
        "/api/v1/processes",
        {"name": "cron", "trigger": "every 60", "worker": "a:B"},
        "conflict",
    ),
    ("DELETE", "/api/v1/processes/h", None, "conflict"),
    ("DELETE", "/api/v1/processes/adhoc", None, "conflict"),
    ("POST", "/api/v1/jobs/h/2026010513/reprocess", None, "transition_refused"),
    ("POST", "/api/v1/jobs/h/2026010512/skip", None, "transition_refused"),
    ("POST", "/api/v1/uows/{finished}/cancel", None, "transition_refused"),
    ("POST", "/api/v1/processes/off/trigger", None, "conflict"),
    ("POST", "/api/v1/processes/d/trigger", None, "conflict"),
]


@pytest.mark.parametrize(("method", "path", "body", "code"), CONFLICTS)
def test_route_refused_by_the_state_is_409(
    client, auth, app_store, clock, seed, method, path, body, code
):
    register(
        app_store,
        clock,
        name="off",
        kind="freerun",
        trigger="every 60",
        command=["true"],
        enabled=False,
    )
    path = path.format(finished=seed.finished_uow_id)
    headers = auth.headers(Role.ADMIN)
    client.open(path, method=method, json=body, headers=headers)
    response = client.open(path, method=method, json=body, headers=headers)
    assert response.status_code == 409, response.json
    assert response.json["error"]["code"] == code


def test_unknown_path_is_404_in_the_error_shape(client, auth):
    response = client.get("/api/v1/nothing", headers=auth.headers(Role.VIEWER))
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"
    # no credentials needed to learn that nothing is there
    assert client.get("/api/v1/nothing").status_code == 404


def test_wrong_method_is_405_in_the_error_shape(client, auth):
    response = client.put("/api/v1/processes", headers=auth.headers(Role.ADMIN))
    assert response.status_code == 405
    assert response.json["error"]["code"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]


def test_body_too_large_is_413_not_500(client, auth):
    huge = b'{"command": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    response = client.post(
        "/api/v1/tasks",
        data=huge,
        content_type="application/json",
        headers=auth.headers(Role.ADMIN),
    )
    assert response.status_code == 413
    assert response.json["error"]["code"] == "request_entity_too_large"


def test_several_problems_are_all_named(client, auth, seed):
    response = client.post(
        "/api/v1/processes",
        json={"name": "x", "trigger": "nope", "worker": "a:B", "retries": -1},
        headers=auth.headers(Role.ADMIN),
    )
    assert response.status_code == 400
    fields = {e["field"] for e in response.json["error"]["errors"]}
    assert fields == {"trigger", "retries"}


def test_page_request_without_login_is_redirected_to_the_login_page(client):
    response = client.get("/metrics", headers={"Accept": "text/html"})
    assert response.status_code == 401  # /metrics is never a page
    response = client.post("/logout", headers={"Accept": "text/html"})
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


def test_an_edit_that_lost_a_race_is_409_and_changes_nothing(client, auth, app_store, seed):
    # given an edit that reads the entry, and another edit landing before it writes
    real_get = app_store.get_process
    stale = real_get("cron")
    client.patch("/api/v1/processes/cron", json={"retries": 7}, headers=auth.headers("admin"))
    # (mx's store is the patient wrapper around app_store: the stale read is planted there)
    mx_store = client.application.extensions["tactus"].store
    mx_store.get_process = lambda name: stale if name == "cron" else real_get(name)
    try:
        # when it writes on the version it read
        response = client.patch(
            "/api/v1/processes/cron", json={"retries": 9}, headers=auth.headers("admin")
        )
    finally:
        del mx_store.get_process
    # then it is refused, and the other edit stands
    assert response.status_code == 409, response.json
    assert response.json["error"]["code"] == "conflict"
    assert app_store.get_process("cron").entry.retries == 7


def test_a_daemons_worker_is_a_program_only_an_admin_may_change(client, auth, app_store, seed):
    body = {"worker": "os:system"}
    response = client.patch("/api/v1/processes/d", json=body, headers=auth.headers("operator"))
    assert response.status_code == 403
    assert app_store.get_process("d").entry.worker is None
    # (a freerun's worker must be a UowWorker class: setting one is no program of its own; this
    # edit needs admin only because it also drops the command)
    body = {"worker": "tests.fixtures.workers:Succeeding", "command": None}
    response = client.patch("/api/v1/processes/cron", json=body, headers=auth.headers("admin"))
    assert response.status_code == 200, response.json


def test_deleting_an_entry_keeps_who_did_it_in_its_history(client, auth, app_store, seed):
    client.post("/api/v1/processes", json=WORKER_ENTRY, headers=auth.headers("operator"))
    response = client.delete("/api/v1/processes/new", headers=auth.headers("operator"))
    assert response.status_code == 200
    assert [(e.trigger, e.actor) for e in app_store.history("process", "new")] == [
        ("create", "token operator"),
        ("delete", "token operator"),
    ]


#: (method, path, JSON body, the field named): a NUL character anywhere in the input.
NUL_INPUT = [
    ("GET", "/api/v1/processes/a%00b", None, "name"),
    ("GET", "/api/v1/jobs?process=a%00b", None, "process"),
    ("GET", "/api/v1/uows/a%00b", None, "uow_id"),
    ("GET", "/api/v1/boxes?box_id=a%00", None, "box_id"),
    ("POST", "/api/v1/boxes/b1%00/processes/d/start", None, "box_id"),
    (
        "POST",
        "/api/v1/processes",
        {"name": "x", "trigger": "every 60", "worker": "a:B", "description": "a\u0000b"},
        "description",
    ),
    (
        "POST",
        "/api/v1/processes",
        {"name": "x", "trigger": "every 60", "worker": "a:B", "arguments": {"k\u0000": 1}},
        "arguments",
    ),
    ("POST", "/api/v1/tasks", {"command": "echo \u0000"}, "command"),
]


@pytest.fixture(params=["sqlite", "postgresql"])
def any_sql_app(request, tmp_path, nx_server, clock):
    """The app of ``app`` on SQLite and on PostgreSQL (which cannot store a NUL)."""
    from db import open_store
    from mx.app import create_app
    from settings import load_settings
    from tests.conftest import fresh_store_uri
    from tests.scheduler.conftest import RecordingBroker

    with fresh_store_uri(request.param, tmp_path, nx_server) as uri:
        settings = load_settings(environ={"TACTUS_STORE_URI": uri}, cwd=tmp_path)
        store = open_store(uri)
        store.init_schema()
        try:
            yield (
                create_app(
                    settings, store=store, broker=RecordingBroker(), clock=clock, testing=True
                ),
                store,
            )
        finally:
            store.close()


@pytest.mark.parametrize(("method", "path", "body", "field"), NUL_INPUT)
def test_a_nul_character_is_400_naming_the_field_on_every_store(
    any_sql_app, method, path, body, field
):
    from mx.services.credentials import create_token

    app, store = any_sql_app
    token = create_token(store, "nul_admin", Role.ADMIN)
    before = (store.list_processes(), store.find_uows(UowQuery(), limit=10).items)
    response = app.test_client().open(
        path, method=method, json=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.json["error"]["field"] == field
    assert (store.list_processes(), store.find_uows(UowQuery(), limit=10).items) == before
    if method != "GET":  # refused, and still in the audit trail
        assert store.list_audit(limit=1).items[0].details["status"] == 400
