"""Driving the jobs of one managed process through its state machine.

Each look at a process reads only its active window (embryo, in_progress and final_run jobs,
oldest first), so a pass costs the same with five years of processed history as with none.

``max_active`` counts the process's units of work in flight (requested, in progress, or invalid
and waiting for a retry), not its unfinished jobs: a job whose run is over and that only waits
(for its children or dependencies to finalize, for its next scheduled run while its period is
open) holds no slot. Free slots go to the jobs that need a new unit of work, closed periods
first and oldest first, then the open period: an open period of a continuous process never
holds back a reprocessed or late closed one. With ``max_active`` 1, periods also start in time
order: an embryo that cannot start yet holds back the later ones.

A job that waits on its relations says so in its history (a ``wait`` event, once per reason);
related periods that can never exist (before the related process's first period) are not
waited for, and the event that moves the job on says so.

Every decision goes through :mod:`db.state_change`; a lost race (``StateConflict``) just means
another actor moved the job first: the next look sees the new state.

Several processes are looked at together (:meth:`ManagedDriver.look_many`) when their jobs
relate to no other process's: their windows and their units of work in flight are read in one
go for all of them, then each is decided exactly as alone, then the jobs they finish or skip
move in one store write and the jobs they start start in another (each change still its own
compare-and-set with its history event), then the units of work are published.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from db.errors import DuplicateKey, NotFound, StateConflict, TransitionRefused
from db.gates import BlockingVerdict, blocking_verdict, closes_at, free_slots
from db.models import Event
from db.relations import Readiness, Registry, readiness, timeperiod_of
from db.state_change import (
    JobChange,
    JobStartRequest,
    change_job,
    change_jobs,
    change_uow,
    start_job,
    start_jobs,
)
from db.states import (
    ACTIVE_JOB_STATES,
    ACTIVE_UOW_STATES,
    FINISHED_JOB_STATES,
    Blocking,
    JobState,
    Qualifier,
    StateMachineName,
    UowState,
)
from db.timeperiod import Timeperiod

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from db.clock import Clock
    from db.models import Job, ProcessEntry, UnitOfWork
    from db.store import Store
    from scheduler.dispatch import Dispatcher

log = logging.getLogger(f"tactus.{__name__}")

ACTOR = "scheduler"

#: Trigger of the history event a job gets when it starts waiting on its relations.
WAIT = "wait"
#: Jobs whose last wait reason the driver remembers (to write each reason once); beyond this
#: it forgets them all and asks the history again.
NOTED_LIMIT = 50_000

#: What a job that needs no new unit of work did in a look.
FINISHED = "finished"  # it moved to processed, noop or skipped
IN_FLIGHT = "in_flight"  # its unit of work is in flight: it holds a max_active slot
WAITING = "waiting"  # nothing to do now; holds no slot
DEFERRED = "deferred"  # it moves with the other moves of the look (holds no slot)


@dataclass(frozen=True, slots=True)
class LookResult:
    """What one look at a process did."""

    started: int = 0
    finished: int = 0
    #: A job changed in a way other processes may care about (finished or skipped).
    changed_finished: bool = False


@dataclass(frozen=True, slots=True)
class _Want:
    """A job that needs a new unit of work, hence a slot."""

    job: Job
    trigger: str
    #: The unit of work covers the whole period (discrete, final run), not up to now.
    final: bool
    #: Its period is over: served before the open period.
    closed: bool
    reason: str
    facts: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Look:
    """One process's look in progress: what its jobs need, decided from what was read."""

    entry: ProcessEntry
    finished: int = 0
    #: Free max_active slots left.
    slots: int = 0
    #: The jobs that need a new unit of work, in the order they get one.
    wants: list[_Want] = field(default_factory=list)
    #: The moves decided, written with the other processes' (the jobs' own unit of work over).
    moves: list[JobChange] = field(default_factory=list)
    started: int = 0


