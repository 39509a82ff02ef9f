"""The OpenAPI 3.1 document of ``/api/v1`` (served at ``/api/v1/openapi.json``).

Written by hand next to the routes; ``tests/mx/test_meta.py`` checks that every Flask rule
under ``/api/v1`` appears here and every path here is a rule, and the fuzz test drives the API
from this document.
"""

from __future__ import annotations

from typing import Any

from db.states import JobState, ProcessKind, UowState
from mx.api import executor_doc
from mx.api.openapi_schemas import PROCESS_NAME, SCHEMAS, STR, TIMEPERIOD, ref

#: Error statuses every authenticated route may answer.
AUTH_ERRORS = (401, 403)
#: Every route may answer 503 ``store_unavailable`` while the store is away (SPEC section 15).
OUTAGE = 503
#: The format of each list's ``cursor``: only the list that issued a cursor takes it back.
CURSOR_FORMATS = {
    "tactus-cursor-processes": "/processes",
    "tactus-cursor-jobs": "/jobs",
    "tactus-cursor-uows": "/uows",
    "tactus-cursor-boxes": "/boxes",
    "tactus-cursor-workers": "/workers",
}
_STATES = {
    "job": "|".join(s.value for s in JobState),
    "uow": "|".join(s.value for s in UowState),
}
#: Query parameters by name: what each filter takes (an empty ``process``, ``state`` or
#: ``box_id`` means no filter).
_QUERY: dict[str, dict[str, Any]] = {
    "process": {"type": "string", "pattern": "^[a-z0-9_]*$", "maxLength": 191},
    "box_id": STR,
    "kind": {"type": "string", "enum": [k.value for k in ProcessKind]},
    "from": {**TIMEPERIOD, "description": "Timeperiod to start at (inclusive)."},
    "to": {**TIMEPERIOD, "description": "Timeperiod to stop before (exclusive)."},
    "timeperiod": {**TIMEPERIOD, "description": "A timeperiod of the process's grid."},
}
#: Path parameters by name.
_PATH: dict[str, dict[str, Any]] = {
    "name": PROCESS_NAME,
    "process": PROCESS_NAME,
    "timeperiod": TIMEPERIOD,
}


def _states(entity: str) -> dict[str, Any]:
    names = _STATES[entity]
    return {
        "type": "string",
        "pattern": f"^(({names})(,({names}))*)?$",
        "description": "One state, or several separated by commas; empty: every state.",
    }


def _page(listing: str) -> list[dict[str, Any]]:
    """``limit`` and ``cursor`` of the list at ``listing``."""
    fmt = next(name for name, path in CURSOR_FORMATS.items() if path == listing)
    return [
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
        },
        {
            "name": "cursor",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "format": fmt},
            "description": "`next_cursor` of the previous page of this list (opaque); empty: "
            "the first page.",
        },
    ]


def _path(*names: str) -> list[dict[str, Any]]:
    return [
        {
            "name": n,
            "in": "path",
            "required": True,
            "schema": _PATH.get(n, {"type": "string", "minLength": 1}),
        }
        for n in names
    ]


def _filters(*names: str, states: str | None = None) -> list[dict[str, Any]]:
    params = [{"name": n, "in": "query", "required": False, "schema": _QUERY[n]} for n in names]
    if states:
        params.append(
            {"name": "state", "in": "query", "required": False, "schema": _states(states)}
        )
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
    body_required: bool = True,
) -> dict[str, Any]:
    content = {media: {"schema": ref(schema) if schema else STR}}
    responses: dict[str, Any] = {
        str(code): {"description": "Success", "content": content} for code in (status, *also)
    }
    codes = set(errors) | {400, OUTAGE}
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
            "required": body_required,
            "content": {"application/json": {"schema": ref(body)}},
        }
    if public:
        op["security"] = []
    return op


#: What the two message routes say about following.
MESSAGES_DESCRIPTION = (
    "A command writes lines to the file `$TACTUS_MESSAGES`, a worker class calls "
    "`self.message(text)`; each is kept with its time, attempt and `seq` (1, 2, 3 ...), at most "
    "`max_messages_per_uow` of them (the oldest; `dropped` counts the rest). To follow, pass "
    "`next_after` back as `after` until `finished` is true and `more` false."
)


def _messages() -> list[dict[str, Any]]:
    """``after`` and ``limit`` of a message page."""
    return [
        {
            "name": "after",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 0, "maximum": 999_999_999_999},
            "description": "The `seq` of the last message the caller has (default 0).",
        },
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
        },
    ]


