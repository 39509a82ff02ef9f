"""A catch-up's next period, started by the outcome that ends the previous one.

A managed process catching up a backlog of closed periods with ``max_active`` 1 runs them one
after the other, in time order. Left to the scheduler, each period waits for a pass: the worker
stores the outcome, the scheduler hears the status, reads the process's window, finishes the
job, starts the next one and publishes its unit of work, and only then can a worker claim it.

When the outcome makes the next move certain, the worker writes it in the outcome's own
transaction instead (:attr:`db.models.UowTransition.chain`): the job finished, the next period's
job started with its unit of work, and on the store queue the message announcing it, which the
same commit's refill claim can already take. That is the decision the scheduler's look would
make (scheduler/managed.py), restricted to the case where it needs nothing but the process's
own window:

- the process is managed, enabled, not a flow, ``max_active`` 1, with no dependencies and no
  children in a tree (a tree's finest grid, or no tree): its periods are finalizable as soon as
  they are closed;
- the job the outcome ends is the process's oldest active job, in its final run (discrete: in
  progress), and the outcome a success (processed or noop);
- every other job in the window (the ``LOOK_WINDOW`` oldest active ones) is an embryo, so no
  other unit of work holds the slot, and the oldest of them has its period closed (discrete:
  plus ``lag``).

Anything else (a failure, a retry, an open period, a relation, a reprocessed older period)
is left to the scheduler. The chain is compare-and-set like every change: if either job moved
since the worker read it, the chain is left out and the outcome is written alone. The store
also checks, in the same transaction, that once the moves are made no other job of the process
is started and none older than the next period is still active (a period reprocessed or
started meanwhile); otherwise the chain is left out too.

That check is what lets a worker read the window once per :data:`LOOK_WINDOW` periods rather
than once per period (:class:`Lookahead`): after a chain is written it knows the job it started
and the embryos that follow, and a prediction that no longer holds is refused by the store,
after which it reads again.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from db.gates import LOOK_WINDOW, closes_at
from db.relations import timeperiod_of
from db.states import (
    ACTIVE_JOB_STATES,
    JobState,
    ProcessKind,
    Qualifier,
    StateMachineName,
    UowKind,
    UowState,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from db.models import Job, JobStart, ProcessEntry, UnitOfWork
    from db.store import Store

#: Outcomes after which a final run's job is finished (the scheduler's ``complete`` moves).
SUCCESSES = {UowState.PROCESSED: "complete", UowState.NOOP: "complete_noop"}


@dataclass(frozen=True, slots=True)
class NextInLine:
    """The moves an outcome allows at once: ``job`` finished by ``trigger``, ``following``
    started over its whole period."""

    entry: ProcessEntry
    job: Job
    trigger: str
    following: Job
    #: The machine's facts for the finish (discrete: finalizable), and the start's.
    finish_facts: dict[str, bool]
    start_trigger: str
    start_facts: dict[str, bool]
    start_reason: str
    #: The embryos after ``following``, oldest first, as last read.
    rest: tuple[Job, ...] = ()


def may_chain(entry: ProcessEntry) -> bool:
    """Whether ``entry``'s periods can move on without the scheduler (see the module)."""
    return (
        entry.kind is ProcessKind.MANAGED
        and entry.enabled
        and entry.max_active == 1
        and not entry.depends_on
        and not entry.steps
        and (entry.tree is None or entry.time_qualifier is Qualifier.HOURLY)
    )


def next_in_line(
    store: Store, entry: ProcessEntry, uow: UnitOfWork, outcome: UowState, now: datetime
) -> NextInLine | None:
    """The moves the outcome ``outcome`` of ``uow`` allows at once, or None (the scheduler
    decides). Reads the process's window (one read); writes nothing."""
    if not _qualifies(entry, uow, outcome):
        return None
    return _read_line(store, entry, uow, outcome, now)


def _read_line(
    store: Store, entry: ProcessEntry, uow: UnitOfWork, outcome: UowState, now: datetime
) -> NextInLine | None:
    """:func:`next_in_line` of a qualifying outcome, from the process's window as stored."""
    window = store.job_windows({entry.name: 1 + LOOK_WINDOW}, ACTIVE_JOB_STATES).get(entry.name, [])
    if len(window) < 2 or any(job.state is not JobState.EMBRYO for job in window[1:]):
        return None
    return _line(entry, uow, outcome, window[0], window[1], tuple(window[2:]), now)


class Lookahead:
    """:func:`next_in_line` for a worker, reading a process's window once per
    :data:`LOOK_WINDOW` periods: after a chain is written, the job it started and the embryos
    read after it are the next prediction (the store refuses one that no longer holds, see the
    module). Safe to share between the worker's slots."""

    def __init__(self, entry_of: Callable[[str], ProcessEntry | None]) -> None:
        self.entry_of = entry_of
        self._lock = threading.Lock()
        #: process -> (the job a chain started, the embryos after it).
        self._known: dict[str, tuple[Job, tuple[Job, ...]]] = {}

    def next_in_line(
        self, store: Store, uow: UnitOfWork, outcome: UowState, now: datetime
    ) -> NextInLine | None:
        """The moves ``outcome`` allows (see :func:`next_in_line`), or None."""
        entry = self.entry_of(uow.process)
        if entry is None or not _qualifies(entry, uow, outcome):
            return None
        with self._lock:
            known = self._known.pop(entry.name, None)
        if known is not None and known[0].uow_id == uow.id and known[1]:
            job, (following, *rest) = known
            return _line(entry, uow, outcome, job, following, tuple(rest), now)
        return _read_line(store, entry, uow, outcome, now)

    def written(self, line: NextInLine, start: JobStart) -> None:
        """The chain of ``line`` was written (by ``start``): predict the next from it."""
        started = replace(
            line.following,
            state=JobState(start.new_state),
            version=line.following.version + 1,
            uow_id=start.uow.id,
            updated_at=start.event.at,
        )
        with self._lock:
            self._known[started.process] = (started, line.rest)


def _qualifies(entry: ProcessEntry, uow: UnitOfWork, outcome: UowState) -> bool:
    return (
        outcome in SUCCESSES
        and uow.kind is UowKind.MANAGED
        and uow.process == entry.name
        and may_chain(entry)
    )


def _line(
    entry: ProcessEntry,
    uow: UnitOfWork,
    outcome: UowState,
    job: Job,
    following: Job,
    rest: tuple[Job, ...],
    now: datetime,
) -> NextInLine | None:
    """The moves if ``job`` is the one ``uow`` ran to its end and ``following`` is due."""
    discrete = entry.state_machine is StateMachineName.DISCRETE
    ends = JobState.IN_PROGRESS if discrete else JobState.FINAL_RUN
    if job.state is not ends or job.uow_id != uow.id or following.state is not JobState.EMBRYO:
        return None
    if now < closes_at(entry, timeperiod_of(following)):
        return None
    trigger = SUCCESSES[outcome]
    if discrete:
        return NextInLine(
            entry=entry,
            job=job,
            trigger=trigger,
            following=following,
            finish_facts={"finalizable": True},
            start_trigger="start",
            start_facts={"closed": True},
            start_reason="the period is closed",
            rest=rest,
        )
    return NextInLine(
        entry=entry,
        job=job,
        trigger=trigger,
        following=following,
        finish_facts={},
        start_trigger="finalize",
        start_facts={"closed": True, "finalizable": True},
        start_reason="the period is closed and finalizable: final run",
        rest=rest,
    )