class ManagedDriver:
    """Moves the jobs of managed processes; one instance per scheduler."""

    def __init__(self, store: Store, dispatcher: Dispatcher, clock: Clock, window: int) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.clock = clock
        self.window = window
        #: job key -> (job version, reason) of the last wait event written or found.
        self._noted: dict[str, tuple[int, str]] = {}

    def look(self, entry: ProcessEntry, registry: Registry, *, scheduled: bool) -> LookResult:
        """Advance every active job of ``entry`` that can move now.

        Args:
            entry: the process.
            registry: the managed processes (for trees and dependencies).
            scheduled: True on the process's own trigger (continuous processes then run
                another unit of work for their open period); False when woken by a status
                change (only finishing and starting happen).
        """
        return self.look_many([(entry, scheduled)], registry)[entry.name]

    def look_many(
        self, looks: Sequence[tuple[ProcessEntry, bool]], registry: Registry
    ) -> dict[str, LookResult]:
        """:meth:`look` at several processes, each with its ``scheduled``, by process name.

        The reads are grouped (every window, every unit of work they run), the moves written
        together, then the starts together. Only processes whose jobs relate to no other
        process among them may go together (a look reads its relations as they are when it
        runs, and the others' moves are written later): the scheduler looks at a process of a
        tree or with dependencies alone.
        """
        now = self.clock.now()
        limits = {entry.name: entry.max_active + self.window for entry, _ in looks}
        windows = self.store.job_windows(limits, ACTIVE_JOB_STATES)
        uows = self.store.get_uows(
            [
                job.uow_id
                for jobs in windows.values()
                for job in jobs
                if job.state is not JobState.EMBRYO and job.uow_id
            ]
        )
        decided = [
            self._decide(entry, registry, windows.get(entry.name, []), uows, now, scheduled)
            for entry, scheduled in looks
        ]
        self._moved(decided)
        self._started(decided, registry, now)
        return {
            look.entry.name: LookResult(
                started=look.started, finished=look.finished, changed_finished=look.finished > 0
            )
            for look in decided
        }

    def _decide(
        self,
        entry: ProcessEntry,
        registry: Registry,
        jobs: list[Job],
        uows: Mapping[str, UnitOfWork],
        now: datetime,
        scheduled: bool,
    ) -> _Look:
        """What each job of ``entry``'s window needs, from what was read; the moves of started
        jobs are kept for :meth:`_moved`, the starts for :meth:`_started`."""
        look = _Look(entry)
        in_flight = 0
        wants: list[_Want] = []
        for job in jobs:
            if job.state is not JobState.EMBRYO:
                step = self._advance(entry, registry, job, now, scheduled, uows, look.moves)
                in_flight += step == IN_FLIGHT
                look.finished += step == FINISHED
                if isinstance(step, _Want):
                    wants.append(step)
        slots = free_slots(entry.max_active, in_flight)
        for job in jobs:
            if job.state is not JobState.EMBRYO:
                continue
            if sum(w.closed and w.job.timeperiod < job.timeperiod for w in wants) >= slots:
                break  # older closed periods take every free slot (the next embryos are newer)
            step = self._embryo(entry, registry, job, now)
            look.finished += step == FINISHED
            if isinstance(step, _Want):
                wants.append(step)
            elif step == WAITING and entry.max_active == 1:
                break  # periods start in time order: one that cannot start holds back the rest
        # closed periods first, each group oldest first
        look.wants = sorted(wants, key=lambda w: (not w.closed, w.job.timeperiod))
        look.slots = slots
        return look

    def _moved(self, decided: list[_Look]) -> None:
        """Write the moves every look decided, together (:func:`db.state_change.change_jobs`);
        a lost race just means another actor moved the job first."""
        requests = [(look, move) for look in decided for move in look.moves]
        if not requests:
            return
        done = change_jobs(
            self.store, [move for _, move in requests], clock=self.clock, actor=ACTOR
        )
        for (look, move), answer in zip(requests, done, strict=True):
            if isinstance(answer, TransitionRefused | NotFound):
                raise answer
            if isinstance(answer, StateConflict):
                continue  # moved by someone else: the next look sees where to
            self._noted.pop(move.job.key, None)
            look.finished += answer.state in FINISHED_JOB_STATES

    def _started(self, decided: list[_Look], registry: Registry, now: datetime) -> None:
        """Start what each look wants within its free slots: the first of every look
        together (:func:`db.state_change.start_jobs`), then published; a look whose start
        did not take a slot (lost, or its run over already) goes on alone, in order."""
        first = [(look, look.wants[: look.slots]) for look in decided]
        requests = [(look, want) for look, wants in first for want in wants]
        done = start_jobs(
            self.store,
            [self._start_request(look.entry, want, now) for look, want in requests],
            clock=self.clock,
            actor=ACTOR,
        )
        stored: dict[int, tuple[Job, UnitOfWork] | None] = {}
        refused: TransitionRefused | NotFound | None = None
        for (_, want), answer in zip(requests, done, strict=True):
            try:
                stored[id(want)] = self._start_answer(want, answer, now)
            except (TransitionRefused, NotFound) as exc:
                refused = refused or exc
        # what was stored is announced even when a start fails the pass
        self._publish_all(s for s in stored.values() if s is not None)
        if refused is not None:
            raise refused
        for look, _ in first:
            entry = look.entry
            for want in look.wants:
                if look.slots <= 0:
                    break
                if id(want) in stored:
                    started = stored[id(want)]
                else:
                    started = self._start(entry, want, now)
                if started is None:
                    if entry.max_active == 1:
                        break  # it changed under us: the next look decides again, in order
                    continue
                look.started += 1
                job, uow = started
                if uow.state in ACTIVE_UOW_STATES:
                    look.slots -= 1
                else:  # an interrupted start's run, finished meanwhile: the job can move on now
                    look.finished += self._advance(entry, registry, job, now, False) == FINISHED

    # -- embryo ---------------------------------------------------------------------------------

    def _embryo(
        self, entry: ProcessEntry, registry: Registry, job: Job, now: datetime
    ) -> _Want | str:
        """What an embryo job needs: a start, a skip, or to wait."""
        discrete = entry.state_machine is StateMachineName.DISCRETE
        closed = now >= closes_at(entry, timeperiod_of(job))
        if discrete and not closed:
            return WAITING  # not due yet: the period and lag say until when
        ready: Readiness | None = None
        if entry.blocking is not Blocking.NORMAL:
            ready = readiness(self.store, registry, job, now)
            verdict = blocking_verdict(entry.blocking, ready)
            if verdict is BlockingVerdict.SKIP:
                names = ", ".join(ready.skipped_dependencies)
                reason = f"dependency {names} skipped"
                return self._move(None, entry, job, "skip", reason=reason)
            if verdict is BlockingVerdict.WAIT:
                return self._wait(job, ready, now)
        if discrete:
            return _want(job, "start", ready, final=True, closed=True, facts={"closed": True})
        if ready is None:
            ready = readiness(self.store, registry, job, now)
        if closed and ready.finalizable:
            facts = {"closed": True, "finalizable": True}
            return _want(job, "finalize", ready, final=True, closed=True, facts=facts)
        return _want(job, "start", ready, final=False, closed=closed, facts={})

    # -- in_progress and final_run ----------------------------------------------------------------

    def _advance(
        self,
        entry: ProcessEntry,
        registry: Registry,
        job: Job,
        now: datetime,
        scheduled: bool,
        uows: Mapping[str, UnitOfWork] | None = None,
        moves: list[JobChange] | None = None,
    ) -> _Want | str:
        """What a started job needs: to finish, a new unit of work, or to wait.

        Args:
            uows: the units of work read for the look, by id (None: read the job's now).
            moves: where a move is kept to be written with the look's others (None: now).
        """
        uow = self._uow(job) if uows is None else uows.get(job.uow_id or "")
        if uow is None:
            # linked unit of work missing (should not happen): give the job a fresh one
            log.warning("job %s: unit of work %s missing; reprocessing", job.key, job.uow_id)
            return self._move(
                moves,
                entry,
                job,
                "reprocess",
                reason="its unit of work is missing",
                changes={"run": job.run + 1, "uow_id": None},
            )
        if uow.state is UowState.CANCELED:
            return self._move(moves, entry, job, "skip", reason=f"unit of work {uow.id} canceled")
        if uow.state in ACTIVE_UOW_STATES:
            if (
                entry.state_machine is StateMachineName.RECOMPUTING
                and job.state is JobState.IN_PROGRESS
                and uow.state is UowState.REQUESTED
            ):
                self._widen(entry, job, uow, now)
            return IN_FLIGHT
        # the unit of work succeeded (processed or noop)
        done = "complete" if uow.state is UowState.PROCESSED else "complete_noop"
        if job.state is JobState.FINAL_RUN:
            reason = f"unit of work {uow.id} {uow.state}"
            return self._move(moves, entry, job, done, reason=reason)
        closed = now >= timeperiod_of(job).end
        if entry.state_machine is not StateMachineName.DISCRETE and not closed:
            if not scheduled:
                return WAITING  # its next run comes with its trigger
            return _want(job, "run_again", None, final=False, closed=False, facts={})
        ready = readiness(self.store, registry, job, now)
        if not ready.finalizable:
            return self._wait(job, ready, now)
        if entry.state_machine is StateMachineName.DISCRETE:
            reason, details = _with_note(f"unit of work {uow.id} {uow.state}", ready)
            return self._move(
                moves,
                entry,
                job,
                done,
                facts={"finalizable": True},
                reason=reason,
                details=details,
            )
        facts = {"closed": True, "finalizable": True}
        return _want(job, "finalize", ready, final=True, closed=True, facts=facts)

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

    def _start_request(self, entry: ProcessEntry, want: _Want, now: datetime) -> JobStartRequest:
        """The start ``want`` asks for: the job moved, and its next unit of work over the whole
        period (a final run) or up to now."""
        period = timeperiod_of(want.job)
        return JobStartRequest(
            job=want.job,
            trigger=want.trigger,
            entry=entry,
            start=str(period),
            end=str(period.next()) if want.final else _horizon(period, now),
            reason=want.reason,
            facts=want.facts,
            details=want.details or None,
        )

    def _start(
        self, entry: ProcessEntry, want: _Want, now: datetime
    ) -> tuple[Job, UnitOfWork] | None:
        """Move the job and create its next unit of work in one store write (the funnel's
        :func:`~db.state_change.start_job`), then publish it.

        Returns:
            The job and its unit of work as stored, or None if the job changed under us.
        """
        request = self._start_request(entry, want, now)
        try:
            answer: Any = start_job(
                self.store,
                request.job,
                request.trigger,
                entry=entry,
                start=request.start,
                end=request.end,
                clock=self.clock,
                actor=ACTOR,
                reason=request.reason,
                facts=request.facts,
                details=request.details,
                after_commit=self._publish,
            )
        except (StateConflict, DuplicateKey) as exc:
            answer = exc
        return self._start_answer(want, answer, now)

    def _start_answer(
        self, want: _Want, answer: Any, now: datetime
    ) -> tuple[Job, UnitOfWork] | None:
        """What a start came to: the job and its unit of work as stored, or None if the job
        changed under us (or its run's key is taken, which is noted in its history).

        Raises:
            TransitionRefused, NotFound: as :func:`~db.state_change.start_job` does.
        """
        job = want.job
        if isinstance(answer, StateConflict):
            return None
        if isinstance(answer, DuplicateKey):
            # Only data no current Tactus writes can hold a job's key (see Store.start_job).
            log.error("job %s: cannot start: %s", job.key, answer)
            self._note(job, f"cannot start: {answer}", {}, now)
            return None
        if isinstance(answer, Exception):
            raise answer
        self._noted.pop(job.key, None)
        return answer

    def _publish_all(self, started: Iterable[tuple[Job, UnitOfWork]]) -> None:
        """After the commit: announce the units of work started (see :meth:`_publish`)."""
        fresh = [uow for _, uow in started if uow.state is UowState.REQUESTED]
        try:
            self.dispatcher.publish_all(fresh)
        except Exception:
            # As an after-commit hook: stored is stored; the recovery re-posts what was not
            # published.
            log.exception("publishing %d units of work started failed", len(fresh))

    def _publish(self, job: Job, uow: UnitOfWork) -> None:
        """After the commit: announce the job's unit of work (one an interrupted start stored
        may be past requested already, and then there is nothing to announce)."""
        if uow.state is UowState.REQUESTED:
            self.dispatcher.publish(uow)

    def _move(
        self,
        moves: list[JobChange] | None,
        entry: ProcessEntry,
        job: Job,
        trigger: str,
        *,
        reason: str,
        facts: dict | None = None,
        changes: dict | None = None,
        details: dict | None = None,
    ) -> str:
        """Move ``job`` now, or keep the move in ``moves`` to be written with the look's
        others (:meth:`_moved`)."""
        change = JobChange(
            job=job,
            trigger=trigger,
            state_machine=entry.state_machine,
            reason=reason,
            facts=facts,
            changes=changes,
            details=details,
        )
        if moves is not None:
            moves.append(change)
            return DEFERRED
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
                details=details,
            )
        except StateConflict:
            return WAITING  # moved by someone else: the next look sees where to
        self._noted.pop(job.key, None)
        return FINISHED if moved.state in FINISHED_JOB_STATES else WAITING

    def _wait(self, job: Job, ready: Readiness, now: datetime) -> str:
        """A job that waits on its relations: say so in its history, once per reason."""
        self._note(
            job,
            f"waiting for {ready.waiting_for} to finish",
            {"waiting_for": {label: dict(counts) for label, counts in ready.waiting.items()}},
            now,
        )
        return WAITING

    def _note(self, job: Job, reason: str, details: dict[str, Any], now: datetime) -> None:
        """Append a ``wait`` event to the job's history unless its last one says the same."""
        if self._noted.get(job.key) == (job.version, reason):
            return
        if job.key not in self._noted:
            # not seen since this scheduler started: its predecessor may have said it already
            last = self.store.history("job", job.key, limit=1)
            if last and last[-1].trigger == WAIT and last[-1].reason == reason:
                self._remember(job, reason)
                return
        self.store.append_event(
            Event(
                entity="job",
                entity_id=job.key,
                at=now,
                trigger=WAIT,
                from_state=job.state.value,
                to_state=job.state.value,
                actor=ACTOR,
                reason=reason,
                details=details,
            )
        )
        log.info("job %s: %s", job.key, reason)
        self._remember(job, reason)

    def _remember(self, job: Job, reason: str) -> None:
        if len(self._noted) >= NOTED_LIMIT:
            self._noted.clear()
        self._noted[job.key] = (job.version, reason)


