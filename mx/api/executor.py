"""``/api/v1/executor/...``: the routes of executors (SPEC section 11), for tokens of role
``executor`` (or admin); every other role is refused (403), and an executor token is refused
everywhere else (:class:`~db.credentials.Role`).

- ``POST claim``: a long poll of up to ``wait`` seconds (at most 30): 200 with a claimed unit of
  work, or 204 when none came. While it waits it looks again every :data:`POLL_INTERVAL` and
  beats the executor's record every ``heartbeat_interval``, so a waiting executor stays alive.
- ``POST uows/<id>/heartbeat {lease}``: 200, or 409 ``lease_lost``.
- ``POST uows/<id>/outcome {lease, state, exit_code, output_tail, error?, result?, next?}``:
  200 with ``changed`` (false for a repeat under the same lease), or 409 ``lease_lost``. With
  ``next`` (the body of a claim, without ``wait``), the executor's next claim is made in the
  outcome's commit and comes back as ``next`` (null when nothing is due): one request and one
  commit per unit of work while work flows.
- ``POST outcomes {outcomes: [{uow_id, lease, state, ...}], next?}``: several outcomes of one
  executor recorded in one commit, with up to ``next.count`` next claims in it too; each
  outcome answered as above or refused alone (``error``), a bad body refused whole (400).
- ``POST leave``: the executor stopped after its drain; its record says ``stopped``.

Claims, heartbeats and outcomes stay out of the audit trail unless refused: each unit of
work's history records them, its actor naming the executor and its token.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from flask import current_app, jsonify

from db.credentials import Role
from db.errors import InvalidInput
from mx.api.common import audit_target, bp, ctx, json_body, query
from mx.auth import quiet_audit, requires
from mx.runtime import runtime
from mx.services import executors, leases

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import timedelta

    from flask.typing import ResponseReturnValue

    from db.errors import TactusError
    from db.models import UnitOfWork
    from db.state_change import UowChange
    from mx.services.context import ServiceContext

#: Seconds between two looks of a waiting claim.
POLL_INTERVAL = 0.2
#: Key of what the executor routes of one application share (:class:`_Shared`).
SHARED = "tactus.executors"
#: Request threads that do the store work of claims and outcomes at once, at the most: one
#: writes a commit while the others read and prepare theirs (and join it). More only take
#: turns for the interpreter's lock, and the thread that writes waits for it too.
ACTIVE = 3


def _acting(worker_id: str) -> ServiceContext:
    """The request's context, its actor naming the executor and the token it uses."""
    context = ctx()
    return context.acting_as(f"executor {worker_id} ({context.actor})")


@bp.post("/executor/claim")
@requires(Role.EXECUTOR)
def executor_claim() -> ResponseReturnValue:
    """The oldest due unit of work the executor may run, claimed for it; 204 when none came
    within ``wait`` seconds."""
    query()
    quiet_audit()
    body = json_body(required=False)
    executor = executors.executor_from(body)
    wait = executors.wait_of(body)
    audit_target(f"executor {executor.worker_id}")
    rt = runtime()
    context = _acting(executor.worker_id)
    interval = rt.settings.heartbeat_interval
    deadline = time.monotonic() + wait
    while True:
        if _shared().beats.due(executor.worker_id, interval):
            executors.check_in(rt.store, executor, rt.clock.now())
        with _shared().active:
            claimed = executors.claim_next(
                context,
                executor,
                heartbeat_interval=interval,
                memory=_shared().memory,
                commit=_shared().group.write,
            )
        if claimed is not None:
            return jsonify(claimed)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "", 204
        time.sleep(min(POLL_INTERVAL, remaining))


@bp.post("/executor/uows/<uow_id>/heartbeat")
@requires(Role.EXECUTOR)
def executor_heartbeat(uow_id: str) -> ResponseReturnValue:
    """Renew the lease on a running unit of work."""
    query()
    quiet_audit()
    audit_target(f"uow {uow_id}")
    body = json_body()
    lease = leases.Lease.parse(body.get("lease"))
    rt = runtime()
    beat = leases.heartbeat(
        _acting(lease.worker_id),
        uow_id,
        body,
        timeout_of=_timeout,
        max_messages=rt.settings.max_messages_per_uow,
    )
    _shared().memory.claimed.take(uow_id)  # its version changed: an outcome reads it again
    if _shared().beats.due(lease.worker_id, rt.settings.heartbeat_interval):
        executors.beat(rt.store, lease.worker_id, rt.clock.now(), uow_id)
    return jsonify(beat)


class _Shared:
    """What the executor routes of one application share between its request threads."""

    def __init__(self) -> None:
        #: When each executor's record was last beaten.
        self.beats = executors.RecentBeats()
        #: The commits of claims and outcomes: those asked for at once are written together
        #: (one commit for several executors' requests), one commit at a time.
        self.group = executors.GroupCommit()
        #: What :data:`ACTIVE` allows.
        self.active = threading.BoundedSemaphore(ACTIVE)
        #: The processes' entries and the candidates as claims and heartbeats read them lately.
        self.memory = executors.Memory()


