"""Component schemas of the OpenAPI document (``mx/api/openapi.py`` builds the paths)."""

from __future__ import annotations

from typing import Any

from db.states import JobState, ProcessKind, UowState

STR = {"type": "string"}
STR_OR_NULL = {"type": ["string", "null"]}
_INT = {"type": "integer"}
_INT_OR_NULL = {"type": ["integer", "null"]}
_OBJ = {"type": "object"}
_INSTANT = {"type": ["string", "null"], "description": "UTC instant, 2026-11-01T05:30:00.123Z"}


def ref(name: str) -> dict[str, str]:
    """A reference to the component schema ``name``."""
    return {"$ref": f"#/components/schemas/{name}"}


def _page(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": ref(item)},
            "next_cursor": {
                "type": ["string", "null"],
                "description": "Pass back as `cursor` for the next page; null on the last page.",
            },
        },
    }


#: Fields of an entry (SPEC section 4) as JSON, for creating and editing.
ENTRY_FIELDS: dict[str, Any] = {
    "name": {"type": "string", "pattern": "^[a-z0-9_]+$", "maxLength": 191},
    "kind": {"type": "string", "enum": [k.value for k in ProcessKind]},
    "worker": {"type": ["string", "null"], "description": "module:Class"},
    "command": {
        "oneOf": [{"type": "array", "items": STR}, STR_OR_NULL],
        "description": "argv list, or one string (run by /bin/sh -c only with shell: true). "
        "Needs the admin role.",
    },
    "shell": {"type": ["boolean", "null"], "description": "Needs the admin role."},
    "time_qualifier": {"type": ["string", "null"]},
    "state_machine": {"type": ["string", "null"]},
    "blocking": {"type": ["string", "null"]},
    "tree": {"type": ["string", "null"]},
    "depends_on": {"type": ["array", "null"], "items": STR},
    "start_timeperiod": {"type": ["string", "null"]},
    "lag": {"type": ["number", "null"], "minimum": 0},
    "trigger": {
        "type": ["string", "null"],
        "description": "*/5 * * * *, every 300, at 10:00,22:00, once 2026-12-24T18:00:00Z",
    },
    "timezone": {"type": ["string", "null"]},
    "catchup": {"type": ["string", "null"], "enum": ["all", "latest", "none", None]},
    "max_active": {"type": ["integer", "null"], "minimum": 1},
    "retries": {"type": ["integer", "null"], "minimum": 0},
    "retry_delay": {"type": ["number", "null"], "minimum": 0},
    "timeout": {"type": ["number", "null"], "exclusiveMinimum": 0},
    "arguments": {"type": ["object", "null"]},
    "boxes": {"type": ["array", "null"], "items": STR},
    "workers": {"type": ["integer", "null"], "minimum": 0},
    "enabled": {"type": ["boolean", "null"]},
    "description": {"type": ["string", "null"]},
    "noop_exit_code": {"type": ["integer", "null"]},
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {
                        "type": "string",
                        "description": "invalid_input, unauthenticated, forbidden, "
                        "csrf_refused, not_found, method_not_allowed, transition_refused, "
                        "conflict, store_unavailable, broker_unavailable ...",
                    },
                    "message": STR,
                    "field": {"type": "string", "description": "The bad field (400 only)."},
                    "errors": {"type": "array", "items": _OBJ},
                },
            }
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "version", "store", "broker", "scheduler"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "degraded"]},
            "version": STR,
            "store": {"type": "string", "enum": ["ok", "unavailable"]},
            "broker": {"type": "string", "enum": ["ok", "unavailable"]},
            "scheduler": {
                "type": "object",
                "description": "From the worker records of process `scheduler` (their "
                "heartbeats); both null while no scheduler has registered one.",
                "properties": {
                    "alive": {"type": ["boolean", "null"]},
                    "leader": STR_OR_NULL,
                },
            },
        },
    },
    "Process": {
        "type": "object",
        "properties": {
            **{k: {} for k in ENTRY_FIELDS},
            "source": {"type": "string", "enum": ["file", "api"]},
            "version": _INT,
            "created_at": _INSTANT,
            "updated_at": _INSTANT,
            "next_fire": _INSTANT,
            "counts": {"type": "object", "additionalProperties": _INT},
        },
    },
    "ProcessCreate": {
        "type": "object",
        "required": ["name", "trigger"],
        "properties": ENTRY_FIELDS,
        "additionalProperties": False,
    },
    "ProcessPatch": {
        "type": "object",
        "minProperties": 1,
        "properties": ENTRY_FIELDS,
        "additionalProperties": False,
    },
    "Registration": {
        "type": "object",
        "required": ["processes"],
        "properties": {
            "processes": {
                "description": "The entries of a registration file (SPEC section 4): a list, "
                "or an object name -> entry.",
                "oneOf": [
                    {"type": "array", "items": ref("ProcessEntry")},
                    {"type": "object", "additionalProperties": ref("ProcessEntry")},
                ],
            },
            "source": {
                "type": "string",
                "minLength": 1,
                "maxLength": 500,
                "description": "The file they were read from, for the histories.",
            },
            "check": {"type": "boolean", "description": "Validate and plan only."},
            "prune": {
                "type": "boolean",
                "description": "Remove file-registered processes these entries do not define.",
            },
        },
        "additionalProperties": False,
    },
    "ProcessEntry": {"type": "object", "properties": ENTRY_FIELDS},
    "RegistrationResult": {
        "type": "object",
        "properties": {
            "applied": {"type": "boolean"},
            **{
                key: {"type": "array", "items": STR}
                for key in ("created", "updated", "unchanged", "pruned")
            },
        },
    },
    "Job": {
        "type": "object",
        "properties": {
            "process": STR,
            "timeperiod": STR,
            "qualifier": STR,
            "state": {"type": "string", "enum": [s.value for s in JobState]},
            "uow_id": STR_OR_NULL,
            "run": _INT,
            "version": _INT,
            "created_at": _INSTANT,
            "updated_at": _INSTANT,
        },
    },
    "JobDetail": {
        "allOf": [
            ref("Job"),
            {
                "type": "object",
                "properties": {
                    "uows": {"type": "array", "items": ref("Uow")},
                    "history": {"type": "array", "items": ref("Event")},
                },
            },
        ]
    },
    "Changed": {
        "type": "object",
        "required": ["changed"],
        "properties": {"changed": {"type": "array", "items": ref("Job")}},
    },
    "Uow": {
        "type": "object",
        "properties": {
            "id": STR,
            "process": STR,
            "kind": STR,
            "state": {"type": "string", "enum": [s.value for s in UowState]},
            "attempt": _INT,
            "retries": _INT,
            "arguments": _OBJ,
            "exit_code": _INT_OR_NULL,
            "output": STR_OR_NULL,
            "error": STR_OR_NULL,
            "scheduled_at": _INSTANT,
            "started_at": _INSTANT,
            "finished_at": _INSTANT,
        },
    },
    "UowDetail": {
        "allOf": [
            ref("Uow"),
            {
                "type": "object",
                "properties": {"history": {"type": "array", "items": ref("Event")}},
            },
        ]
    },
    "Trigger": {
        "type": "object",
        "properties": {"process": STR, "uow": {"oneOf": [ref("Uow"), {"type": "null"}]}},
    },
    "Event": {
        "type": "object",
        "properties": {
            "at": _INSTANT,
            "trigger": STR,
            "from": STR_OR_NULL,
            "to": STR_OR_NULL,
            "actor": STR,
            "reason": STR,
            "details": _OBJ,
        },
    },
    "TaskCreate": {
        "type": "object",
        "required": ["command"],
        "properties": {
            "command": {"type": "string", "minLength": 1, "maxLength": 10000},
            "scheduled_at": {"type": ["string", "null"], "format": "date-time"},
            "arguments": {"type": ["object", "null"]},
            "retries": {"type": "integer", "minimum": 0, "maximum": 100},
        },
        "additionalProperties": False,
    },
    "Task": {
        "type": "object",
        "required": ["task_id", "state"],
        "properties": {
            "task_id": STR,
            "command": STR_OR_NULL,
            "state": STR,
            "attempt": _INT,
            "retries": _INT,
            "scheduled_at": _INSTANT,
            "picked_at": _INSTANT,
            "started_at": _INSTANT,
            "completed_at": _INSTANT,
            "failed_at": _INSTANT,
            "exit_code": _INT_OR_NULL,
            "output": STR_OR_NULL,
            "error": STR_OR_NULL,
        },
    },
    "Supervised": {
        "type": "object",
        "properties": {
            "box_id": STR,
            "process": STR,
            "desired": {"type": "string", "enum": ["running", "stopped"]},
            "state": STR,
            "pid": _INT_OR_NULL,
            "started_at": _INSTANT,
            "stopped_at": _INSTANT,
            "exit_code": _INT_OR_NULL,
            "start_attempts": _INT,
            "backoff_until": _INSTANT,
            "stats": _OBJ,
            "updated_at": _INSTANT,
        },
    },
    "SupervisedList": {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": ref("Supervised")}},
    },
    "Worker": {
        "type": "object",
        "properties": {
            "worker_id": STR,
            "process": STR,
            "box_id": STR,
            "pid": _INT,
            "state": STR,
            "alive": {"type": ["boolean", "null"]},
            "current_uow": STR_OR_NULL,
            "concurrency": _INT,
            "started_at": _INSTANT,
            "heartbeat_at": _INSTANT,
        },
    },
    "ProcessPage": _page("Process"),
    "JobPage": _page("Job"),
    "UowPage": _page("Uow"),
    "SupervisedPage": _page("Supervised"),
    "WorkerPage": _page("Worker"),
}
