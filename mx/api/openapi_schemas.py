"""Component schemas of the OpenAPI document (``mx/api/openapi.py`` builds the paths)."""

from __future__ import annotations

from typing import Any

from db.flows import STEP_NAME_LENGTH
from db.models import COMMAND_PLACEHOLDERS
from db.registration_rules import MAX_COUNT, MAX_SECONDS
from db.states import (
    Blocking,
    Catchup,
    JobState,
    ProcessKind,
    Qualifier,
    RunIf,
    StateMachineName,
    UowState,
)
from mx.services.validate import MIN_SECONDS
from mx.services.why import CODES as WHY_CODES

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


#: A process name (SPEC section 4), as a path part or a field.
PROCESS_NAME = {"type": "string", "pattern": "^[a-z0-9_]+$", "maxLength": 191}
#: A payload id (SPEC section 12).
PAYLOAD_ID = {"type": "string", "pattern": "^[0-9a-f]{1,32}$"}
#: Any JSON value (an inline payload; null: none).
JSON_VALUE_REF = {"$ref": "#/components/schemas/JsonValue"}
#: A body may give ``payload_id`` or ``payload``, not both (a null one counts as absent).
NOT_BOTH_PAYLOADS = {
    "not": {
        "required": ["payload_id", "payload"],
        "properties": {"payload_id": {"type": "string"}, "payload": {"not": {"type": "null"}}},
    }
}
#: A timeperiod (SPEC section 2): ten digits, UTC.
TIMEPERIOD = {"type": "string", "pattern": "^[0-9]{10}$"}
#: One word of an argv: ``{placeholder}`` only for the known placeholders, ``{{``/``}}`` for
#: literal braces.
_PLACEHOLDER = "|".join(sorted(COMMAND_PLACEHOLDERS))
ARGV_WORD = {
    "type": "string",
    "pattern": "^([^{}]|\\{\\{|\\}\\}|\\{(" + _PLACEHOLDER + ")(![rsa])?(:[^{}]*)?\\})*$",
}
#: Numbers of an entry: counts and seconds, within what every store and datetime can hold.
_COUNT_MAX = MAX_COUNT
_SECONDS = {"type": ["number", "null"], "minimum": MIN_SECONDS, "maximum": MAX_SECONDS}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema["type"]
    return {**schema, "type": [kind, "null"] if isinstance(kind, str) else [*kind, "null"]}


