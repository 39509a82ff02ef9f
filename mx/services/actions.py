"""The actions of the page, the API and the command line: one implementation each.

Every verb takes a :class:`~mx.services.context.ServiceContext`, changes state only through the
funnel (compare-and-set, history), and notifies the scheduler after the change is stored.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from db import cascade, flows, payloads
from db.errors import Conflict, InvalidInput, NotFound, TransitionRefused
from db.ids import new_id
from db.models import Event, UowQuery
from db.state_change import change_job, change_uow
from db.states import (
    ACTIVE_UOW_STATES,
    JobState,
    ProcessKind,
    StateMachineName,
    UowKind,
    UowState,
)
from db.timeperiod import instant_stamp
from db.uow_factory import create_once
from mx.services import validate
from mx.services.serialize import job_json, process_json, uow_json

if TYPE_CHECKING:
    from db.models import Job, ProcessEntry, UnitOfWork
    from mx.services.context import ServiceContext

log = logging.getLogger(f"tactus.{__name__}")


def _stamp(ctx: ServiceContext) -> str:
    return instant_stamp(ctx.clock.now())


def trigger(
    ctx: ServiceContext, name: str, *, payload_id: Any = None, payload: Any = None
) -> dict[str, Any]:
    """Fire a process now. A freerun gets a unit of work at once (its ``max_active`` holds),
    given the payload ``payload_id`` names, the inline ``payload`` (stored here), or else its
    entry's; a managed process is looked at by the scheduler at once.

    Returns:
        ``{"process", "uow", "published"}``: the new unit of work (None for a managed process),
        and whether its message (a managed process: the scheduler's wake) went to the broker
        now. When it did not, the unit of work is stored all the same and published later
        (:meth:`~mx.services.context.ServiceContext.announce`): the trigger is done, and
        triggering again would run the process twice.

    Raises:
        InvalidInput: a malformed name; a payload for a process that is not freerun, or no
            payload with ``payload_id``.
        NotFound: no such process.
        Conflict: a daemon (nothing to trigger), a disabled process (nothing would run it), or
            a freerun that already has ``max_active`` units of work in flight.
    """
    record = ctx.store.get_process(validate.process_name(name, "name"))
    entry = record.entry
    if entry.kind is ProcessKind.DAEMON:
        # A well-formed name of a process whose kind has nothing to fire: the process's state
        # refuses it, not the input (409, as for a disabled one).
        raise Conflict("process", name, "is a daemon: there is nothing to trigger")
    if not entry.enabled:
        # Its workers are not run and the scheduler does not look at it: the work would wait.
        raise Conflict("process", name, "is disabled: enable it first, then trigger it")
    if entry.kind is ProcessKind.MANAGED:
        if payload_id is not None or payload is not None:
            raise InvalidInput("payload", "only a freerun process is triggered with a payload")
        return {"process": name, "uow": None, "published": ctx.wake(name)}
    in_flight = ctx.store.find_uows(
        UowQuery(process=name, states=ACTIVE_UOW_STATES, top_level=True), limit=entry.max_active
    ).items
    if len(in_flight) >= entry.max_active:
        raise Conflict("process", name, f"max_active {entry.max_active} units of work in flight")
    given = payloads.resolve(ctx.store, payload_id, payload, ctx.clock.now())
    stamp = _stamp(ctx)
    uow, _ = create_once(
        ctx.store,
        entry,
        clock=ctx.clock,
        actor=ctx.actor,
        reason="triggered by hand",
        kind=UowKind.FREERUN,
        start=stamp,
        end=stamp,
        run_key=f"manual-{new_id()}",
        scheduled_at=ctx.clock.now(),
        payload_id=given,
    )
    published = ctx.announce(uow)
    return {"process": name, "uow": uow_json(uow), "published": published}


def set_enabled(ctx: ServiceContext, name: str, enabled: bool) -> dict[str, Any]:
    """Turn a process on or off (a run-time edit that survives re-registering).

    Raises:
        InvalidInput: a malformed name.
        NotFound: no such process.
        Conflict: it changed concurrently (try again).
    """
    record = ctx.store.get_process(validate.process_name(name, "name"))
    if record.entry.enabled == enabled:
        return process_json(record)
    now = ctx.clock.now()
    updated = ctx.store.update_process(
        replace(record, entry=replace(record.entry, enabled=enabled), updated_at=now),
        expected_version=record.version,
        event=Event(
            entity="process",
            entity_id=name,
            at=now,
            trigger="enable" if enabled else "disable",
            from_state=None,
            to_state=None,
            actor=ctx.actor,
            reason="enabled by hand" if enabled else "disabled by hand",
        ),
    )
    ctx.wake(name)
    return process_json(updated)


def reprocess(ctx: ServiceContext, process: str, timeperiod: str) -> list[dict[str, Any]]:
    """Reprocess (P, t) with its cascade; returns the jobs that changed.

    Raises:
        InvalidInput: a malformed process name or timeperiod.
        NotFound: no such managed process (it may have been removed while its jobs remain),
            or no such job.
        TransitionRefused: the job cannot be reprocessed from its state.
    """
    _managed(ctx, process, timeperiod)
    changed = cascade.reprocess(
        ctx.store, ctx.registry(), process, timeperiod, clock=ctx.clock, actor=ctx.actor
    )
    ctx.wake(*(j.process for j in changed))
    return [job_json(j) for j in changed]


def skip(ctx: ServiceContext, process: str, timeperiod: str) -> list[dict[str, Any]]:
    """Skip (P, t) with its cascade; returns the jobs that changed.

    Raises:
        InvalidInput: a malformed process name or timeperiod.
        NotFound: no such managed process (it may have been removed while its jobs remain),
            or no such job.
        TransitionRefused: the job is already finished.
    """
    _managed(ctx, process, timeperiod)
    changed = cascade.skip(
        ctx.store, ctx.registry(), process, timeperiod, clock=ctx.clock, actor=ctx.actor
    )
    ctx.wake(*(j.process for j in changed))
    return [job_json(j) for j in changed]


def cancel(ctx: ServiceContext, uow_id: str) -> dict[str, Any]:
    """Cancel a unit of work for good (its job then becomes skipped).

    Raises:
        InvalidInput: an empty id, or one with a NUL or a lone surrogate.
        NotFound: no such unit of work.
        TransitionRefused: it is already finished.
    """
    uow = ctx.store.get_uow(validate.identifier(uow_id, "uow_id"))
    if uow.flow and uow.state is UowState.IN_PROGRESS:
        # the flow run with every step of it that has not ended (running ones are killed)
        canceled = flows.cancel(
            ctx.store, uow, clock=ctx.clock, actor=ctx.actor, reason="canceled by hand"
        )
    else:
        canceled = change_uow(
            ctx.store,
            uow,
            "cancel",
            clock=ctx.clock,
            actor=ctx.actor,
            reason="canceled by hand",
            announce=ctx.announce_all,
        )
    ctx.wake(canceled.process)
    return uow_json(canceled)


def retry_failed(ctx: ServiceContext, uow_id: str) -> dict[str, Any]:
    """Put a canceled flow run back in progress and re-run only its canceled and
    upstream_failed steps, with fresh attempts (SPEC section 10); its skipped job, if it has
    one, goes back in progress with it.

    Returns:
        ``{"uow": the flow run, "rerun": [step names], "job": the job or None}``.

    Raises:
        InvalidInput: an empty id, or one with a NUL or a lone surrogate.
        NotFound: no such unit of work.
        TransitionRefused: not a flow run, or not canceled.
    """
    uow = ctx.store.get_uow(validate.identifier(uow_id, "uow_id"))
    if not uow.flow:
        raise TransitionRefused(
            "uow", uow.id, uow.state.value, "retry_failed", "it is not a flow run"
        )
    try:
        entry: ProcessEntry | None = ctx.entry(uow.process)
    except NotFound:
        entry = None
    rerun: list[str] = []
    flow_run = uow
    if uow.state is UowState.CANCELED or not _job_left_skipped(ctx, uow):
        flow_run, rerun = flows.retry_failed(
            ctx.store, uow, entry, clock=ctx.clock, actor=ctx.actor, announce=ctx.announce_all
        )
    # the flow run first: a scheduler that saw the job in progress with its unit of work
    # still canceled would skip it again
    job = _job_back(ctx, flow_run, entry)
    ctx.wake(flow_run.process)
    return {
        "uow": uow_json(flow_run),
        "rerun": rerun,
        "job": None if job is None else job_json(job),
    }


def _job_left_skipped(ctx: ServiceContext, uow: UnitOfWork) -> bool:
    """Whether a retry-failed stopped between its two writes: the flow run back in progress
    (or done) while its job is still skipped."""
    job = _job_of(ctx, uow)
    return job is not None and job.state is JobState.SKIPPED


def _job_of(ctx: ServiceContext, uow: UnitOfWork) -> Job | None:
    if uow.kind is not UowKind.MANAGED or uow.timeperiod is None:
        return None
    try:
        job = ctx.store.get_job(uow.process, uow.timeperiod)
    except NotFound:
        return None
    return job if job.uow_id == uow.id else None


def _job_back(ctx: ServiceContext, uow: UnitOfWork, entry: ProcessEntry | None) -> Job | None:
    """The job of a retried flow run, back in progress if it was skipped."""
    job = _job_of(ctx, uow)
    if job is None or job.state is not JobState.SKIPPED:
        return job
    machine = entry.state_machine if entry is not None else StateMachineName.DISCRETE
    return change_job(
        ctx.store,
        job,
        "retry_failed",
        state_machine=machine,
        clock=ctx.clock,
        actor=ctx.actor,
        reason=f"retry-failed of flow run {uow.id}",
    )


def _managed(ctx: ServiceContext, process: str, timeperiod: str) -> None:
    """Refuse a cascade on a job whose process is not (or no longer) registered as managed:
    its tree and dependencies, which the cascade walks, are unknown.

    Raises:
        InvalidInput: a malformed process name or timeperiod.
        NotFound: no such managed process.
    """
    validate.process_name(process)
    validate.timeperiod(timeperiod)
    try:
        record = ctx.store.get_process(process)
    except NotFound:
        raise NotFound("managed process", process) from None
    if record.entry.kind is not ProcessKind.MANAGED:
        raise NotFound("managed process", process)
