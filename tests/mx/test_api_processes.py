"""``/api/v1/processes``: listing, paging, creating, editing, deleting and firing entries."""

from __future__ import annotations

from db.credentials import Role
from db.states import ProcessSource


def test_processes_list_has_enabled_next_fire_and_counts(client, auth, seed):
    response = client.get("/api/v1/processes", headers=auth.headers(Role.VIEWER))
    assert response.status_code == 200
    items = {p["name"]: p for p in response.json["items"]}
    assert sorted(items) == ["adhoc", "cron", "d", "h"]
    assert items["cron"]["enabled"] is True
    assert items["cron"]["next_fire"] == "2026-01-05T14:00:00Z"
    assert items["h"]["next_fire"] is None
    assert items["h"]["counts"] == {"embryo": 2, "in_progress": 1}
    assert response.json["next_cursor"] is None


def test_processes_list_pages_by_cursor_and_filters_by_kind(client, auth, seed):
    headers = auth.headers(Role.VIEWER)
    names, cursor = [], None
    while True:
        url = "/api/v1/processes?limit=1" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(url, headers=headers).json
        names += [p["name"] for p in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert names == ["adhoc", "cron", "d", "h"]
    body = client.get("/api/v1/processes?kind=managed", headers=headers).json
    assert [p["name"] for p in body["items"]] == ["h"]


def test_processes_get_one(client, auth, seed):
    body = client.get("/api/v1/processes/h", headers=auth.headers(Role.VIEWER)).json
    assert body["kind"] == "managed" and body["counts"]["in_progress"] == 1


def test_processes_create_freerun_is_201_from_the_api(client, auth, app_store, recording_broker):
    response = client.post(
        "/api/v1/processes",
        json={"name": "nightly", "trigger": "at 02:00", "command": "backup.sh --all"},
        headers=auth.headers(Role.ADMIN),
    )
    assert response.status_code == 201, response.json
    assert response.json["kind"] == "freerun"
    assert response.json["command"] == ["backup.sh", "--all"]
    assert response.json["next_fire"] == "2026-01-06T02:00:00Z"
    record = app_store.get_process("nightly")
    assert record.source is ProcessSource.API and record.registered is None
    history = app_store.history("process", "nightly")
    assert [(e.trigger, e.actor) for e in history] == [("create", "token admin")]
    assert [(q, m.kind) for q, m, _ in recording_broker.published] == [
        ("tactus.uow_status", "wake")
    ]


def test_processes_create_or_edit_with_a_command_needs_admin(client, auth, seed):
    operator = auth.headers(Role.OPERATOR)
    entry = {"name": "x", "trigger": "every 60", "command": ["rm", "-rf", "/"]}
    response = client.post("/api/v1/processes", json=entry, headers=operator)
    assert response.status_code == 403
    response = client.patch("/api/v1/processes/cron", json={"command": "id"}, headers=operator)
    assert response.status_code == 403
    response = client.patch("/api/v1/processes/cron", json={"shell": True}, headers=operator)
    assert response.status_code == 403


def test_processes_edit_changes_fields_and_records_history(client, auth, seed, app_store):
    response = client.patch(
        "/api/v1/processes/cron",
        json={"trigger": "*/5 * * * *", "arguments": {"depth": 2}, "retries": 0},
        headers=auth.headers(Role.OPERATOR),
    )
    assert response.status_code == 200, response.json
    assert response.json["trigger"] == "*/5 * * * *"
    assert response.json["next_fire"] == "2026-01-05T13:05:00Z"
    assert response.json["version"] == 2
    entry = app_store.get_process("cron").entry
    assert (entry.retries, dict(entry.arguments)) == (0, {"depth": 2})
    (event,) = app_store.history("process", "cron")
    assert event.trigger == "edit" and event.actor == "token operator"
    assert event.details["fields"] == ["arguments", "retries", "trigger"]


def test_processes_edit_enabled_alone_is_the_enable_verb(client, auth, seed, app_store):
    headers = auth.headers(Role.OPERATOR)
    response = client.patch("/api/v1/processes/h", json={"enabled": False}, headers=headers)
    assert response.json["enabled"] is False
    assert [e.trigger for e in app_store.history("process", "h")] == ["disable"]
    # the same value again changes nothing
    client.patch("/api/v1/processes/h", json={"enabled": False}, headers=headers)
    assert len(app_store.history("process", "h")) == 1


def test_processes_edit_null_resets_to_the_default(client, auth, seed, app_store):
    headers = auth.headers(Role.OPERATOR)
    client.patch("/api/v1/processes/cron", json={"retries": 9}, headers=headers)
    client.patch("/api/v1/processes/cron", json={"retries": None}, headers=headers)
    assert app_store.get_process("cron").entry.retries == 3


def test_processes_delete_removes_a_freerun(client, auth, seed, app_store):
    response = client.delete("/api/v1/processes/cron", headers=auth.headers(Role.OPERATOR))
    assert response.status_code == 200 and response.json["name"] == "cron"
    response = client.get("/api/v1/processes/cron", headers=auth.headers(Role.VIEWER))
    assert response.status_code == 404


def test_processes_trigger_freerun_is_201_with_the_uow(client, auth, seed, recording_broker):
    response = client.post("/api/v1/processes/cron/trigger", headers=auth.headers(Role.OPERATOR))
    assert response.status_code == 201
    uow = response.json["uow"]
    assert uow["process"] == "cron" and uow["state"] == "requested"
    assert recording_broker.uow_ids()[-1] == uow["id"]


def test_processes_trigger_managed_is_202_without_a_uow(client, auth, seed):
    response = client.post("/api/v1/processes/h/trigger", headers=auth.headers(Role.OPERATOR))
    assert response.status_code == 202
    assert response.json == {"process": "h", "uow": None, "published": True}
