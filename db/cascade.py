"""Reprocess and skip with their cascades (SPEC section 3), shared by the API, the command line
and the scheduler.

- Reprocess (P, t): the job restarts (back to embryo, its unit of work canceled, its run number
  incremented so a fresh unit of work is created); the cascade goes up to the jobs that cover it
  in its tree and across to the jobs that depend on it.
- Skip (P, t): the job is given up (its unit of work canceled); the cascade goes down to the jobs
  it covers and across to its dependents.

The job named by the caller must allow the transition (else TransitionRefused: 409); jobs reached
by the cascade that are already where the cascade would put them, or terminal (noop), are left
alone. Every change goes through the funnel, so each one is compare-and-set and in history.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from db.errors import NotFound, StateConflict
from db.relations import Registry, related_jobs, timeperiod_of
from db.state_change import change_job, change_uow
from db.states import ACTIVE_UOW_STATES, FINISHED_JOB_STATES, JobState

if TYPE_CHECKING:
    from db.clock import Clock
    from db.models import Job
    from db.store import Store

log = logging.getLogger(f"tactus.{__name__}")

#: How often an action re-reads a job that changed under it before giving up.
CONFLICT_RETRIES = 3


def cancel_active_uow(store: Store, job: Job, *, clock: Clock, actor: str, reason: str) -> None:
    """Cancel the job's unit of work if it is still active (a running worker's finish then fails
    its compare-and-set and is ignored)."""
    if not job.uow_id:
        return
    for _ in range(CONFLICT_RETRIES):
        try:
            uow = store.get_uow(job.uow_id)
        except NotFound:
            return
        if uow.state not in ACTIVE_UOW_STATES:
            return
        try:
            change_uow(store, uow, "cancel", clock=clock, actor=actor, reason=reason)
            return
        except StateConflict:
            continue


def _change_with_retry(
    store: Store,
    registry: Registry,
    job: Job,
    trigger: str,
    *,
    clock: Clock,
    actor: str,
    reason: str,
    changes: Callable[[Job], dict] | None = None,
) -> Job:
    state_machine = registry.entries[job.process].state_machine
    for attempt in range(CONFLICT_RETRIES):
        # On every attempt: a job re-read after a conflict may have started another run since
        # (the scheduler links a new unit of work with each start), and that run goes too.
        cancel_active_uow(store, job, clock=clock, actor=actor, reason=reason)
        try:
            return change_job(
                store,
                job,
                trigger,
                state_machine=state_machine,
                clock=clock,
                actor=actor,
                reason=reason,
                changes=changes(job) if changes else None,
                # on the version too: a run started since would be unlinked without its cancel
                check_version=True,
            )
        except StateConflict:
            if attempt == CONFLICT_RETRIES - 1:
                raise
            job = store.get_job(job.process, job.timeperiod)
    raise AssertionError("unreachable")


def _walk(
    store: Store,
    registry: Registry,
    process: str,
    timeperiod: str,
    *,
    trigger: str,
    upward: bool,
    leave: frozenset[JobState],
    clock: Clock,
    actor: str,
    reason: str,
    changes: Callable[[Job], dict] | None = None,
) -> list[Job]:
    """Apply ``trigger`` to (P, t) and spread it: to the tree parent (``upward``) or the tree
    children, and across to dependents. Cascade members in ``leave`` states stay as they are;
    the named job always gets the trigger (and its refusal, if any)."""
    changed: list[Job] = []
    seen: set[tuple[str, str]] = set()
    pending = [(store.get_job(process, timeperiod), True)]
    while pending:
        job, root = pending.pop(0)
        if (job.process, job.timeperiod) in seen:
            continue
        seen.add((job.process, job.timeperiod))
        if root or job.state not in leave:
            changed.append(
                _change_with_retry(
                    store,
                    registry,
                    job,
                    trigger,
                    clock=clock,
                    actor=actor,
                    reason=reason if root else f"{reason} (cascade from {process} {timeperiod})",
                    changes=changes,
                )
            )
        period = timeperiod_of(job)
        tree = registry.parent(job.process) if upward else registry.child(job.process)
        related = [tree] if tree else []
        related += registry.dependents(job.process)
        for other in related:
            pending.extend((target, False) for target in related_jobs(store, period, other)[0])
    log.info("%s %s %s: %d jobs changed", trigger, process, timeperiod, len(changed))
    return changed


def reprocess(
    store: Store,
    registry: Registry,
    process: str,
    timeperiod: str,
    *,
    clock: Clock,
    actor: str,
    reason: str = "reprocess requested",
) -> list[Job]:
    """Restart (P, t) and cascade up the tree and across to dependents.

    Returns:
        The jobs that changed, in the order they changed.

    Raises:
        NotFound: no such job.
        TransitionRefused: the named job cannot be reprocessed (embryo or noop).
    """
    return _walk(
        store,
        registry,
        process,
        timeperiod,
        trigger="reprocess",
        upward=True,
        leave=frozenset({JobState.EMBRYO, JobState.NOOP}),
        clock=clock,
        actor=actor,
        reason=reason,
        changes=lambda j: {"run": j.run + 1, "uow_id": None},
    )


def skip(
    store: Store,
    registry: Registry,
    process: str,
    timeperiod: str,
    *,
    clock: Clock,
    actor: str,
    reason: str = "skip requested",
) -> list[Job]:
    """Give (P, t) up and cascade down to the jobs it covers and across to its dependents.

    Returns:
        The jobs that changed.

    Raises:
        NotFound: no such job.
        TransitionRefused: the named job is already finished.
    """
    return _walk(
        store,
        registry,
        process,
        timeperiod,
        trigger="skip",
        upward=False,
        leave=FINISHED_JOB_STATES,
        clock=clock,
        actor=actor,
        reason=reason,
    )
