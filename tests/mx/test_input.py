"""What mx takes in: bodies parsed as JSON whatever their content type, text no store can keep
or no page can show refused at the door (and shown safely when it was stored before), and
actions on jobs whose process was removed."""

from __future__ import annotations

import json

import pytest

from db.credentials import Role
from db.models import ProcessRecord
from db.registration import entry_from_mapping
from db.states import ProcessSource
from tests.mx.conftest import state_of

ENTRY = {"name": "typed", "trigger": "every 60", "command": ["true"]}


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data; boundary=x",
        None,
    ],
)
def test_a_json_body_is_parsed_whatever_its_content_type(client, auth, app_store, content_type):
    headers = auth.headers(Role.ADMIN)
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = client.post("/api/v1/processes", data=json.dumps(ENTRY), headers=headers)
    assert response.status_code == 201, response.json
    assert app_store.get_process("typed").entry.command == ("true",)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"name=typed&trigger=every+60", "is not valid JSON"),
        (b'{"name": "typed",', "is not valid JSON"),
        (b"\xff\xfe{}", "is not UTF-8"),
        (b"[]", "must be a JSON object"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_400_saying_why(client, auth, app_store, raw, problem):
    before = state_of(app_store)
    headers = {**auth.headers(Role.ADMIN), "Content-Type": "application/x-www-form-urlencoded"}
    response = client.post("/api/v1/processes", data=raw, headers=headers)
    assert response.status_code == 400
    assert response.json["error"]["field"] == "body"
    assert problem in response.json["error"]["message"]
    assert state_of(app_store) == before


def test_a_session_request_may_still_send_its_csrf_token_as_a_form_field(client, auth, seed):
    csrf = auth.login(Role.OPERATOR)
    response = client.post(f"/api/v1/uows/{seed.task_id}/cancel", data={"csrf_token": csrf})
    assert response.status_code == 200


#: (method, path, raw JSON text with a lone surrogate, the field named).
SURROGATES = [
    (
        "POST",
        "/api/v1/processes",
        '{"name": "x", "trigger": "every 60", "command": ["true"], "description": "a\\ud800"}',
        "description",
    ),
    ("POST", "/api/v1/processes", '{"name": "x\\udfff", "trigger": "every 60"}', "name"),
    ("PATCH", "/api/v1/processes/cron", '{"arguments": {"k": ["\\ud83d"]}}', "arguments"),
    ("PATCH", "/api/v1/processes/cron", '{"arguments": {"\\ud800": 1}}', "arguments"),
    ("POST", "/api/v1/tasks", '{"command": "echo \\udc00"}', "command"),
    ("POST", "/api/v1/tasks", '{"command": "true", "arguments": {"a": "\\udc00"}}', "arguments"),
    (
        "PUT",
        "/api/v1/registration",
        '{"processes": [{"name": "r", "kind": "freerun", "trigger": "every 60", '
        '"command": ["true"], "description": "\\ud800"}]}',
        "processes",
    ),
]


@pytest.mark.parametrize(("method", "path", "raw", "field"), SURROGATES)
def test_a_lone_surrogate_is_400_naming_the_field_and_changes_nothing(
    client, auth, app_store, seed, method, path, raw, field
):
    before = state_of(app_store)
    response = client.open(
        path,
        method=method,
        data=raw.encode(),
        headers={**auth.headers(Role.ADMIN), "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.json
    assert response.json["error"]["field"] == field
    assert "surrogate" in response.json["error"]["message"]
    assert state_of(app_store) == before


def test_a_surrogate_stored_before_cannot_take_a_page_down(client, auth, app_store, clock, seed):
    # given an entry whose strings are not Unicode text (stored before mx refused them)
    entry = entry_from_mapping(
        {
            "name": "bad",
            "kind": "freerun",
            "trigger": "every 60",
            "command": ["echo", "\ud800"],
            "description": "broken \udc00 text",
            "arguments": {"k": "\udfff"},
        }
    )
    now = clock.now()
    app_store.insert_process(
        ProcessRecord(
            entry=entry, source=ProcessSource.API, registered=None, created_at=now, updated_at=now
        )
    )
    auth.login(Role.ADMIN)
    # then every page that shows it answers, with the bad characters replaced
    for path in ("/", "/processes", "/processes/bad"):
        response = client.get(path, headers={"Accept": "text/html"})
        assert response.status_code == 200, path
        assert "\ufffd" in response.get_data(as_text=True) or path == "/", path
    # and the API answers too (its JSON escapes them)
    response = client.get("/api/v1/processes/bad", headers=auth.headers(Role.VIEWER))
    assert response.status_code == 200
    assert response.json["description"] == "broken \udc00 text"


# -- a job whose process was removed ----------------------------------------------------------


@pytest.mark.parametrize("action", ["reprocess", "skip"])
def test_an_action_on_a_job_of_a_removed_process_is_404_and_changes_nothing(
    client, auth, app_store, seed, action
):
    # given the managed process removed from the registry while its jobs remain
    app_store.delete_process("h")
    before = state_of(app_store)
    # when its job is reprocessed or skipped
    response = client.post(
        f"/api/v1/jobs/h/2026010511/{action}", headers=auth.headers(Role.OPERATOR)
    )
    # then the answer names the process, and nothing changed
    assert response.status_code == 404, response.json
    assert response.json["error"] == {
        "code": "not_found",
        "message": "managed process h not found",
    }
    assert state_of(app_store) == before


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/jobs/H/2026010511/reprocess", "process"),
        ("/api/v1/jobs/h/20260105/skip", "timeperiod"),
        ("/api/v1/processes/Bad/trigger", "name"),
    ],
)
def test_a_malformed_name_in_a_path_is_400(client, auth, seed, path, field):
    response = client.post(path, headers=auth.headers(Role.OPERATOR))
    assert response.status_code == 400
    assert response.json["error"]["field"] == field


# -- lists -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/jobs", "/api/v1/uows", "/api/v1/processes"])
def test_an_empty_cursor_is_the_first_page(client, auth, seed, path):
    headers = auth.headers(Role.VIEWER)
    first = client.get(path, headers=headers)
    empty = client.get(f"{path}?cursor=", headers=headers)
    assert empty.status_code == 200
    assert empty.json == first.json


def test_create_refuses_a_daemon_as_its_document_says(client, auth, app_store):
    body = {"name": "dd", "kind": "daemon", "command": ["sleep", "1"]}
    response = client.post("/api/v1/processes", json=body, headers=auth.headers(Role.ADMIN))
    assert response.status_code == 400
    assert response.json["error"]["field"] == "kind"
    document = client.get("/api/v1/openapi.json").json
    kind = document["components"]["schemas"]["ProcessCreate"]["properties"]["kind"]
    assert kind["enum"] == ["freerun", None]
