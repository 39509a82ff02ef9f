"""The OpenAPI part of the executor routes (:mod:`mx.api.executor`): their paths and schemas,
merged into the document by :mod:`mx.api.openapi`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mx.api.openapi_schemas import PROCESS_NAME, STR, STR_OR_NULL, ref
from mx.services.executors import MAX_SLOTS, MAX_WAIT
from mx.services.leases import MAX_BATCH, MAX_LEASE, MAX_MESSAGES, MAX_SECONDS

_NAME = {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}
_LEASE = {
    "type": "string",
    "pattern": "^[0-9]+\\.[0-9]+\\..+$",
    "maxLength": MAX_LEASE,
    "description": "The lease of the claim (opaque: send it back as it came).",
}
_INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31}
_MESSAGES = {
    "type": ["array", "null"],
    "maxItems": MAX_MESSAGES,
    "items": STR,
    "description": "Messages the run emitted since the last heartbeat (SPEC section 12), stored "
    "in order with the attempt, stamped when they arrive.",
}

#: What every outcome reports (``POST uows/<id>/outcome`` adds ``next``, ``POST outcomes``
#: ``uow_id``).
_OUTCOME = {
    "lease": _LEASE,
    "state": {"type": "string", "enum": ["processed", "noop", "invalid"]},
    "exit_code": {**_INT32, "type": ["integer", "null"]},
    "output_tail": STR_OR_NULL,
    "error": STR_OR_NULL,
    "result": {
        "anyOf": [ref("JsonObject"), {"type": "null"}],
        "description": "A step's result for its dependents (kept for processed only).",
    },
    "messages": _MESSAGES,
    "seconds": {"type": ["number", "null"], "minimum": 0, "maximum": MAX_SECONDS},
}

EXECUTOR = {
    "name": _NAME,
    "box": {"type": "string", "minLength": 1, "maxLength": 100},
    "instance": {**_NAME, "description": "Tells two runs of one executor apart."},
    "slots": {"type": "integer", "minimum": 1, "maximum": MAX_SLOTS},
    "processes": {
        "type": "array",
        "maxItems": 1000,
        "items": PROCESS_NAME,
        "description": "The processes it runs; empty or absent: every process.",
    },
    "pid": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
    "running": {
        "type": "array",
        "maxItems": MAX_SLOTS,
        "items": {"type": "string", "minLength": 1},
        "description": "Units of work it runs now.",
    },
}

SCHEMAS: dict[str, Any] = {
    "ExecutorClaimRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "box", "instance"],
        "properties": {
            **EXECUTOR,
            "wait": {
                "type": "number",
                "minimum": 0,
                "maximum": MAX_WAIT,
                "description": "Seconds to wait for a unit of work (default 0).",
            },
        },
    },
    "ExecutorLeave": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "box", "instance"],
        "properties": EXECUTOR,
    },
    "ExecutorClaim": {
        "type": "object",
        "required": ["uow_id", "lease", "process", "attempt", "timeout", "arguments"],
        "properties": {
            "uow_id": STR,
            "lease": _LEASE,
            "process": STR,
            "step": STR_OR_NULL,
            "parent": STR_OR_NULL,
            "kind": STR,
            "command": {"type": ["array", "string", "null"], "items": STR},
            "shell": {"type": "boolean"},
            "worker": STR_OR_NULL,
            "noop_exit_code": {"type": ["integer", "null"]},
            "arguments": {"type": "object"},
            "timeout": {"type": "number"},
            "attempt": {"type": "integer"},
            "retries": {"type": "integer"},
            "timeperiod": STR_OR_NULL,
            "start_timeperiod": STR,
            "end_timeperiod": STR,
            "heartbeat_interval": {"type": "number"},
            "payload_id": STR_OR_NULL,
            "payload": {
                **STR_OR_NULL,
                "description": "The payload's bytes in base64 (SPEC section 12); null: none.",
            },
        },
    },
    "ExecutorLease": {
        "type": "object",
        "additionalProperties": False,
        "required": ["lease"],
        "properties": {"lease": _LEASE, "messages": _MESSAGES},
    },
    "ExecutorOutcome": {
        "type": "object",
        "additionalProperties": False,
        "required": ["lease", "state"],
        "properties": {
            **_OUTCOME,
            "next": {
                "anyOf": [ref("ExecutorLeave"), {"type": "null"}],
                "description": "The executor's next claim (without wait), made in the "
                "outcome's commit and answered as `next`.",
            },
        },
    },
    "ExecutorOutcomes": {
        "type": "object",
        "additionalProperties": False,
        "required": ["outcomes"],
        "properties": {
            "outcomes": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BATCH,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["uow_id", "lease", "state"],
                    "properties": {"uow_id": {"type": "string", "minLength": 1}, **_OUTCOME},
                },
                "description": "Outcomes under leases of this one executor, each unit of work "
                "once.",
            },
            "next": {
                "anyOf": [
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "box", "instance"],
                        "properties": {
                            **EXECUTOR,
                            "count": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_SLOTS,
                                "description": "Units of work to claim at most (1 to `slots`; "
                                "default 1).",
                            },
                        },
                    },
                    {"type": "null"},
                ],
                "description": "The executor's next claims (without wait), made in the "
                "outcomes' commit and answered as `next`.",
            },
        },
    },
    "ExecutorBatchRecorded": {
        "type": "object",
        "properties": {
            "outcomes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "uow_id": STR,
                        "state": STR,
                        "changed": {"type": "boolean"},
                        "error": {
                            "type": "object",
                            "properties": {
                                "code": STR,
                                "message": STR,
                                "status": {"type": "integer"},
                            },
                            "description": "Why this outcome alone was refused (`lease_lost`, "
                            "409; `not_found`, 404); the others stand.",
                        },
                    },
                },
                "description": "One per outcome sent, in its order.",
            },
            "next": {"type": "array", "items": ref("ExecutorClaim")},
        },
    },
    "ExecutorBeat": {
        "type": "object",
        "properties": {"uow_id": STR, "state": STR},
    },
    "ExecutorRecorded": {
        "type": "object",
        "properties": {
            "uow_id": STR,
            "state": STR,
            "changed": {"type": "boolean"},
            "next": {"anyOf": [ref("ExecutorClaim"), {"type": "null"}]},
        },
    },
    "ExecutorLeft": {"type": "object", "properties": {"stopped": {"type": "boolean"}}},
}

_ROLE = "Needs a token of role executor (or admin); every other role is refused (403)."


def paths(
    op: Callable[..., dict[str, Any]], path: Callable[..., list[dict[str, Any]]]
) -> dict[str, Any]:
    """The executor paths, made with the document's ``_op`` and ``_path``."""
    claim = op(
        "Claim the oldest due unit of work this executor may run (long poll)",
        "ExecutorClaim",
        tag="executors",
        body="ExecutorClaimRequest",
        description=f"{_ROLE} Waits up to `wait` seconds (at most {MAX_WAIT:g}); 204 when "
        "nothing came.",
    )
    claim["responses"]["204"] = {"description": "Nothing due within `wait`"}
    return {
        "/api/v1/executor/claim": {"post": claim},
        "/api/v1/executor/uows/{uow_id}/heartbeat": {
            "post": op(
                "Renew the lease on a running unit of work",
                "ExecutorBeat",
                tag="executors",
                params=path("uow_id"),
                body="ExecutorLease",
                errors=(404, 409),
                description=f"{_ROLE} 409 `lease_lost`: the lease no longer holds (stop the run).",
            )
        },
        "/api/v1/executor/uows/{uow_id}/outcome": {
            "post": op(
                "Record how a run under a lease ended",
                "ExecutorRecorded",
                tag="executors",
                params=path("uow_id"),
                body="ExecutorOutcome",
                errors=(404, 409),
                description=f"{_ROLE} A repeat under the same lease answers 200 with `changed` "
                "false; 409 `lease_lost` when the lease no longer holds.",
            )
        },
        "/api/v1/executor/outcomes": {
            "post": op(
                "Record how several runs under leases ended, in one commit",
                "ExecutorBatchRecorded",
                tag="executors",
                body="ExecutorOutcomes",
                description=f"{_ROLE} Each outcome is recorded as by `uows/{{uow_id}}/outcome` "
                "(a repeat: `changed` false) or refused alone in its answer (`error`); a bad "
                "body is refused whole (400, naming the field) and changes nothing. With "
                "`next`, up to `next.count` units of work are claimed in the same commit.",
            )
        },
        "/api/v1/executor/leave": {
            "post": op(
                "The executor stopped after its drain (its record says stopped)",
                "ExecutorLeft",
                tag="executors",
                body="ExecutorLeave",
                description=_ROLE,
            )
        },
    }
