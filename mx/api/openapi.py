"""The OpenAPI 3.1 document of ``/api/v1`` (served at ``/api/v1/openapi.json``).

Written by hand next to the routes; ``tests/mx/test_meta.py`` checks that every Flask rule
under ``/api/v1`` appears here and every path here is a rule, and the fuzz test drives the API
from this document.
"""

from __future__ import annotations

from typing import Any

from mx.api.openapi_schemas import SCHEMAS, STR, ref

#: Error statuses every authenticated route may answer.
AUTH_ERRORS = (401, 403)


_LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
}
_CURSOR = {
    "name": "cursor",
    "in": "query",
    "required": False,
    "schema": {"type": "string"},
    "description": "`next_cursor` of the previous page.",
}


def _path(*names: str) -> list[dict[str, Any]]:
    return [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for n in names
    ]


def _filters(*names: str, described: dict[str, str] | None = None) -> list[dict[str, Any]]:
    described = described or {}
    params = []
    for name in names:
        param: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": STR}
        if name in described:
            param["description"] = described[name]
        params.append(param)
    return params


def _op(
    summary: str,
    schema: str | None,
    *,
    tag: str,
    status: int = 200,
    params: list[dict[str, Any]] | None = None,
    body: str | None = None,
    errors: tuple[int, ...] = (),
    public: bool = False,
    media: str = "application/json",
    description: str = "",
    also: tuple[int, ...] = (),
) -> dict[str, Any]:
    content = {media: {"schema": ref(schema) if schema else STR}}
    responses: dict[str, Any] = {
        str(code): {"description": "Success", "content": content} for code in (status, *also)
    }
    codes = set(errors) | {400}
    if not public:
        codes |= set(AUTH_ERRORS)
    for code in sorted(codes):
        responses[str(code)] = {
            "description": "Error",
            "content": {"application/json": {"schema": ref("Error")}},
        }
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if description:
        op["description"] = description
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref(body)}},
        }
    if public:
        op["security"] = []
    return op


_PAGE = [_LIMIT, _CURSOR]
_STATE_NOTE = {"state": "One state, or several separated by commas."}


def build_document(version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document for this version of Tactus."""
    paths: dict[str, dict[str, Any]] = {
        "/api/v1/health": {
            "get": _op(
                "Health of mx, the store, the broker and the scheduler",
                "Health",
                tag="meta",
                public=True,
                errors=(503,),
            )
        },
        "/api/v1/openapi.json": {
            "get": _op("This document", None, tag="meta", public=True, media="application/json")
        },
        "/api/v1/processes": {
            "get": _op(
                "Registered processes with enabled, next_fire and counts by state",
                "ProcessPage",
                tag="processes",
                params=[*_filters("kind"), *_PAGE],
            ),
            "post": _op(
                "Create a freerun entry",
                "Process",
                tag="processes",
                status=201,
                body="ProcessCreate",
                errors=(409,),
                description="Needs operator; admin when the body sets `command` or `shell`.",
            ),
        },
        "/api/v1/processes/{name}": {
            "get": _op(
                "One process", "Process", tag="processes", params=_path("name"), errors=(404,)
            ),
            "patch": _op(
                "Change fields of an entry (null resets a field to its default)",
                "Process",
                tag="processes",
                params=_path("name"),
                body="ProcessPatch",
                errors=(404, 409),
                description="Needs operator; admin when the body sets `command` or `shell`.",
            ),
            "delete": _op(
                "Remove a freerun entry",
                "Process",
                tag="processes",
                params=_path("name"),
                errors=(404, 409),
            ),
        },
        "/api/v1/processes/{name}/trigger": {
            "post": _op(
                "Fire now: 201 with the new unit of work (202 for a managed process)",
                "Trigger",
                tag="processes",
                status=201,
                also=(202,),
                params=_path("name"),
                errors=(404, 409),
            )
        },
        "/api/v1/registration": {
            "put": _op(
                "Upsert the processes of a registration file (what launch.py register does)",
                "RegistrationResult",
                tag="processes",
                body="Registration",
                description="Needs admin. Idempotent; a bad entry changes nothing and every "
                "problem is named. `launch.py register FILE --url` sends its file here.",
            )
        },
        "/api/v1/jobs": {
            "get": _op(
                "Jobs, newest first",
                "JobPage",
                tag="jobs",
                params=[
                    *_filters("process", "state", "from", "to", described=_STATE_NOTE),
                    *_PAGE,
                ],
            )
        },
        "/api/v1/jobs/{process}/{timeperiod}": {
            "get": _op(
                "One job with its units of work and event history",
                "JobDetail",
                tag="jobs",
                params=_path("process", "timeperiod"),
                errors=(404,),
            )
        },
        "/api/v1/jobs/{process}/{timeperiod}/reprocess": {
            "post": _op(
                "Reprocess the job and its cascade; the jobs that changed",
                "Changed",
                tag="jobs",
                params=_path("process", "timeperiod"),
                errors=(404, 409),
            )
        },
        "/api/v1/jobs/{process}/{timeperiod}/skip": {
            "post": _op(
                "Skip the job and its cascade; the jobs that changed",
                "Changed",
                tag="jobs",
                params=_path("process", "timeperiod"),
                errors=(404, 409),
            )
        },
        "/api/v1/uows": {
            "get": _op(
                "Units of work, newest first",
                "UowPage",
                tag="uows",
                params=[*_filters("process", "state", described=_STATE_NOTE), *_PAGE],
            )
        },
        "/api/v1/uows/{uow_id}": {
            "get": _op(
                "One unit of work with its history",
                "UowDetail",
                tag="uows",
                params=_path("uow_id"),
                errors=(404,),
            )
        },
        "/api/v1/uows/{uow_id}/cancel": {
            "post": _op(
                "Cancel a unit of work",
                "Uow",
                tag="uows",
                params=_path("uow_id"),
                errors=(404, 409),
            )
        },
        "/api/v1/tasks": {
            "post": _op(
                "Submit an ad-hoc shell command (admin)",
                "Task",
                tag="tasks",
                status=201,
                body="TaskCreate",
            )
        },
        "/api/v1/tasks/{task_id}": {
            "get": _op(
                "A task's state and timestamps",
                "Task",
                tag="tasks",
                params=_path("task_id"),
                errors=(404,),
            )
        },
        "/api/v1/boxes": {
            "get": _op(
                "Supervised processes per box with their states",
                "SupervisedPage",
                tag="boxes",
                params=[*_filters("box_id"), *_PAGE],
            )
        },
        "/api/v1/workers": {
            "get": _op(
                "Workers with their last heartbeat",
                "WorkerPage",
                tag="boxes",
                params=[*_filters("box_id", "process"), *_PAGE],
            )
        },
        "/api/v1/boxes/{box_id}/processes/{name}/start": {
            "post": _op(
                "Desire the process running on the box",
                "SupervisedList",
                tag="boxes",
                params=_path("box_id", "name"),
                errors=(404,),
            )
        },
        "/api/v1/boxes/{box_id}/processes/{name}/stop": {
            "post": _op(
                "Desire the process stopped on the box",
                "SupervisedList",
                tag="boxes",
                params=_path("box_id", "name"),
                errors=(404,),
            )
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tactus",
            "version": version,
            "description": "Job scheduler and process supervisor. Send `Authorization: Bearer "
            "<token>`; a request made with the page's session must send its CSRF token in "
            "`X-CSRF-Token` when it changes anything. GET never changes state.",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "tactus_session"},
            },
        },
        "security": [{"bearer": []}, {"session": []}],
    }
