"""Driving the jobs of one managed process through its state machine.

Each look at a process reads only its active window (embryo, in_progress and final_run jobs,
oldest first), so a pass costs the same with five years of processed history as with none.
Periods run in parallel up to ``max_active``; with 1 (the default) strictly in time order. A job
that waits or fails never blocks later periods beyond that limit (unlike Synergy's
one-period-per-tick head-of-line blocking).

Every decision goes through :mod:`db.state_change`; a lost race (``StateConflict``) just means
another actor moved the job first: the next look sees the new state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from db.errors import NotFound, StateConflict
from db.models import JobQuery
from db.relations import Readiness, Registry, readiness, timeperiod_of
from db.state_change import change_job, change_uow
from db.states import (
    ACTIVE_JOB_STATES,
    Blocking,
    JobState,
    Qualifier,
    StateMachineName,
    UowKind,
    UowState,
)
from db.timeperiod import Timeperiod

if TYPE_CHECKING:
    from db.clock import Clock
    from db.models import Job, ProcessEntry, UnitOfWork
    from db.store import Store
    from scheduler.dispatch import Dispatcher

log = logging.getLogger(f"tactus.{__name__}")

ACTOR = "scheduler"


@dataclass(frozen=True, slots=True)
class LookResult:
    """What one look at a process did."""

    started: int = 0
    finished: int = 0
    #: A job changed in a way other processes may care about (finished or skipped).
    changed_finished: bool = False


class ManagedDriver:
    """Moves the jobs of managed processes; one instance per scheduler."""

    def __init__(self, store: Store, dispatcher: Dispatcher, clock: Clock, window: int) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.clock = clock
        self.window = window

    def look(self, entry: ProcessEntry, registry: Registry, *, scheduled: bool) -> LookResult:
        """Advance every active job of ``entry`` that can move now.

        Args:
            entry: the process.
            registry: the managed processes (for trees and dependencies).
            scheduled: True on the process's own trigger (continuous processes then run
                another unit of work for their open period); False when woken by a status
                change (only finishing and starting happen).
        """
        now = self.clock.now()
        jobs = self.store.find_jobs(
            JobQuery(process=entry.name, states=ACTIVE_JOB_STATES, newest_first=False),
            limit=entry.max_active + self.window,
        ).items
        started = finished = 0
        running = 0
        for job in jobs:
            if job.state is JobState.EMBRYO:
                continue
            outcome = self._advance(entry, registry, job, now, scheduled)
            if outcome in (JobState.PROCESSED, JobState.NOOP, JobState.SKIPPED):
                finished += 1
            else:
                running += 1
        slots = entry.max_active - running
        for job in jobs:
            if job.state is not JobState.EMBRYO:
                continue
            if slots <= 0:
                break
            outcome = self._embryo(entry, registry, job, now)
            if outcome is None:
                if entry.max_active == 1:
                    break  # strict time order: a waiting period holds back the later ones
                continue
            if outcome in (JobState.IN_PROGRESS, JobState.FINAL_RUN):
                started += 1
                slots -= 1
            else:
                finished += 1
        return LookResult(started=started, finished=finished, changed_finished=finished > 0)

    # -- embryo ---------------------------------------------------------------------------------

    def _embryo(
        self, entry: ProcessEntry, registry: Registry, job: Job, now: datetime
    ) -> JobState | None:
        """Start, finalize or skip an embryo job; None when it must wait."""
        period = timeperiod_of(job)
        lag = entry.lag if entry.state_machine is StateMachineName.DISCRETE else timedelta(0)
        closed = now >= period.end + lag
        ready = readiness(self.store, registry, job)
        if entry.blocking is Blocking.DEPENDENCIES:
            if ready.dependency_skipped:
                return self._move(entry, job, "skip", reason="a dependency was skipped")
            if not ready.dependencies_succeeded:
                return None
        if entry.blocking is Blocking.CHILDREN and not ready.finalizable:
            return None
        if entry.state_machine is StateMachineName.DISCRETE:
            if not closed:
                return None
            return self._start(entry, job, "start", now, facts={"closed": True}, final=True)
        if closed and ready.finalizable:
            return self._start(
                entry, job, "finalize", now, facts={"closed": True, "finalizable": True}, final=True
            )
        return self._start(entry, job, "start", now, facts={}, final=False)

    # -- in_progress and final_run ----------------------------------------------------------------

    def _advance(
        self, entry: ProcessEntry, registry: Registry, job: Job, now: datetime, scheduled: bool
    ) -> JobState | None:
        uow = self._uow(job)
        if uow is None:
            # linked unit of work missing (should not happen): give the job a fresh one
            log.warning("job %s: unit of work %s missing; reprocessing", job.key, job.uow_id)
            return self._move(entry, job, "reprocess", reason="its unit of work is missing")
        if uow.state is UowState.CANCELED:
            return self._move(entry, job, "skip", reason=f"unit of work {uow.id} canceled")
        if job.state is JobState.FINAL_RUN:
            if uow.state is UowState.PROCESSED:
                return self._move(entry, job, "complete", reason=f"unit of work {uow.id} processed")
            if uow.state is UowState.NOOP:
                return self._move(entry, job, "complete_noop", reason=f"unit of work {uow.id} noop")
            return job.state
        # in_progress
        if entry.state_machine is StateMachineName.DISCRETE:
            if uow.state not in (UowState.PROCESSED, UowState.NOOP):
                return job.state
            ready = readiness(self.store, registry, job)
            if not ready.finalizable:
                return job.state  # processed, waiting for children/dependencies to finalize
            trigger = "complete" if uow.state is UowState.PROCESSED else "complete_noop"
            return self._move(
                entry,
                job,
                trigger,
                facts={"finalizable": True},
                reason=f"unit of work {uow.id} {uow.state}",
            )
        return self._advance_open(entry, registry, job, uow, now, scheduled)

    def _advance_open(
        self,
        entry: ProcessEntry,
        registry: Registry,
        job: Job,
        uow: UnitOfWork,
        now: datetime,
        scheduled: bool,
    ) -> JobState | None:
        """Continuous and recomputing jobs while in_progress."""
        period = timeperiod_of(job)
        closed = now >= period.end
        if uow.state in (UowState.REQUESTED, UowState.IN_PROGRESS, UowState.INVALID):
            if (
                entry.state_machine is StateMachineName.RECOMPUTING
                and uow.state is UowState.REQUESTED
            ):
                self._widen(entry, job, uow, now)
            return job.state
        ready: Readiness = readiness(self.store, registry, job)
        if closed and ready.finalizable:
            return self._start(
                entry, job, "finalize", now, facts={"closed": True, "finalizable": True}, final=True
            )
        if not closed and scheduled:
            return self._start(entry, job, "run_again", now, facts={}, final=False)
        return job.state

    def _widen(self, entry: ProcessEntry, job: Job, uow: UnitOfWork, now: datetime) -> None:
        """Recomputing: a unit of work nobody picked up yet grows to cover the newer data."""
        horizon = _horizon(timeperiod_of(job), now)
        if horizon <= uow.end_timeperiod:
            return
        try:
            change_uow(
                self.store,
                uow,
                "widen",
                clock=self.clock,
                actor=ACTOR,
                reason=f"widened to {horizon}",
                changes={"end_timeperiod": horizon},
            )
            change_job(
                self.store,
                job,
                "widen",
                state_machine=entry.state_machine,
                clock=self.clock,
                actor=ACTOR,
                reason=f"unit of work {uow.id} widened to {horizon}",
            )
        except StateConflict:
            pass  # a worker claimed it meanwhile: the next unit of work covers the rest

    # -- helpers ----------------------------------------------------------------------------------

    def _uow(self, job: Job) -> UnitOfWork | None:
        if not job.uow_id:
            return None
        try:
            return self.store.get_uow(job.uow_id)
        except NotFound:
            return None

    def _start(
        self,
        entry: ProcessEntry,
        job: Job,
        trigger: str,
        now: datetime,
        *,
        facts: dict,
        final: bool,
    ) -> JobState | None:
        """Create the job's next unit of work, move the job, then publish."""
        period = timeperiod_of(job)
        end = str(period.next()) if final else _horizon(period, now)
        uow, _ = self.dispatcher.create(
            entry,
            kind=UowKind.MANAGED,
            start=str(period),
            end=end,
            run_key=f"r{job.run}v{job.version}",
            timeperiod=job.timeperiod,
            reason=f"{trigger} job {job.key}",
        )
        moved = self._move(
            entry,
            job,
            trigger,
            facts=facts,
            changes={"uow_id": uow.id},
            reason=f"unit of work {uow.id}",
        )
        if moved is not None and uow.state is UowState.REQUESTED:
            self.dispatcher.publish(uow)
        return moved

    def _move(
        self,
        entry: ProcessEntry,
        job: Job,
        trigger: str,
        *,
        reason: str,
        facts: dict | None = None,
        changes: dict | None = None,
    ) -> JobState | None:
        try:
            moved = change_job(
                self.store,
                job,
                trigger,
                state_machine=entry.state_machine,
                clock=self.clock,
                actor=ACTOR,
                reason=reason,
                facts=facts,
                changes=changes,
            )
        except StateConflict:
            return None
        return moved.state


def _horizon(period: Timeperiod, now: datetime) -> str:
    """The exclusive end of the data a continuous/recomputing unit of work covers now: the
    hour after ``now`` while the period is open, the period's end once closed (hourly strings
    so the window reads in the finest grid)."""
    if now >= period.end:
        return str(Timeperiod.containing(Qualifier.HOURLY, period.end))
    if period.qualifier is Qualifier.HOURLY:
        return str(period.next())
    return str(Timeperiod.containing(Qualifier.HOURLY, now).next())
