"""Liveness: finding workers that stopped beating and failing the units of work they held.

A worker beats every ``heartbeat_interval`` (``workers/heartbeat.py``): its own record and
``heartbeat_at`` of each unit of work it runs. The scheduler calls :func:`reap_lost_workers`
periodically; after ``interval * misses`` without a beat a worker is ``lost`` and each of its
``in_progress`` units of work becomes ``invalid`` through the funnel, so the normal retry policy
applies (Synergy had no heartbeat: a killed worker left its unit of work in progress for an hour,
and a legitimately long one got re-posted and ran twice).

Safe to race: every change is a compare-and-set (the worker record's state, the unit of work's
state), so of two schedulers calling this at once each unit of work is failed by exactly one, and
a worker that finishes its unit of work at the same moment either wins (its outcome stands) or
loses (its late outcome is dropped by the same compare-and-set).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from db.errors import StateConflict, TransitionRefused
from db.models import UowQuery
from db.state_change import change_uow
from db.states import UowState, WorkerState

if TYPE_CHECKING:
    from collections.abc import Callable

    from db.clock import Clock
    from db.models import UnitOfWork, WorkerRecord
    from db.store import Store

log = logging.getLogger(f"tactus.{__name__}")

ALIVE, LOST, STOPPED = WorkerState.ALIVE, WorkerState.LOST, WorkerState.STOPPED


def silence_limit(interval: timedelta | float, misses: int) -> timedelta:
    """How long a worker may stay silent and still count as alive: ``interval * misses``.

    Raises:
        ValueError: ``misses`` below 1.
    """
    if not isinstance(interval, timedelta):
        interval = timedelta(seconds=interval)
    if misses < 1:
        raise ValueError(f"misses must be at least 1, got {misses}")
    return interval * misses


def is_live(worker: WorkerRecord, now: datetime, limit: timedelta) -> bool:
    """Whether a worker (or a scheduler's presence record) counts as alive at ``now``: its
    record says ``alive`` and it beat within ``limit`` (:func:`silence_limit`). The reaper
    marks ``lost`` exactly the ``alive`` records this is false for."""
    return worker.state == ALIVE and now - worker.heartbeat_at <= limit


def reap_lost_workers(
    store: Store,
    *,
    now: datetime,
    interval: timedelta | float,
    misses: int,
    clock: Clock,
    actor: str = "scheduler",
    on_lost: Callable[[WorkerRecord], None] | None = None,
) -> list[str]:
    """Mark silent workers ``lost`` and fail the units of work they left ``in_progress``.

    A worker is silent when its last heartbeat is older than ``interval * misses``; its record
    goes ``alive → lost``. A unit of work in progress is failed (``fail``: ``in_progress →
    invalid``, ``error`` and ``finished_at`` set) when its worker is lost, or when its own
    ``heartbeat_at`` (``started_at`` if it never beat) is that old, whatever its worker's record
    says (the record may be gone, or its worker wedged with its heartbeat thread still alive).

    Args:
        store: the store.
        now: the instant to judge staleness against.
        interval: the workers' ``heartbeat_interval`` (a timedelta, or seconds).
        misses: beats that may be missed (``heartbeat_misses``).
        clock: stamps the history events.
        actor: who reaps, for the history.
        on_lost: called with each worker this call marked lost, once its units of work are
            failed.

    Returns:
        Ids of the units of work this call failed (not those another caller failed first).
    """
    cutoff = now - silence_limit(interval, misses)
    lost: set[str] = set()
    marked: list[WorkerRecord] = []
    for worker in store.list_workers():
        if worker.heartbeat_at >= cutoff or worker.state not in (ALIVE, LOST):
            continue  # beating (a lost worker that beats again is alive), or stopped
        lost.add(worker.worker_id)
        if worker.state == ALIVE:
            if store.set_worker_state(worker.worker_id, LOST, expected_state=ALIVE):
                marked.append(worker)
                log.warning(
                    "worker %s: lost (no heartbeat for %d s)",
                    worker.worker_id,
                    _age(now, worker.heartbeat_at),
                )
    failed: list[str] = []
    for uow in _in_progress(store):
        if uow.flow:
            continue  # a flow run has no worker of its own: its steps move it (db.flows)
        last = uow.heartbeat_at or uow.started_at or uow.updated_at
        if uow.worker_id in lost:
            reason = f"worker {uow.worker_id} lost (no heartbeat for {_age(now, last)} s)"
        elif last < cutoff:
            reason = f"no heartbeat from worker {uow.worker_id} for {_age(now, last)} s"
        else:
            continue
        if _fail(store, uow, reason=reason, now=now, clock=clock, actor=actor):
            failed.append(uow.id)
    if on_lost is not None:
        for worker in marked:
            on_lost(worker)
    return failed


def forget_old_workers(store: Store, *, now: datetime, retention: timedelta) -> list[str]:
    """Remove the records of workers lost or stopped longer than ``retention`` ago (by their
    last heartbeat): the workers page and ``list workers`` keep what happened overnight, not
    every worker that ever ran. Their units of work and the history stay.

    Returns:
        The ids removed.
    """
    cutoff = now - retention
    removed = []
    for worker in store.list_workers():
        if worker.state in (LOST, STOPPED) and worker.heartbeat_at < cutoff:
            store.delete_worker(worker.worker_id)
            log.info(
                "worker %s: %s since %s; record removed",
                worker.worker_id,
                worker.state,
                worker.heartbeat_at.isoformat(timespec="seconds"),
            )
            removed.append(worker.worker_id)
    return removed


def _in_progress(store: Store) -> list[UnitOfWork]:
    """Every unit of work in progress (a bounded set: at most what the workers can run)."""
    query = UowQuery(states=frozenset({UowState.IN_PROGRESS}), newest_first=False)
    found: list[UnitOfWork] = []
    cursor: str | None = None
    while True:
        page = store.find_uows(query, limit=500, cursor=cursor)
        found.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return found


def _fail(
    store: Store, uow: UnitOfWork, *, reason: str, now: datetime, clock: Clock, actor: str
) -> bool:
    try:
        change_uow(
            store,
            uow,
            "fail",
            clock=clock,
            actor=actor,
            reason=reason,
            changes={"finished_at": now, "error": reason},
            details={"attempt": uow.attempt, "worker_id": uow.worker_id},
        )
    except (StateConflict, TransitionRefused):
        # Finished by its worker or failed by another scheduler meanwhile: theirs stands.
        return False
    return True


def _age(now: datetime, then: datetime) -> int:
    return max(0, int((now - then).total_seconds()))