def _shared() -> _Shared:
    return current_app.extensions.setdefault(SHARED, _Shared())


def _timeout(uow: UnitOfWork) -> timedelta | None:
    """The ``timeout`` that runs ``uow`` (its step's, its process's); None: unknown."""
    entry = _shared().memory.entries.get(runtime().store, uow.process)
    return None if entry is None else executors.run_entry(entry, uow).timeout


@bp.post("/executor/uows/<uow_id>/outcome")
@requires(Role.EXECUTOR)
def executor_outcome(uow_id: str) -> ResponseReturnValue:
    """Record how a run under a lease ended (a repeat under the same lease changes nothing)."""
    query()
    quiet_audit()
    audit_target(f"uow {uow_id}")
    body = json_body()
    outcome = leases.outcome_from(body)
    context = _acting(outcome.lease.worker_id)
    if body.get("next") is None:
        with _shared().group.lock:
            uow, changed = leases.record_outcome(
                context, uow_id, outcome, max_messages=runtime().settings.max_messages_per_uow
            )
        return jsonify(uow_id=uow.id, state=uow.state.value, changed=changed)
    # the executor's next claim, written in the outcome's commit (no waiting: none due, null)
    executor = executors.executor_from(_next(body["next"]))
    rt = runtime()
    # on the embedded store queue, the status message goes in the same commit too
    in_commit = rt.broker.backend == "store"
    claimed: list[dict | None] = [None]

    def write(change: UowChange) -> tuple[UnitOfWork | TactusError, bool]:
        notices = [leases.status_notice(context, change.uow)] if in_commit else []
        claimed[0], (result,) = executors.claim_with(
            context,
            executor,
            [change],
            heartbeat_interval=rt.settings.heartbeat_interval,
            notices=notices,
            memory=_shared().memory,
            commit=_shared().group.write,
        )
        return result, in_commit

    uow, changed = _recorded(leases.record_outcome, context, (uow_id, outcome), write)
    return jsonify(uow_id=uow.id, state=uow.state.value, changed=changed, next=claimed[0])


@bp.post("/executor/outcomes")
@requires(Role.EXECUTOR)
def executor_outcomes() -> ResponseReturnValue:
    """Record the outcomes of several runs under their leases in one commit, with the
    executor's next claims (up to ``next.count``) in it too."""
    query()
    quiet_audit()
    body = json_body()
    items = leases.outcomes_from(body)
    audit_target(f"uows {', '.join(uow_id for uow_id, _ in items)}"[:500])
    executor, count = None, 0
    if body.get("next") is not None:
        wanted = _next(body["next"])
        executor = executors.executor_from({k: v for k, v in wanted.items() if k != "count"})
        count = executors.count_of(wanted, executor)
    context = _acting(items[0][1].lease.worker_id)
    rt = runtime()
    # on the embedded store queue, the status messages go in the same commit too
    in_commit = rt.broker.backend == "store"
    claimed: list[dict[str, Any]] = []

    def write(changes: list[UowChange]) -> tuple[list[UnitOfWork | TactusError], bool]:
        notices = [leases.status_notice(context, c.uow) for c in changes] if in_commit else []
        claims, results = executors.claim_many(
            context,
            executor,
            changes,
            count=count,
            heartbeat_interval=rt.settings.heartbeat_interval,
            notices=notices,
            memory=_shared().memory,
            commit=_shared().group.write,
        )
        claimed.extend(claims)
        return results, in_commit

    results = _recorded(leases.record_outcomes, context, (items,), write)
    answers = []
    for (uow_id, _), result in zip(items, results, strict=True):
        if isinstance(result, tuple):
            uow, changed = result
            answers.append({"uow_id": uow.id, "state": uow.state.value, "changed": changed})
        else:
            error = {"code": result.code, "message": result.message, "status": result.http_status}
            answers.append({"uow_id": uow_id, "error": error})
    return jsonify(outcomes=answers, next=claimed)


def _recorded(record: Callable[..., Any], context: ServiceContext, what: tuple, write: Any) -> Any:
    """``record(context, *what)`` (:func:`leases.record_outcome` or ``record_outcomes``), the
    next claims written by ``write``, as one of the :data:`ACTIVE` threads; the units of work
    as mx's claims wrote them are read from memory."""
    with _shared().active:
        return record(
            context,
            *what,
            write=write,
            max_messages=runtime().settings.max_messages_per_uow,
            recall=_shared().memory.claimed.take,
        )


def _next(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput("next", "must be the executor's claim body (name, box, instance ...)")
    if "wait" in value:
        raise InvalidInput("next.wait", "the next claim does not wait")
    return value


@bp.post("/executor/leave")
@requires(Role.EXECUTOR)
def executor_leave() -> ResponseReturnValue:
    """The executor stopped: its record says ``stopped`` (not lost)."""
    query()
    executor = executors.executor_from(json_body())
    audit_target(f"executor {executor.worker_id}")
    return jsonify(stopped=executors.leave(runtime().store, executor))
