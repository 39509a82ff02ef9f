"""``/api/v1/payloads``, payloads of tasks, triggers and freerun entries, and the messages of
units of work and tasks (SPEC section 12). ``max_payload_bytes`` is 3 MiB here: above the 1 MiB
every other body is held to, below the 16 MiB default."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import timedelta

import pytest

from db.credentials import Role
from settings import load_settings
from tests.contract.store_helpers import stamped

MIB = 1024 * 1024
LIMIT = 3 * MIB


@pytest.fixture
def settings(tmp_path):
    return load_settings(environ={"TACTUS_MAX_PAYLOAD_BYTES": str(LIMIT)}, cwd=tmp_path)


def _post(client, auth, data, content_type="application/octet-stream", role=Role.OPERATOR):
    return client.post(
        "/api/v1/payloads", data=data, content_type=content_type, headers=auth.headers(role)
    )


# -- posting and reading ---------------------------------------------------------------------------


def test_payload_json_body_is_201_and_read_back(client, auth):
    body = json.dumps({"rows": [1, 2, 3]}).encode()
    response = _post(client, auth, body, "application/json")
    assert response.status_code == 201, response.json
    answer = response.json
    assert answer["sha256"] == hashlib.sha256(body).hexdigest()
    assert (answer["size"], answer["content_type"], answer["created"]) == (
        len(body),
        "application/json",
        True,
    )
    got = client.get(f"/api/v1/payloads/{answer['payload_id']}", headers=auth.headers("viewer"))
    assert got.status_code == 200
    assert got.data == body and got.mimetype == "application/json"


def test_payload_raw_bytes_above_the_body_limit_posted_twice_are_one(client, auth):
    # given 2 MiB of bytes: more than any other request body may be
    data = bytes(range(256)) * (2 * MIB // 256)
    first = _post(client, auth, data, "image/png")
    assert first.status_code == 201, first.json
    # when the same bytes come again
    second = _post(client, auth, data, "application/octet-stream")
    # then the payload is the first one
    assert second.status_code == 201
    assert second.json["payload_id"] == first.json["payload_id"]
    assert (second.json["created"], second.json["content_type"]) == (False, "image/png")
    got = client.get(f"/api/v1/payloads/{first.json['payload_id']}", headers=auth.headers("viewer"))
    assert got.data == data and got.mimetype == "image/png"


def test_payload_over_the_limit_is_413_naming_the_limit(client, auth):
    response = _post(client, auth, b"x" * (LIMIT + 1))
    assert response.status_code == 413
    error = response.json["error"]
    assert error["code"] == "payload_too_large"
    assert str(LIMIT) in error["message"] and "max_payload_bytes" in error["message"]
    # a body sent without Content-Length (chunked) is cut at the limit the same way
    response = client.post(
        "/api/v1/payloads",
        input_stream=io.BytesIO(b"y" * (LIMIT + 10)),
        content_type="application/octet-stream",
        headers={**auth.headers(Role.OPERATOR), "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413
    assert str(LIMIT) in response.json["error"]["message"]


@pytest.mark.parametrize(
    ("data", "content_type", "field"),
    [
        (b"", "application/octet-stream", "body"),
        (b"{not json", "application/json", "body"),
        (b"abc", "not a type", "content_type"),
    ],
)
def test_payload_bad_post_is_400_naming_the_field(client, auth, data, content_type, field):
    response = _post(client, auth, data, content_type)
    assert response.status_code == 400
    assert response.json["error"]["field"] == field


def test_payload_unknown_is_404(client, auth):
    response = client.get("/api/v1/payloads/0123456789abcdef", headers=auth.headers("viewer"))
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


def test_payload_post_needs_an_operator(client, auth):
    assert _post(client, auth, b"abc", role=Role.VIEWER).status_code == 403
    assert _post(client, auth, b"abc", role=None).status_code == 401
    assert _post(client, auth, b"abc", role=Role.OPERATOR).status_code == 201


# -- what takes a payload --------------------------------------------------------------------------


def test_task_takes_a_payload_id_or_an_inline_payload(client, auth, app_store):
    posted = _post(client, auth, b"input bytes").json["payload_id"]
    admin = auth.headers(Role.ADMIN)
    task = client.post(
        "/api/v1/tasks", json={"command": "true", "payload_id": posted}, headers=admin
    ).json
    assert task["payload_id"] == posted
    assert app_store.get_uow(task["task_id"]).payload_id == posted
    inline = client.post(
        "/api/v1/tasks", json={"command": "true", "payload": {"n": 1}}, headers=admin
    ).json
    got = client.get(f"/api/v1/payloads/{inline['payload_id']}", headers=admin)
    assert got.json == {"n": 1} and got.mimetype == "application/json"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"payload_id": "0123456789abcdef", "payload": 1}, 400, "payload"),
        ({"payload_id": "not hex!"}, 400, "payload_id"),
        ({"payload_id": "0123456789abcdef"}, 404, None),
    ],
)
def test_task_bad_payload_is_refused(client, auth, body, status, field):
    response = client.post(
        "/api/v1/tasks", json={"command": "true", **body}, headers=auth.headers(Role.ADMIN)
    )
    assert response.status_code == status
    assert response.json["error"].get("field") == field


def test_trigger_takes_a_payload_and_a_freerun_entry_keeps_one(client, auth, seed, app_store):
    operator = auth.headers(Role.OPERATOR)
    # given a freerun entry created with an inline payload
    entry = {
        "name": "loader",
        "trigger": "every 3600",
        "worker": "tests.fixtures.workers:Succeeding",
        "payload": {"table": "visits"},
        "max_active": 2,
    }
    created = client.post("/api/v1/processes", json=entry, headers=operator)
    assert created.status_code == 201, created.json
    kept = created.json["payload_id"]
    assert kept and created.json["payload"] is None
    # when it is triggered, with no body, then with a payload of its own
    plain = client.post("/api/v1/processes/loader/trigger", headers=operator)
    given = client.post(
        "/api/v1/processes/loader/trigger", json={"payload": [1, 2]}, headers=operator
    )
    # then the first unit of work has the entry's payload, the second its own
    assert plain.json["uow"]["payload_id"] == kept
    other = given.json["uow"]["payload_id"]
    assert other not in (None, kept)
    assert client.get(f"/api/v1/payloads/{other}", headers=operator).json == [1, 2]
    # a managed process is not triggered with a payload
    refused = client.post("/api/v1/processes/h/trigger", json={"payload": 1}, headers=operator)
    assert refused.status_code == 400 and refused.json["error"]["field"] == "payload"
    assert app_store.get_process("loader").entry.payload_id == kept


def test_editing_an_entry_with_the_same_inline_payload_changes_nothing(client, auth, seed):
    operator = auth.headers(Role.OPERATOR)
    first = client.patch("/api/v1/processes/cron", json={"payload": {"a": 1}}, headers=operator)
    assert first.status_code == 200, first.json
    again = client.patch("/api/v1/processes/cron", json={"payload": {"a": 1}}, headers=operator)
    assert again.json["payload_id"] == first.json["payload_id"]
    assert again.json["version"] == first.json["version"]
    cleared = client.patch("/api/v1/processes/cron", json={"payload_id": None}, headers=operator)
    assert cleared.json["payload_id"] is None


# -- messages --------------------------------------------------------------------------------------


def test_uow_messages_in_order_paged_and_followed(client, auth, seed, app_store, clock):
    # given five messages over two attempts
    app_store.append_messages(seed.uow_id, 1, stamped(clock.now(), "one", "two", "three"), limit=10)
    later = clock.now() + timedelta(seconds=2)
    app_store.append_messages(seed.uow_id, 2, stamped(later, "four", "five"), limit=10)
    viewer = auth.headers(Role.VIEWER)
    # when read two at a time
    first = client.get(f"/api/v1/uows/{seed.uow_id}/messages?limit=2", headers=viewer).json
    rest = client.get(
        f"/api/v1/uows/{seed.uow_id}/messages?after={first['next_after']}", headers=viewer
    ).json
    # then
    assert [m["text"] for m in first["items"]] == ["one", "two"] and first["more"]
    assert [(m["seq"], m["attempt"], m["text"]) for m in rest["items"]] == [
        (3, 1, "three"),
        (4, 2, "four"),
        (5, 2, "five"),
    ]
    assert rest["items"][-1]["at"] == "2026-01-05T13:00:02Z"
    assert (rest["more"], rest["next_after"], rest["dropped"]) == (False, 5, 0)
    assert (rest["state"], rest["finished"]) == ("requested", False)
    empty = client.get(f"/api/v1/uows/{seed.uow_id}/messages?after=5", headers=viewer).json
    assert (empty["items"], empty["next_after"]) == ([], 5)


def test_task_messages_report_what_the_cap_dropped(client, auth, seed, app_store, clock):
    app_store.append_messages(seed.task_id, 1, stamped(clock.now(), "a", "b", "c"), limit=2)
    body = client.get(
        f"/api/v1/tasks/{seed.task_id}/messages", headers=auth.headers(Role.VIEWER)
    ).json
    assert [m["text"] for m in body["items"]] == ["a", "b"]
    assert body["dropped"] == 1


@pytest.mark.parametrize(
    ("query", "status", "field"),
    [("after=-1", 400, "after"), ("after=x", 400, "after"), ("limit=0", 400, "limit")],
)
def test_messages_bad_query_is_400(client, auth, seed, query, status, field):
    response = client.get(
        f"/api/v1/uows/{seed.uow_id}/messages?{query}", headers=auth.headers(Role.VIEWER)
    )
    assert response.status_code == status
    assert response.json["error"]["field"] == field


def test_messages_of_an_unknown_unit_of_work_are_404(client, auth):
    viewer = auth.headers(Role.VIEWER)
    assert client.get("/api/v1/uows/nope/messages", headers=viewer).status_code == 404
    assert client.get("/api/v1/tasks/nope/messages", headers=viewer).status_code == 404


def test_registering_an_inline_payload_again_changes_nothing(client, auth, app_store):
    # given a registration whose freerun entry carries an inline payload
    entry = {
        "name": "filed",
        "kind": "freerun",
        "trigger": "every 60",
        "command": ["true"],
        "payload": {"since": "2026-01-01"},
    }
    body = {"processes": [entry], "source": "ctx.yaml"}
    admin = auth.headers(Role.ADMIN)
    # when it is registered twice
    first = client.put("/api/v1/registration", json=body, headers=admin)
    again = client.put("/api/v1/registration", json=body, headers=admin)
    # then the entry keeps the payload's id, and the second time nothing changed
    assert first.json["created"] == ["filed"], first.json
    assert again.json["unchanged"] == ["filed"], again.json
    stored = app_store.get_process("filed").entry
    assert stored.payload is None
    assert app_store.get_payload(stored.payload_id).data == b'{"since":"2026-01-01"}'


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"kind": "managed", "time_qualifier": "hourly", "payload": 1}, "payload"),
        ({"kind": "freerun", "trigger": "every 60", "payload": 1, "payload_id": "ab"}, "payload"),
        ({"kind": "freerun", "trigger": "every 60", "payload_id": "XYZ"}, "payload_id"),
    ],
)
def test_registration_refuses_a_misplaced_payload(client, auth, fields, field):
    entry = {"name": "filed", "command": ["true"], **fields}
    response = client.put(
        "/api/v1/registration",
        json={"processes": [entry], "source": "ctx.yaml"},
        headers=auth.headers(Role.ADMIN),
    )
    assert response.status_code == 400
    assert field in {e["field"] for e in response.json["error"]["errors"]}