def _want(
    job: Job,
    trigger: str,
    ready: Readiness | None,
    *,
    final: bool,
    closed: bool,
    facts: dict[str, Any],
) -> _Want:
    """A start request, its reason in words (with the related periods not waited for)."""
    if trigger == "finalize":
        why = "the period is closed and finalizable: final run"
    elif trigger == "run_again":
        why = "another run while the period is open"
    elif final:
        why = "the period is closed"
    else:
        why = "the period is closed, not finalizable yet" if closed else "the period is open"
    reason, details = _with_note(why, ready)
    return _Want(
        job=job,
        trigger=trigger,
        final=final,
        closed=closed,
        reason=reason,
        facts=facts,
        details=details,
    )


def _with_note(reason: str, ready: Readiness | None) -> tuple[str, dict[str, Any]]:
    """``reason``, and the history details, naming the related periods not waited for."""
    if ready is None or not ready.not_waited_for:
        return reason, {}
    return f"{reason}; {ready.not_waited_for}", {"not_waited_for": ready.not_waited_for}


def _horizon(period: Timeperiod, now: datetime) -> str:
    """The exclusive end of the data a continuous/recomputing unit of work covers now: the
    hour after ``now`` while the period is open, the period's end once closed (hourly strings
    so the window reads in the finest grid)."""
    if now >= period.end:
        return str(Timeperiod.containing(Qualifier.HOURLY, period.end))
    if period.qualifier is Qualifier.HOURLY:
        return str(period.next())
    return str(Timeperiod.containing(Qualifier.HOURLY, now).next())
