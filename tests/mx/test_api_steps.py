"""Flows through the API and the page (SPEC section 10): ``steps`` of a freerun entry are created
and edited by the registration rules, a step's command needs the admin role, and an edit of
other fields, on the API or the page, keeps the steps."""

from __future__ import annotations

import pytest

from db.credentials import Role
from db.errors import NotFound
from tests.mx.conftest import register

WORKER = "tests.fixtures.workers:Succeeding"


def flow(*steps: dict, name: str = "etl") -> dict:
    return {"name": name, "trigger": "every 3600", "steps": list(steps)}


def register_flow(store, clock, *names: str) -> None:
    """Register freerun ``etl`` from a file, with one step per name, each running its name."""
    steps = [{"name": name, "command": [name]} for name in names]
    register(store, clock, name="etl", kind="freerun", trigger="every 3600", steps=steps)


def test_create_a_flow_with_worker_steps_as_operator(client, auth, app_store, seed):
    body = flow(
        {"name": "extract", "worker": WORKER},
        {"name": "load", "worker": WORKER, "retries": 2.0, "timeout": 60, "run_if": "all_done"},
    )
    response = client.post("/api/v1/processes", json=body, headers=auth.headers(Role.OPERATOR))
    assert response.status_code == 201, response.json
    assert [s["name"] for s in response.json["steps"]] == ["extract", "load"]
    load = app_store.get_process("etl").entry.steps[1]
    # a whole JSON number is a count, as for the process's own fields
    assert (load.retries, load.timeout.total_seconds(), load.run_if.value) == (2, 60, "all_done")


def test_a_step_command_needs_admin(client, auth, seed, app_store):
    body = flow({"name": "extract", "command": ["rm", "-rf", "/"]})
    response = client.post("/api/v1/processes", json=body, headers=auth.headers(Role.OPERATOR))
    assert response.status_code == 403
    with pytest.raises(NotFound):
        app_store.get_process("etl")
    response = client.patch(
        "/api/v1/processes/cron",
        json={"command": None, "steps": [{"name": "a", "shell": False, "worker": WORKER}]},
        headers=auth.headers(Role.OPERATOR),
    )
    assert response.status_code == 403
    response = client.post("/api/v1/processes", json=body, headers=auth.headers(Role.ADMIN))
    assert response.status_code == 201, response.json


@pytest.mark.parametrize(
    ("body", "field", "problem"),
    [
        (
            flow(
                {"name": "a", "worker": WORKER, "depends_on": ["b"]},
                {"name": "b", "worker": WORKER, "depends_on": ["a"]},
            ),
            "steps.a.depends_on",
            "dependency cycle: a -> b -> a",
        ),
        (flow({"name": "a", "worker": WORKER, "depends_on": ["z"]}), "steps.a.depends_on", "'z'"),
        ({**flow({"name": "a", "worker": WORKER}), "worker": WORKER}, "worker", "not with steps"),
        (flow(), "steps", "at least one step"),
        (
            flow({"name": "a", "worker": WORKER, "retry_delay": 1e-7}),
            "steps.a.retry_delay",
            "1e-07",
        ),
        (flow({"worker": WORKER, "retries": -1}), "steps[0].retries", ">= 0"),
    ],
)
def test_create_refuses_bad_steps_naming_the_step(client, auth, seed, body, field, problem):
    response = client.post("/api/v1/processes", json=body, headers=auth.headers(Role.ADMIN))
    assert response.status_code == 400
    error = response.json["error"]
    assert error["field"] == field and problem in error["message"], error


def test_edit_other_fields_keeps_the_steps(client, auth, app_store, clock, seed):
    register_flow(app_store, clock, "a", "b")
    steps = app_store.get_process("etl").entry.steps
    # the API, by an operator: the steps are not sent, so no admin is needed
    response = client.patch(
        "/api/v1/processes/etl", json={"retries": 7}, headers=auth.headers(Role.OPERATOR)
    )
    assert response.status_code == 200, response.json
    assert app_store.get_process("etl").entry.steps == steps
    # the page's form, which cannot edit steps
    csrf = auth.login("operator")
    page = client.get("/processes/etl")
    assert page.status_code == 200
    form = {
        "csrf_token": csrf,
        "trigger": "every 120",
        "retries": "7",
        "enabled": "on",
        "arguments": "{}",
    }
    response = client.post("/processes/etl/edit", data=form)
    assert response.status_code == 303, response.get_data(as_text=True)
    entry = app_store.get_process("etl").entry
    assert (entry.trigger, entry.retries, entry.steps) == ("every 120", 7, steps)


def test_edit_replaces_steps_with_a_command(client, auth, app_store, clock, seed):
    register_flow(app_store, clock, "a")
    response = client.patch(
        "/api/v1/processes/etl",
        json={"steps": None, "command": ["plain"]},
        headers=auth.headers(Role.ADMIN),
    )
    assert response.status_code == 200, response.json
    assert response.json["steps"] is None and response.json["command"] == ["plain"]
    entry = app_store.get_process("etl").entry
    assert (entry.steps, entry.command) == ((), ("plain",))


def test_openapi_document_describes_steps(client):
    schemas = client.get("/api/v1/openapi.json").json["components"]["schemas"]
    step = schemas["Step"]
    assert step["required"] == ["name"] and step["properties"]["name"]["maxLength"] == 32
    assert step["properties"]["run_if"]["enum"][:3] == ["all_succeeded", "all_done", "any_failed"]
    assert schemas["ProcessCreate"]["properties"]["steps"]["items"] == {
        "$ref": "#/components/schemas/Step"
    }
    assert "steps" in schemas["ProcessPatch"]["properties"]
    assert any("steps" in choice["required"] for choice in schemas["ProcessCreate"]["oneOf"])
