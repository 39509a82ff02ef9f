"""Ad-hoc tasks: one-off shell commands, run once at a given time by the built-in process."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from db import payloads
from db.builtin import ADHOC, ensure_builtin_processes
from db.clock import require_aware
from db.errors import InvalidInput
from db.ids import new_id
from db.states import FAILED_UOW_STATES, SUCCESSFUL_UOW_STATES, UowKind
from db.timeperiod import instant_stamp
from db.uow_factory import create_once
from mx.services import validate
from mx.services.serialize import instant

if TYPE_CHECKING:
    from db.models import UnitOfWork
    from mx.services.context import ServiceContext

#: Longest command accepted (a task is a command line, not a script upload).
MAX_COMMAND = 10_000


def submit(
    ctx: ServiceContext,
    command: Any,
    *,
    scheduled_at: Any = None,
    arguments: Any = None,
    retries: Any = 0,
    payload_id: Any = None,
    payload: Any = None,
) -> dict[str, Any]:
    """Create a one-off task: ``command`` runs through ``/bin/sh -c`` at ``scheduled_at``
    (now when None), retried ``retries`` times on failure, given the payload ``payload_id``
    names or the inline ``payload`` (a JSON value, stored as a payload here).

    Returns:
        The task in the API's shape (``task_id`` ...) with ``published``: whether it went to
        the broker now. When it did not, it is stored all the same and published later
        (:meth:`~mx.services.context.ServiceContext.announce`): submitting again would run the
        command twice.

    Raises:
        InvalidInput: a bad command, instant, retries, arguments or payload (the field is
            named), or no payload with ``payload_id``.
    """
    if not isinstance(command, str) or not command.strip():
        raise InvalidInput("command", "must be a non-empty string")
    validate.text("command", command)
    if len(command) > MAX_COMMAND:
        raise InvalidInput("command", f"is longer than {MAX_COMMAND} characters")
    if scheduled_at is None:
        when = ctx.clock.now()
    elif isinstance(scheduled_at, datetime):
        when = require_aware(scheduled_at, "scheduled_at")
    else:
        when = _parse_instant(scheduled_at)
    retries = validate.whole(retries)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 100:
        raise InvalidInput("retries", "must be an integer from 0 to 100")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict) or "command" in arguments:
        raise InvalidInput("arguments", "must be a JSON object (without a 'command' key)")
    validate.json_value(arguments, "arguments")
    payload_id = payloads.resolve(ctx.store, payload_id, payload, ctx.clock.now())
    ensure_builtin_processes(ctx.store, ctx.clock)
    stamp = instant_stamp(when)
    uow, _ = create_once(
        ctx.store,
        ctx.entry(ADHOC),
        clock=ctx.clock,
        actor=ctx.actor,
        reason="ad-hoc task submitted",
        kind=UowKind.ADHOC,
        start=stamp,
        end=stamp,
        run_key=new_id(),
        scheduled_at=when,
        arguments={**arguments, "command": command},
        retries=retries,
        payload_id=payload_id,
    )
    published = ctx.announce(uow)
    return {**task_json(uow), "published": published}


def _parse_instant(text: Any) -> datetime:
    if not isinstance(text, str):
        raise InvalidInput("scheduled_at", "must be an ISO 8601 instant")
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput("scheduled_at", f"not an ISO 8601 instant: {text!r}") from exc
    if value.tzinfo is None:
        raise InvalidInput("scheduled_at", "needs an offset or Z (e.g. 2026-12-24T18:00:00Z)")
    try:
        # An instant that exists with its offset but not in UTC (year 1 or 9999 at the edge).
        value.astimezone(UTC)
        return require_aware(value, "scheduled_at")
    except OverflowError as exc:
        raise InvalidInput("scheduled_at", f"{text!r} is out of the representable range") from exc


def task_json(uow: UnitOfWork) -> dict[str, Any]:
    """The task shape of SPEC section 6 (null timestamps included)."""
    succeeded = uow.state in SUCCESSFUL_UOW_STATES
    failed = uow.state in FAILED_UOW_STATES
    return {
        "task_id": uow.id,
        "command": uow.arguments.get("command"),
        "state": uow.state.value,
        "attempt": uow.attempt,
        "retries": uow.retries,
        "scheduled_at": instant(uow.scheduled_at),
        "picked_at": instant(uow.started_at),
        "started_at": instant(uow.started_at),
        "completed_at": instant(uow.finished_at) if succeeded else None,
        # A task canceled before it ran has no finish: it failed when it was canceled.
        "failed_at": instant(uow.finished_at or uow.updated_at) if failed else None,
        "exit_code": uow.exit_code,
        "output": uow.output,
        "error": uow.error,
        "payload_id": uow.payload_id,
    }


def status_of(ctx: ServiceContext, task_id: str) -> dict[str, Any]:
    """A task's state and timestamps (any unit of work id works too).

    Raises:
        InvalidInput: an empty id, or one with a NUL or a lone surrogate.
        NotFound: no such task.
    """
    return task_json(ctx.store.get_uow(validate.identifier(task_id, "task_id")))