def _payload_post() -> dict[str, Any]:
    """``POST /payloads``: a JSON document or any bytes with their content type."""
    op = _op(
        "Store bytes as a payload (once per content): 201 with its payload_id",
        "Payload",
        tag="payloads",
        status=201,
        errors=(413,),
        description="Needs operator. The body is the payload: a JSON document "
        "(`application/json`) or any bytes, with their `Content-Type` (kept and given back by "
        "GET). At most `max_payload_bytes` (default 16 MiB): 413 `payload_too_large` names the "
        "limit. The same bytes posted again give the same payload (`created` false).",
    )
    op["requestBody"] = {
        "required": True,
        "content": {
            "application/json": {"schema": {"description": "Any JSON document."}},
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary", "minLength": 1}
            },
        },
    }
    return op


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
        "/api/v1/openapi.json": {"get": _op("This document", "OpenApi", tag="meta", public=True)},
        "/api/v1/processes": {
            "get": _op(
                "Registered processes with enabled, next_fire and counts by state",
                "ProcessPage",
                tag="processes",
                params=[*_filters("kind"), *_page("/processes")],
            ),
            "post": _op(
                "Create a freerun entry",
                "Process",
                tag="processes",
                status=201,
                body="ProcessCreate",
                errors=(404, 409),
                description="Needs operator; admin when the body sets `command` or `shell`. "
                "404 when no payload has the `payload_id`.",
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
                "Fire now: 201 with the new unit of work; 202 when it is stored but waits for "
                "the broker (published when it is back), and for a managed process",
                "Trigger",
                tag="processes",
                status=201,
                also=(202,),
                params=_path("name"),
                body="TriggerBody",
                body_required=False,
                errors=(404, 409),
                description="An optional body gives the unit of work its payload: "
                "`payload_id`, or an inline `payload` stored as one (a freerun process only). "
                "404 when no payload has the `payload_id`.",
            )
        },
        "/api/v1/processes/{name}/why": {
            "get": _op(
                "Why the process (at a timeperiod) has not run or is waiting",
                "Why",
                tag="processes",
                params=[*_path("name"), *_filters("timeperiod")],
                errors=(404,),
                description="Reasons from the stored state, each a stable `code`, a plain "
                "`message` and the `facts` it rests on (docs/why.md). `timeperiod`: a managed "
                "process's period (default: its oldest unfinished job); 400 when it is not a "
                "period of the process's grid (a daily process's ends in 00), or given for a "
                "freerun process, which has none.",
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
                params=[*_filters("process", "from", "to", states="job"), *_page("/jobs")],
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
                params=[*_filters("process", states="uow"), *_page("/uows")],
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
        "/api/v1/uows/{uow_id}/messages": {
            "get": _op(
                "Messages the unit of work emitted, in order",
                "MessagePage",
                tag="uows",
                params=[*_path("uow_id"), *_messages()],
                errors=(404,),
                description=MESSAGES_DESCRIPTION,
            )
        },
        "/api/v1/uows/{uow_id}/cancel": {
            "post": _op(
                "Cancel a unit of work (a flow run with its steps that have not ended)",
                "Uow",
                tag="uows",
                params=_path("uow_id"),
                errors=(404, 409),
            )
        },
        "/api/v1/uows/{uow_id}/retry-failed": {
            "post": _op(
                "Put a canceled flow run back in progress, re-running only its canceled and "
                "upstream_failed steps with fresh attempts",
                "RetryFailed",
                tag="uows",
                params=_path("uow_id"),
                errors=(404, 409),
                description="409 `transition_refused`: not a flow run, or a flow run that is "
                "not canceled. Steps that were processed keep their results; its job, skipped "
                "when the flow run was canceled, goes back in progress with it.",
            )
        },
        "/api/v1/tasks": {
            "post": _op(
                "Submit an ad-hoc shell command (admin): 201, or 202 when it is stored but "
                "waits for the broker (published when the broker is back)",
                "TaskSubmitted",
                tag="tasks",
                status=201,
                also=(202,),
                body="TaskCreate",
                errors=(404,),
                description="`payload_id` names a payload (POST /payloads; 404 when there is "
                "none), or `payload` gives one inline. The command reads it from the file "
                "`$TACTUS_PAYLOAD`, and its arguments as JSON from `$TACTUS_ARGUMENTS`.",
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
        "/api/v1/tasks/{task_id}/messages": {
            "get": _op(
                "Messages the task emitted, in order",
                "MessagePage",
                tag="tasks",
                params=[*_path("task_id"), *_messages()],
                errors=(404,),
                description=MESSAGES_DESCRIPTION,
            )
        },
        "/api/v1/payloads": {"post": _payload_post()},
        "/api/v1/payloads/{payload_id}": {
            "get": _op(
                "The payload's bytes, with its content type",
                None,
                tag="payloads",
                params=_path("payload_id"),
                errors=(404,),
                media="*/*",
            )
        },
        "/api/v1/boxes": {
            "get": _op(
                "Supervised processes per box with their states",
                "SupervisedPage",
                tag="boxes",
                params=[*_filters("box_id"), *_page("/boxes")],
            )
        },
        "/api/v1/workers": {
            "get": _op(
                "Workers with their last heartbeat",
                "WorkerPage",
                tag="boxes",
                params=[*_filters("box_id", "process"), *_page("/workers")],
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
    paths.update(executor_doc.paths(_op, _path))
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
            "schemas": {**SCHEMAS, **executor_doc.SCHEMAS},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "tactus_session"},
            },
        },
        "security": [{"bearer": []}, {"session": []}],
    }