#: Fields of a freerun entry (SPEC section 4) as JSON, for creating and editing it; null means
#: the default. Fields of other kinds are refused (``additionalProperties``) unless null or
#: their default.
FREERUN_FIELDS: dict[str, Any] = {
    "name": PROCESS_NAME,
    "kind": {"enum": [ProcessKind.FREERUN.value, None]},
    "worker": {
        "type": ["string", "null"],
        "pattern": r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$",
        "description": "module.path:Class of a UowWorker (give worker or command).",
    },
    "command": {
        "description": "An argv list, or one string (split into words unless shell is true). "
        "Placeholders: " + ", ".join(f"{{{p}}}" for p in sorted(COMMAND_PLACEHOLDERS)) + ". "
        "Needs the admin role.",
        "anyOf": [
            {
                "type": "array",
                "minItems": 1,
                "items": ARGV_WORD,
                "prefixItems": [{**ARGV_WORD, "minLength": 1}],
            },
            {"type": "string", "format": "tactus-command"},
            {"type": "null"},
        ],
    },
    "shell": {
        "type": ["boolean", "null"],
        "description": "Run a string command by /bin/sh -c. Needs the admin role.",
    },
    "trigger": {
        "type": "string",
        "format": "tactus-trigger",
        "description": "A trigger of docs/triggers.md: '*/5 * * * *', 'every 300', "
        "'every 1h30m', 'at 10:00,22:00', 'at Mon-Fri 09:30', 'once 2026-12-24T18:00:00Z'.",
    },
    "timezone": {
        "type": ["string", "null"],
        "format": "tactus-timezone",
        "description": "An IANA time zone (Europe/Paris); default: the timezone setting.",
    },
    "catchup": {"enum": [c.value for c in Catchup] + [None]},
    "max_active": {"type": ["integer", "null"], "minimum": 1, "maximum": _COUNT_MAX},
    "retries": {"type": ["integer", "null"], "minimum": 0, "maximum": _COUNT_MAX},
    "retry_delay": _SECONDS,
    "timeout": _SECONDS,
    "arguments": {"oneOf": [ref("JsonObject"), {"type": "null"}]},
    "boxes": {
        "type": ["array", "null"],
        "minItems": 1,
        "items": {"type": "string", "format": "tactus-regex"},
        "description": "Python regular expressions of the boxes that run it.",
    },
    "workers": {"type": ["integer", "null"], "minimum": 0, "maximum": _COUNT_MAX},
    "enabled": {"type": ["boolean", "null"]},
    "description": {"type": ["string", "null"]},
    "noop_exit_code": {"type": ["integer", "null"], "minimum": 1, "maximum": 255},
    "steps": {
        "type": ["array", "null"],
        "minItems": 1,
        "items": ref("Step"),
        "description": "The steps of a flow (SPEC section 10), instead of worker and command. "
        "Step names are unique; depends_on names other steps of the entry, without a cycle; "
        "when no step gives depends_on, each step depends on the one before it. A step's "
        "command or shell needs the admin role.",
    },
    "payload_id": {
        "type": ["string", "null"],
        "pattern": PAYLOAD_ID["pattern"],
        "description": "A payload (POST /payloads) every unit of work of the entry is given.",
    },
    "payload": {
        **JSON_VALUE_REF,
        "description": "An inline payload (any JSON value), stored as a payload: the entry "
        "then holds its payload_id. Not with payload_id.",
    },
}
#: What runs: exactly one of a worker, an argv, or a string command (``shell`` only with a
#: string); a step's choices.
_ONE_PROGRAM = [
    {
        "required": ["worker"],
        "properties": {
            "worker": {"type": "string"},
            "command": {"type": "null"},
            "shell": {"enum": [False, None]},
        },
    },
    {
        "required": ["command"],
        "properties": {
            "command": {"type": "array"},
            "worker": {"type": "null"},
            "shell": {"enum": [False, None]},
        },
    },
    {
        "required": ["command"],
        "properties": {"command": {"type": "string"}, "worker": {"type": "null"}},
    },
]
#: What runs a freerun: one program without steps, or steps and none of the fields of one.
PROGRAM = [
    *(
        {**choice, "properties": {**choice["properties"], "steps": {"type": "null"}}}
        for choice in _ONE_PROGRAM
    ),
    {
        "required": ["steps"],
        "properties": {
            "steps": {"type": "array"},
            "worker": {"type": "null"},
            "command": {"type": "null"},
            "shell": {"enum": [False, None]},
        },
    },
]
#: One step of a flow (SPEC section 10): the fields it shares with its process follow the
#: process's rules; null means the process's value (or, for ``depends_on``, not given).
STEP = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9_]+$", "maxLength": STEP_NAME_LENGTH},
        **{
            field: FREERUN_FIELDS[field]
            for field in (
                "worker",
                "command",
                "shell",
                "retries",
                "retry_delay",
                "timeout",
                "arguments",
                "boxes",
                "noop_exit_code",
            )
        },
        "depends_on": {
            "type": ["array", "null"],
            "items": {"type": "string", "pattern": "^[a-z0-9_]+$"},
            "uniqueItems": True,
            "description": "Names of steps of the same entry that must end first.",
        },
        "run_if": {"enum": [r.value for r in RunIf] + [None]},
    },
    "oneOf": _ONE_PROGRAM,
    "additionalProperties": False,
}
#: Every field of an entry of any kind (a registration file's entry; what GET answers).
ENTRY_FIELDS: dict[str, Any] = {
    **FREERUN_FIELDS,
    "kind": {"type": "string", "enum": [k.value for k in ProcessKind]},
    "trigger": {**FREERUN_FIELDS["trigger"], "type": ["string", "null"]},
    "time_qualifier": {"enum": [q.value for q in Qualifier] + [None]},
    "state_machine": {"enum": [m.value for m in StateMachineName] + [None]},
    "blocking": {"enum": [b.value for b in Blocking] + [None]},
    "tree": _nullable(PROCESS_NAME),
    "depends_on": {"type": ["array", "null"], "items": PROCESS_NAME, "uniqueItems": True},
    "start_timeperiod": {"type": ["string", "null"]},
    "lag": {
        "oneOf": [
            {"const": 0},
            {"type": "number", "minimum": MIN_SECONDS, "maximum": MAX_SECONDS},
            {"type": "null"},
        ]
    },
}
#: A JSON value any store keeps: numbers within 64-bit integers, no empty field names.
JSON_VALUE = {
    "anyOf": [
        {"type": ["string", "boolean", "null"]},
        {"type": "number", "minimum": -(2**63), "maximum": 2**63 - 1},
        {"type": "array", "items": ref("JsonValue")},
        ref("JsonObject"),
    ]
}
JSON_OBJECT = {
    "type": "object",
    "propertyNames": {"minLength": 1},
    "additionalProperties": ref("JsonValue"),
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
        "description": "A freerun entry (only freerun entries are created at run time: managed "
        "and daemon entries come from a registration file).",
        "required": ["name", "trigger"],
        "properties": FREERUN_FIELDS,
        "oneOf": PROGRAM,
        **NOT_BOTH_PAYLOADS,
        "additionalProperties": False,
    },
    "ProcessPatch": {
        "type": "object",
        "description": "Fields to change (null: back to the default). The fields of another kind "
        "than the process's are refused; name and kind cannot change.",
        "minProperties": 1,
        "properties": {k: v for k, v in ENTRY_FIELDS.items() if k not in ("name", "kind")},
        **NOT_BOTH_PAYLOADS,
        "additionalProperties": False,
    },
    "Step": STEP,
    "JsonValue": JSON_VALUE,
    "OpenApi": {"type": "object", "required": ["openapi", "info", "paths"]},
    "JsonObject": JSON_OBJECT,
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
            "flow": {"type": "boolean", "description": "A flow run: its steps are units of work."},
            "parent": {**STR_OR_NULL, "description": "A step's flow run."},
            "step": {**STR_OR_NULL, "description": "A step's name."},
            "payload_id": {**STR_OR_NULL, "description": "Its payload (SPEC section 12)."},
        },
    },
    "UowDetail": {
        "allOf": [
            ref("Uow"),
            {
                "type": "object",
                "properties": {
                    "history": {"type": "array", "items": ref("Event")},
                    "steps": {
                        "type": "array",
                        "items": ref("FlowStep"),
                        "description": "A flow run's steps in DAG order (only for a flow run).",
                    },
                },
            },
        ]
    },
    "FlowStep": {
        "type": "object",
        "properties": {
            "name": STR,
            "upstream": {"type": "array", "items": STR},
            "run_if": STR_OR_NULL,
            "uow_id": {**STR_OR_NULL, "description": "null: not created yet (not expanded)."},
            "state": {"type": ["string", "null"], "enum": [*(s.value for s in UowState), None]},
            "attempt": _INT_OR_NULL,
            "started_at": _INSTANT,
            "finished_at": _INSTANT,
            "exit_code": _INT_OR_NULL,
            "error": STR_OR_NULL,
        },
    },
    "RetryFailed": {
        "type": "object",
        "required": ["uow", "rerun", "job"],
        "properties": {
            "uow": ref("Uow"),
            "rerun": {
                "type": "array",
                "items": STR,
                "description": "The steps put back to run (canceled and upstream_failed).",
            },
            "job": {"oneOf": [ref("Job"), {"type": "null"}]},
        },
    },
    "Trigger": {
        "type": "object",
        "required": ["process", "uow", "published"],
        "properties": {
            "process": STR,
            "uow": {"oneOf": [ref("Uow"), {"type": "null"}]},
            "published": {
                "type": "boolean",
                "description": "false: the unit of work is stored but the broker did not take "
                "it yet; it is published as soon as the broker is back (do not trigger again).",
            },
        },
    },
    "WhyReason": {
        "type": "object",
        "required": ["code", "message", "facts"],
        "properties": {
            "code": {"type": "string", "enum": list(WHY_CODES)},
            "message": STR,
            "facts": _OBJ,
        },
    },
    "Why": {
        "type": "object",
        "required": ["process", "kind", "timeperiod", "state", "checked_at", "reasons"],
        "properties": {
            "process": STR,
            "kind": STR,
            "timeperiod": STR_OR_NULL,
            "state": STR_OR_NULL,
            "checked_at": _INSTANT,
            "reasons": {"type": "array", "minItems": 1, "items": ref("WhyReason")},
        },
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
            "command": {"type": "string", "pattern": "\\S", "maxLength": 10000},
            "scheduled_at": {"type": ["string", "null"], "format": "date-time"},
            "arguments": {
                "oneOf": [
                    {"allOf": [ref("JsonObject"), {"not": {"required": ["command"]}}]},
                    {"type": "null"},
                ]
            },
            "retries": {"type": "integer", "minimum": 0, "maximum": 100},
            "payload_id": _nullable(PAYLOAD_ID),
            "payload": {
                **JSON_VALUE_REF,
                "description": "An inline payload (any JSON value; null: none), stored as a "
                "payload. Not with payload_id.",
            },
        },
        **NOT_BOTH_PAYLOADS,
        "additionalProperties": False,
    },
    "TriggerBody": {
        "type": "object",
        "description": "Optional: the payload of the unit of work (a freerun process only).",
        "properties": {
            "payload_id": _nullable(PAYLOAD_ID),
            "payload": {
                **JSON_VALUE_REF,
                "description": "An inline payload (any JSON value; null: none), stored as a "
                "payload. Not with payload_id.",
            },
        },
        **NOT_BOTH_PAYLOADS,
        "additionalProperties": False,
    },
    "Payload": {
        "type": "object",
        "required": ["payload_id", "sha256", "size", "content_type", "created_at", "created"],
        "properties": {
            "payload_id": STR,
            "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "size": _INT,
            "content_type": STR,
            "created_at": _INSTANT,
            "created": {
                "type": "boolean",
                "description": "false: the same bytes were posted before; that payload is "
                "returned.",
            },
        },
    },
    "Message": {
        "type": "object",
        "required": ["seq", "attempt", "at", "text"],
        "properties": {"seq": _INT, "attempt": _INT, "at": _INSTANT, "text": STR},
    },
    "MessagePage": {
        "type": "object",
        "required": ["uow_id", "state", "finished", "items", "dropped", "more", "next_after"],
        "properties": {
            "uow_id": STR,
            "state": {"type": "string", "enum": [s.value for s in UowState]},
            "finished": {
                "type": "boolean",
                "description": "The unit of work ended: no more messages will come.",
            },
            "items": {"type": "array", "items": ref("Message")},
            "dropped": {
                "type": "integer",
                "description": "Messages emitted past max_messages_per_uow (not stored).",
            },
            "more": {"type": "boolean", "description": "More messages follow this page."},
            "next_after": {
                "type": "integer",
                "description": "Pass back as `after` to get the messages that follow.",
            },
        },
    },
    "TaskSubmitted": {
        "allOf": [
            ref("Task"),
            {
                "type": "object",
                "required": ["published"],
                "properties": {"published": {"type": "boolean"}},
            },
        ]
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
            "payload_id": STR_OR_NULL,
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
            "kind": {
                "type": "string",
                "enum": ["local", "http"],
                "description": "http: an executor (SPEC section 11); process lists what it runs.",
            },
            "name": {**STR_OR_NULL, "description": "An executor's name (null: a local worker)."},
            "slots": _INT,
            "running": {**_INT_OR_NULL, "description": "Units of work it runs now."},
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
