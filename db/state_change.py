"""The one funnel for every state change of a job, a unit of work or a supervised process.

Each change runs in a fixed order:

1. the entity's machine decides (or refuses with :class:`~db.errors.TransitionRefused`);
2. the store compare-and-sets the stored state and appends the history event atomically (a lost
   race raises :class:`~db.errors.StateConflict`; nothing changed);
3. one log line is written;
4. only after the commit, ``after_commit`` runs (publishing ids, waking the scheduler), so no
   message ever announces a change that was not stored.

No other code sets a state.

A job's start (:func:`start_job`) is one such change that also creates the job's next unit of
work: the machine decides, then one store write moves the job, links and inserts the unit of
work and records both events (:meth:`~db.store.Store.start_job`), then the unit of work is
published. Nothing else creates a managed unit of work, except the same start made in a worker's
outcome commit when a catch-up's next period is certain (:mod:`db.chain`,
:attr:`~db.models.UowTransition.chain`): decided by the same machines here, written by the
store in the outcome's transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from db import chain, flows
from db.errors import DuplicateKey, NotFound, StateConflict, TransitionRefused
from db.machines.job import job_machine
from db.machines.supervised import SUPERVISED_MACHINE
from db.machines.uow import UOW_MACHINE
from db.models import (
    Event,
    Job,
    JobChain,
    JobStart,
    JobTransition,
    SupervisedProcess,
    UnitOfWork,
    UowTransition,
)
from db.relations import timeperiod_of
from db.states import UowKind, UowState
from db.uow_factory import UowSpec, new_uow

if TYPE_CHECKING:
    from datetime import datetime

    from db.clock import Clock
    from db.flows import Announce
    from db.machines.base import TableMachine
    from db.models import ProcessEntry, QueueSettled, QueueSettlement
    from db.states import StateMachineName
    from db.store import QueueStore, Store

log = logging.getLogger(f"tactus.{__name__}")

E = TypeVar("E")


def _decided(
    machine: TableMachine,
    entity: str,
    key: str,
    state: str,
    trigger: str,
    *,
    clock: Clock,
    actor: str,
    reason: str,
    facts: Mapping[str, Any],
    details: Mapping[str, Any] | None,
) -> tuple[Any, Event]:
    """Step 1: the machine's destination (or TransitionRefused) and the history event."""
    dest = machine.decide(state, trigger, key, **facts)
    event = Event(
        entity=entity,
        entity_id=key,
        at=clock.now(),
        trigger=trigger,
        from_state=str(state),
        to_state=str(dest),
        actor=actor,
        reason=reason,
        details=dict(details or {}),
    )
    return dest, event


def _logged(entity: str, key: str, event: Event) -> None:
    """Step 3: the one log line of a stored change."""
    log.info(
        "%s %s: %s -> %s (%s by %s%s)",
        entity,
        key,
        event.from_state,
        event.to_state,
        event.trigger,
        event.actor,
        f": {event.reason}" if event.reason else "",
    )


def _change(
    machine: TableMachine,
    entity: str,
    key: str,
    state: str,
    trigger: str,
    *,
    clock: Clock,
    actor: str,
    reason: str,
    facts: Mapping[str, Any],
    details: Mapping[str, Any] | None,
    persist: Callable[[str, Event], E],
    after_commit: Callable[[E], None] | None,
) -> E:
    """Steps 1-4 of the module docstring; ``persist(dest, event)`` is the store's CAS write."""
    dest, event = _decided(
        machine,
        entity,
        key,
        state,
        trigger,
        clock=clock,
        actor=actor,
        reason=reason,
        facts=facts,
        details=details,
    )
    stored = persist(dest, event)
    _logged(entity, key, event)
    if after_commit is not None:
        try:
            after_commit(stored)
        except Exception:
            # The change is committed; a failing notification must not undo or hide it. The
            # store stays the truth and the scheduler's next pass catches up.
            log.exception("%s %s: after-commit hook failed", entity, key)
    return stored


def change_job(
    store: Store,
    job: Job,
    trigger: str,
    *,
    state_machine: StateMachineName,
    clock: Clock,
    actor: str,
    reason: str = "",
    facts: Mapping[str, Any] | None = None,
    changes: Mapping[str, Any] | None = None,
    details: Mapping[str, Any] | None = None,
    check_version: bool = False,
    after_commit: Callable[[Job], None] | None = None,
) -> Job:
    """Move ``job`` by ``trigger`` through its process's machine and persist it.

    Args:
        store: where the job lives.
        job: the job as the caller last read it; its state is the expected state.
        trigger: a trigger of the machine's table (``start``, ``complete``, ``skip`` ...).
        state_machine: the process's ``state_machine`` (selects the table).
        clock: source of the event's instant.
        actor: who asks (``scheduler``, ``worker w1``, ``user alice``).
        reason: why, in words, for the history.
        facts: conditions established by the caller (``closed``, ``finalizable``).
        changes: other job fields to set in the same write (``uow_id``, ``run``).
        details: extra data for the history event.
        check_version: also require the stored version to equal ``job.version``.
        after_commit: called with the new job once stored.

    Returns:
        The job as stored after the change.

    Raises:
        TransitionRefused: the machine does not allow it; nothing was written.
        StateConflict: another actor changed the job first; nothing was written.
    """
    return _change(
        job_machine(state_machine),
        "job",
        job.key,
        job.state,
        trigger,
        clock=clock,
        actor=actor,
        reason=reason,
        facts=dict(facts or {}),
        details=details,
        persist=lambda dest, event: store.transition_job(
            job.process,
            job.timeperiod,
            expected_state=job.state,
            new_state=dest,
            changes=changes,
            event=event,
            expected_version=job.version if check_version else None,
        ),
        after_commit=after_commit,
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class JobChange:
    """One change of :func:`change_jobs`: what :func:`change_job` takes besides the store,
    the clock, the actor and ``after_commit``."""

    job: Job
    trigger: str
    state_machine: StateMachineName
    reason: str = ""
    facts: Mapping[str, Any] | None = None
    changes: Mapping[str, Any] | None = None
    details: Mapping[str, Any] | None = None
    check_version: bool = False


def change_jobs(
    store: Store, requests: Sequence[JobChange], *, clock: Clock, actor: str
) -> list[Job | TransitionRefused | NotFound | StateConflict]:
    """Several job changes written together (:meth:`~db.store.Store.transition_jobs`: one
    commit on SQL): each is decided by the machine and applied or refused on its own, as
    :func:`change_job` would. A scheduler pass moves the jobs of all its processes this way.

    Returns:
        In the order of ``requests``: the job as stored, or the
        :class:`~db.errors.TransitionRefused`, :class:`~db.errors.StateConflict` or
        :class:`~db.errors.NotFound` that refused it (nothing of it was written). There is no
        ``after_commit``: the caller acts on the results once this returns, after the commit.
    """

    results, steps, positions = _decide_all(
        requests, lambda request: _job_step(request, clock=clock, actor=actor)
    )
    if steps:
        stored = store.transition_jobs(steps)
        for position, step, answer in zip(positions, steps, stored, strict=True):
            results[position] = answer
            if isinstance(answer, Job):
                _logged("job", requests[position].job.key, step.event)
    return results


def _job_decided(
    request: JobChange | JobStartRequest,
    state_machine: StateMachineName,
    *,
    clock: Clock,
    actor: str,
) -> tuple[Any, Event]:
    """Step 1 for a job: the destination its machine decides for the request, and the event."""
    job = request.job
    return _decided(
        job_machine(state_machine),
        "job",
        job.key,
        job.state,
        request.trigger,
        clock=clock,
        actor=actor,
        reason=request.reason,
        facts=dict(request.facts or {}),
        details=request.details,
    )


def _job_step(request: JobChange, *, clock: Clock, actor: str) -> JobTransition:
    """Step 1 of a job change: the machine's decision, as the store's compare-and-set."""
    job = request.job
    dest, event = _job_decided(request, request.state_machine, clock=clock, actor=actor)
    return JobTransition(
        process=job.process,
        timeperiod=job.timeperiod,
        expected_state=job.state,
        new_state=dest,
        event=event,
        changes=request.changes,
        expected_version=job.version if request.check_version else None,
    )


def run_key(job: Job) -> str:
    """The run key of the unit of work that starts ``job`` as it is now: its run and version,
    so each start of a job has its own key and a repeated attempt of the same start the same."""
    return f"r{job.run}v{job.version}"


def start_job(
    store: Store,
    job: Job,
    trigger: str,
    *,
    entry: ProcessEntry,
    start: str,
    end: str,
    clock: Clock,
    actor: str,
    reason: str = "",
    facts: Mapping[str, Any] | None = None,
    details: Mapping[str, Any] | None = None,
    after_commit: Callable[[Job, UnitOfWork], None] | None = None,
) -> tuple[Job, UnitOfWork]:
    """Move ``job`` by ``trigger`` and create the unit of work of its next run, in one store
    write (:meth:`~db.store.Store.start_job`), then run ``after_commit`` (publish).

    Args:
        store: where the job lives.
        job: the job as the caller last read it; its state and version are expected.
        trigger: a trigger that starts a run (``start``, ``finalize``, ``run_again``).
        entry: the job's process (its machine, arguments and retries).
        start: the unit of work's window, inclusive start.
        end: the window's exclusive end.
        clock: source of the events' instant.
        actor: who asks.
        reason: why, for the job's history.
        facts: conditions established by the caller (``closed``, ``finalizable``).
        details: extra data for the job's history event (the store adds ``uow_id``).
        after_commit: called with the stored job and unit of work once both are stored.

    Returns:
        (the job as stored, its unit of work: the new one, or the one an interrupted earlier
        attempt of this very start stored).

    Raises:
        TransitionRefused: the machine does not allow it; nothing was written.
        StateConflict: another actor changed the job first; nothing was written.
    """
    start_request = JobStartRequest(
        job=job,
        trigger=trigger,
        entry=entry,
        start=start,
        end=end,
        reason=reason,
        facts=facts,
        details=details,
    )
    prepared = _prepared_start(start_request, clock=clock, actor=actor)
    stored_job, stored_uow = store.start_job(
        job.process,
        job.timeperiod,
        expected_state=prepared.expected_state,
        expected_version=prepared.expected_version,
        new_state=prepared.new_state,
        event=prepared.event,
        uow=prepared.uow,
        uow_event=prepared.uow_event,
    )
    _logged_start(job, prepared, stored_uow)
    if after_commit is not None:
        try:
            after_commit(stored_job, stored_uow)
        except Exception:
            # As in _change: stored is stored; the recovery re-posts what was not published.
            log.exception("job %s: after-commit hook failed", job.key)
    return stored_job, stored_uow


@dataclass(frozen=True, kw_only=True, slots=True)
class JobStartRequest:
    """One start of :func:`start_jobs`: what :func:`start_job` takes besides the store, the
    clock, the actor and ``after_commit``."""

    job: Job
    trigger: str
    entry: ProcessEntry
    start: str
    end: str
    reason: str = ""
    facts: Mapping[str, Any] | None = None
    details: Mapping[str, Any] | None = None


def start_jobs(
    store: Store, requests: Sequence[JobStartRequest], *, clock: Clock, actor: str
) -> list[tuple[Job, UnitOfWork] | TransitionRefused | NotFound | StateConflict | DuplicateKey]:
    """Several :func:`start_job` written together (:meth:`~db.store.Store.start_jobs`: one
    commit on SQL): each is decided by the machine and applied or refused on its own, as
    :func:`start_job` would. A scheduler pass starts the jobs of all its processes this way.

    Returns:
        In the order of ``requests``: (the job as stored, its unit of work), or the
        :class:`~db.errors.TransitionRefused`, :class:`~db.errors.StateConflict`,
        :class:`~db.errors.NotFound` or :class:`~db.errors.DuplicateKey` that refused it
        (nothing of it was written). There is no ``after_commit``: the caller publishes once
        this returns, after the commit.

    Raises:
        InvalidInput: a value is bad; nothing was written.
    """
    results, prepared, positions = _decide_all(
        requests, lambda request: _prepared_start(request, clock=clock, actor=actor)
    )
    if prepared:
        stored = store.start_jobs(prepared)
        for position, start, answer in zip(positions, prepared, stored, strict=True):
            results[position] = answer
            if not isinstance(answer, Exception):
                _logged_start(requests[position].job, start, answer[1])
    return results


def _prepared_start(request: JobStartRequest, *, clock: Clock, actor: str) -> JobStart:
    """Step 1 of a start: the machine's decision, the job's event and its unit of work."""
    job = request.job
    dest, event = _job_decided(request, request.entry.state_machine, clock=clock, actor=actor)
    spec = UowSpec(
        entry=request.entry,
        kind=UowKind.MANAGED,
        start=request.start,
        end=request.end,
        run_key=run_key(job),
        reason=f"{request.trigger} job {job.key}",
        timeperiod=job.timeperiod,
    )
    uow, uow_event = new_uow(spec, event.at, actor, managed=True)
    return JobStart(
        process=job.process,
        timeperiod=job.timeperiod,
        expected_state=job.state,
        expected_version=job.version,
        new_state=dest,
        event=event,
        uow=uow,
        uow_event=uow_event,
    )


def _logged_start(job: Job, start: JobStart, stored_uow: UnitOfWork) -> None:
    """Step 3 of a start: the job's log line, and its unit of work's."""
    _logged("job", job.key, start.event)
    if stored_uow.id == start.uow.id:
        _logged("uow", start.uow.id, start.uow_event)
    else:
        log.info(
            "uow %s: linked to job %s (stored by an interrupted start)", stored_uow.id, job.key
        )


def change_uow(
    store: Store,
    uow: UnitOfWork,
    trigger: str,
    *,
    clock: Clock,
    actor: str,
    reason: str = "",
    facts: Mapping[str, Any] | None = None,
    changes: Mapping[str, Any] | None = None,
    details: Mapping[str, Any] | None = None,
    check_version: bool = False,
    after_commit: Callable[[UnitOfWork], None] | None = None,
    announce: Announce | None = None,
) -> UnitOfWork:
    """Move a unit of work by ``trigger`` and persist it; see :func:`change_job` for the
    arguments. ``facts`` may hold ``attempts_remain``; when absent it is computed from the
    unit of work's ``attempt`` and ``retries``. The end of a step of a flow run is written
    with what it makes possible (:mod:`db.flows`); ``announce`` is then called with the steps
    it made requested and the flow run if it ended.

    Raises:
        TransitionRefused: the machine does not allow it; nothing was written.
        StateConflict: another actor changed it first; nothing was written.
    """
    if uow.parent is not None:
        # a step of a flow run: its end is written with the flow's changes (change_uows)
        (result,) = change_uows(
            store,
            [
                UowChange(
                    uow=uow,
                    trigger=trigger,
                    reason=reason,
                    facts=facts,
                    changes=changes,
                    details=details,
                    check_version=check_version,
                )
            ],
            clock=clock,
            actor=actor,
            announce=announce,
        )
        if isinstance(result, Exception):
            raise result
        if after_commit is not None:
            try:
                after_commit(result)
            except Exception:
                log.exception("uow %s: after-commit hook failed", uow.id)
        return result
    return _change(
        UOW_MACHINE,
        "uow",
        uow.id,
        uow.state,
        trigger,
        clock=clock,
        actor=actor,
        reason=reason,
        facts={"attempts_remain": uow.attempt <= uow.retries, **dict(facts or {})},
        details=details,
        persist=lambda dest, event: store.transition_uow(
            uow.id,
            expected_state=uow.state,
            new_state=dest,
            changes=changes,
            event=event,
            expected_version=uow.version if check_version else None,
        ),
        after_commit=after_commit,
    )


@dataclass(kw_only=True, slots=True)
class ChainTake:
    """A worker's offer to run at once the unit of work its outcome's chain starts
    (:func:`settle_uows`): ``claim`` is its claim of a unit of work (:func:`claim_change`);
    the units of work written claimed for it are added to ``taken``."""

    claim: Callable[[UnitOfWork], UowChange]
    taken: list[UnitOfWork] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True, slots=True)
class UowChange:
    """One change of :func:`change_uows`: what :func:`change_uow` takes besides the store,
    the clock and the actor."""

    uow: UnitOfWork
    trigger: str
    reason: str = ""
    facts: Mapping[str, Any] | None = None
    changes: Mapping[str, Any] | None = None
    details: Mapping[str, Any] | None = None
    check_version: bool = False
    #: Who asks for this change, when not the actor of the call that writes it (the changes
    #: of several executors' requests written in one commit each name their own).
    actor: str | None = None


def claim_change(
    uow: UnitOfWork,
    *,
    worker_id: str,
    box_id: str,
    pid: int,
    now: datetime,
    details: Mapping[str, Any],
) -> UowChange:
    """The ``claim`` of ``uow`` (``requested -> in_progress``) by a worker or an executor: who
    and where runs it from now, what a previous attempt's end left cleared."""
    return UowChange(
        uow=uow,
        trigger="claim",
        changes={
            "worker_id": worker_id,
            "box_id": box_id,
            "pid": pid,
            "started_at": now,
            "heartbeat_at": now,
            "finished_at": None,
            "exit_code": None,
            "output": None,
            "error": None,
        },
        details=details,
    )


def change_uows(
    store: Store,
    requests: Sequence[UowChange],
    *,
    clock: Clock,
    actor: str,
    announce: Announce | None = None,
    lookahead: chain.Lookahead | None = None,
) -> list[UnitOfWork | TransitionRefused | NotFound | StateConflict]:
    """Several unit-of-work changes written together (:meth:`~db.store.Store.transition_uows`:
    one commit on SQL): each is decided by the machine and applied or refused on its own, as
    :func:`change_uow` would. A worker finishes one unit of work and claims the next this way.

    With ``lookahead`` (a worker's :class:`db.chain.Lookahead`), an outcome that makes a
    catch-up's next period certain moves it on in the same commit (:mod:`db.chain`), and
    ``announce`` publishes the unit of work it started after the commit.

    Returns:
        In the order of ``requests``: the unit of work as stored, or the
        :class:`~db.errors.TransitionRefused`, :class:`~db.errors.StateConflict` or
        :class:`~db.errors.NotFound` that refused it (nothing of it was written). There is no
        ``after_commit``: the caller acts on the results once this returns, after the commit.
    """
    results, steps, positions = _decided_uows(requests, clock=clock, actor=actor)
    if steps:
        steps, heard = _with_flows(store, steps, requests, positions, actor=actor)
        steps, lines = _with_chains(store, steps, requests, positions, lookahead, clock=clock)
        stored = _flows_settled(store, steps, store.transition_uows(steps), clock, actor, heard)
        _stored_uows(results, positions, steps, stored)
        chained = _chained(store, steps, stored, lines, lookahead)
        flows.announced(announce, [*heard, *chained])
    return [result for result in results if result is not None]


def settle_uows(
    store: QueueStore,
    requests: Sequence[UowChange],
    settlement: QueueSettlement,
    *,
    clock: Clock,
    actor: str,
    announce: Announce | None = None,
    messages: Callable[[Sequence[UnitOfWork]], Sequence[tuple[str, bytes]]] | None = None,
    lookahead: chain.Lookahead | None = None,
    take: ChainTake | None = None,
) -> tuple[list[UnitOfWork | TransitionRefused | NotFound | StateConflict], QueueSettled]:
    """:func:`change_uows` with the embedded-queue writes of ``settlement`` in the same commit
    (:meth:`~db.store.QueueStore.settle_uows`): a worker on the store queue records an outcome,
    claims the next unit of work, acks its delivery and sends the status at once. The queue
    writes are done even when every change is refused.

    With ``messages`` (the (queue, body) announcing units of work), what a step's end releases
    is announced in that same commit too: no commit of its own, and no window between the
    outcome and the announcement. What a group planned again after the commit releases is
    announced by ``announce`` (a message put for a step whose group was refused is harmless: a
    worker ignores a delivery of a unit of work that is not requested).

    With ``lookahead``, a catch-up's next period moves on in the same commit, as in
    :func:`change_uows`; with ``messages`` too, its announcement is part of that move (put
    only if the move is written), else ``announce`` publishes it after the commit. With
    ``take`` (and ``messages``), the worker claims that unit of work in the same commit too,
    and finds it in ``take.taken`` once written."""
    results, steps, positions = _decided_uows(requests, clock=clock, actor=actor)
    steps, heard = _with_flows(store, steps, requests, positions, actor=actor)
    steps, lines = _with_chains(
        store,
        steps,
        requests,
        positions,
        lookahead,
        clock=clock,
        messages=messages,
        put_at=settlement.now,
        take=take if messages is not None else None,
    )
    in_commit = {id(u) for u in heard} if messages is not None else set()
    if in_commit and messages is not None:
        settlement = replace(settlement, put=(*settlement.put, *messages(heard)))
    stored, settled = store.settle_uows(steps, settlement)
    stored = _flows_settled(store, steps, stored, clock, actor, heard)
    _stored_uows(results, positions, steps, stored)
    chained = _chained(store, steps, stored, lines, lookahead, settled.chained)
    if take is not None:
        take.taken.extend(u for u in chained if u.state is UowState.IN_PROGRESS)
    later = [u for u in heard if id(u) not in in_commit]
    flows.announced(announce, later if messages is not None else [*later, *chained])
    return [result for result in results if result is not None], settled


def _with_chains(
    store: Store,
    steps: list[UowTransition],
    requests: Sequence[UowChange],
    positions: list[int],
    lookahead: chain.Lookahead | None,
    *,
    clock: Clock,
    messages: Callable[[Sequence[UnitOfWork]], Sequence[tuple[str, bytes]]] | None = None,
    put_at: datetime | None = None,
    take: ChainTake | None = None,
) -> tuple[list[UowTransition], dict[int, chain.NextInLine]]:
    """Each step whose outcome makes a catch-up's next period certain, with the job moves it
    allows (:mod:`db.chain`) and, with ``messages``, the announcement of the unit of work it
    starts (available at ``put_at``); only where the store writes them in the step's
    transaction. Returns the steps, and the decision behind each chain by the step's index."""
    lines: dict[int, chain.NextInLine] = {}
    if lookahead is None or not store.atomic_groups:
        return steps, lines
    out = []
    for step, position in zip(steps, positions, strict=True):
        uow = requests[position].uow
        line = None
        if step.new_state in chain.SUCCESSES and not step.together:
            line = lookahead.next_in_line(store, uow, step.new_state, step.event.at)
        if line is not None:
            try:
                link = _chain_of(line, uow, step, clock=clock)
            except TransitionRefused as exc:
                log.debug("uow %s: no chain: %s", uow.id, exc)
            else:
                if messages is not None:
                    link = replace(link, put=tuple(messages([link.start.uow])), put_at=put_at)
                if take is not None:
                    link = _taken(link, take, clock=clock)
                step = replace(step, chain=link)
                lines[len(out)] = line
        out.append(step)
    return out, lines


def _chain_of(
    line: chain.NextInLine,
    uow: UnitOfWork,
    step: UowTransition,
    *,
    clock: Clock,
) -> JobChain:
    """Step 1 of a chain's moves: the machine decides both (as the scheduler's look would,
    with the same reasons), and the next period's unit of work over its whole period."""
    actor, entry = step.event.actor, line.entry
    finish = _job_step(
        JobChange(
            job=line.job,
            trigger=line.trigger,
            state_machine=entry.state_machine,
            reason=f"unit of work {uow.id} {step.new_state}",
            facts=line.finish_facts,
            check_version=True,
        ),
        clock=clock,
        actor=actor,
    )
    period = timeperiod_of(line.following)
    start = _prepared_start(
        JobStartRequest(
            job=line.following,
            trigger=line.start_trigger,
            entry=entry,
            start=str(period),
            end=str(period.next()),
            reason=line.start_reason,
            facts=line.start_facts,
        ),
        clock=clock,
        actor=actor,
    )
    return JobChain(finish=finish, start=start)


def _taken(link: JobChain, take: ChainTake, *, clock: Clock) -> JobChain:
    """``link`` with its unit of work claimed by ``take``'s worker: decided by the machine as
    any claim, stored in progress after its creation event."""
    uow = link.start.uow
    claim = _uow_step(take.claim(uow), clock=clock, actor=link.start.event.actor)
    claimed = replace(
        uow,
        **dict(claim.changes or {}),
        state=UowState(claim.new_state),
        version=uow.version + 1,
        updated_at=claim.event.at,
    )
    return replace(link, start=replace(link.start, uow=claimed), claim_event=claim.event)


def _chained(
    store: Store,
    steps: list[UowTransition],
    stored: Sequence[UnitOfWork | NotFound | StateConflict],
    lines: dict[int, chain.NextInLine],
    lookahead: chain.Lookahead | None,
    written: Sequence[str] | None = None,
) -> list[UnitOfWork]:
    """Steps 2 and 3 of the chains written with their steps: which were (``written``, the
    ids the store says it started; None: read back), their log lines, and the units of work
    they started (a chain the store left out because a job moved meanwhile started none); the
    ``lookahead`` learns what each started."""
    started = []
    for index, (step, answer) in enumerate(zip(steps, stored, strict=True)):
        link = step.chain
        if link is None or not isinstance(answer, UnitOfWork):
            continue
        uow: UnitOfWork | None = link.start.uow
        if written is None:
            try:
                uow = store.get_uow(link.start.uow.id)
            except NotFound:
                uow = None
        elif link.start.uow.id not in written:
            uow = None
        if uow is None:
            log.info("uow %s: the next period moved meanwhile; left to the scheduler", answer.id)
            continue
        _logged("job", f"{link.finish.process}/{link.finish.timeperiod}", link.finish.event)
        _logged("job", f"{link.start.process}/{link.start.timeperiod}", link.start.event)
        _logged("uow", uow.id, link.start.uow_event)
        if link.claim_event is not None:
            _logged("uow", uow.id, link.claim_event)
        started.append(uow)
        if lookahead is not None:
            lookahead.written(lines[index], link.start)
    return started


def _with_flows(
    store: Store,
    steps: list[UowTransition],
    requests: Sequence[UowChange],
    positions: list[int],
    *,
    actor: str,
) -> tuple[list[UowTransition], list[UnitOfWork]]:
    """Each change that ends a step of a flow run, grouped with the flow's changes it makes
    possible where the store writes a group in one transaction (db.flows); and the units of
    work those changes will have to announce."""
    heard: list[UnitOfWork] = []
    if not store.atomic_groups:
        return steps, heard
    out = []
    for step, position in zip(steps, positions, strict=True):
        uow = requests[position].uow
        if flows.ends_a_step(uow, step.new_state):
            try:
                step, announce = flows.group_for(store, step, uow, at=step.event.at, actor=actor)
            except NotFound:
                log.warning("uow %s: its flow run %s is gone", uow.id, uow.parent)
            else:
                heard.extend(announce)
        out.append(step)
    return out, heard


def _flows_settled(
    store: Store,
    steps: list[UowTransition],
    stored: Sequence[UnitOfWork | NotFound | StateConflict],
    clock: Clock,
    actor: str,
    heard: list[UnitOfWork],
) -> list[UnitOfWork | NotFound | StateConflict]:
    """After the write: a step's group refused because its flow moved meanwhile (another step
    ended at the same time) is planned again from what is stored and written alone; on a
    backend without such groups the flow of each step that ended is reconciled."""
    out = list(stored)
    for i, (step, answer) in enumerate(zip(steps, stored, strict=True)):
        if step.together and isinstance(answer, StateConflict):
            planned = [u for u in heard if u.id in {t.uow_id for t in step.together}]
            for u in planned:
                heard.remove(u)
            out[i] = _regrouped(store, step, answer, actor, heard)
        elif (
            not store.atomic_groups
            and isinstance(answer, UnitOfWork)
            and flows.ends_a_step(answer, answer.state)
        ):
            heard.extend(flows.reconcile(store, answer.parent or "", clock=clock, actor=actor))
    return out


def _regrouped(
    store: Store, step: UowTransition, refused: StateConflict, actor: str, heard: list[UnitOfWork]
) -> UnitOfWork | NotFound | StateConflict:
    for _ in range(50):
        try:
            fresh = store.get_uow(step.uow_id)
        except NotFound as exc:
            return exc
        if fresh.state is not step.expected_state or (
            step.expected_version is not None and fresh.version != step.expected_version
        ):
            return refused  # the step itself changed: a lost race, as without flows
        try:
            group, announce = flows.group_for(
                store, replace(step, together=()), fresh, at=step.event.at, actor=actor
            )
        except NotFound as exc:
            return exc
        (answer,) = store.transition_uows([group])
        if not isinstance(answer, StateConflict):
            if isinstance(answer, UnitOfWork):
                heard.extend(announce)
            return answer
        refused = answer
    return refused


_UowResults = list["UnitOfWork | TransitionRefused | NotFound | StateConflict | None"]


def _decided_uows(
    requests: Sequence[UowChange], *, clock: Clock, actor: str
) -> tuple[_UowResults, list[UowTransition], list[int]]:
    """Step 1 for each request: the refusals in place, and the steps to write with the
    positions of their requests."""

    return _decide_all(requests, lambda request: _uow_step(request, clock=clock, actor=actor))


def _uow_step(request: UowChange, *, clock: Clock, actor: str) -> UowTransition:
    """Step 1 of a unit-of-work change: the machine's decision, as the store's
    compare-and-set (the request's own actor, if it names one, else ``actor``)."""
    uow = request.uow
    dest, event = _decided(
        UOW_MACHINE,
        "uow",
        uow.id,
        uow.state,
        request.trigger,
        clock=clock,
        actor=request.actor or actor,
        reason=request.reason,
        facts={"attempts_remain": uow.attempt <= uow.retries, **dict(request.facts or {})},
        details=request.details,
    )
    return UowTransition(
        uow_id=uow.id,
        expected_state=uow.state,
        new_state=dest,
        event=event,
        changes=request.changes,
        expected_version=uow.version if request.check_version else None,
    )


R = TypeVar("R")
S = TypeVar("S")


def _decide_all(
    requests: Sequence[R], step_of: Callable[[R], S]
) -> tuple[list[Any], list[S], list[int]]:
    """Step 1 of several changes: each request's step (``step_of``: the machine decides), or
    the TransitionRefused in its place; returns (results with the refusals, the steps, the
    positions of their requests)."""
    results: list[Any] = [None] * len(requests)
    steps: list[S] = []
    positions: list[int] = []
    for position, request in enumerate(requests):
        try:
            steps.append(step_of(request))
        except TransitionRefused as exc:
            results[position] = exc
            continue
        positions.append(position)
    return results, steps, positions


def _stored_uows(
    results: _UowResults,
    positions: list[int],
    steps: list[UowTransition],
    stored: Sequence[UnitOfWork | NotFound | StateConflict],
) -> None:
    """Steps 2 and 3: the store's answers in place, a log line for each change made."""
    for position, step, answer in zip(positions, steps, stored, strict=True):
        results[position] = answer
        if isinstance(answer, UnitOfWork):
            _logged("uow", step.uow_id, step.event)


def change_supervised(
    store: Store,
    record: SupervisedProcess,
    trigger: str,
    *,
    clock: Clock,
    actor: str,
    reason: str = "",
    facts: Mapping[str, Any] | None = None,
    changes: Mapping[str, Any] | None = None,
    details: Mapping[str, Any] | None = None,
    after_commit: Callable[[SupervisedProcess], None] | None = None,
) -> SupervisedProcess:
    """Move a supervised process by ``trigger`` and persist it; see :func:`change_job`.

    Raises:
        TransitionRefused: the machine does not allow it; nothing was written.
        StateConflict: another actor changed it first; nothing was written.
    """
    return _change(
        SUPERVISED_MACHINE,
        "supervised",
        record.key,
        record.state,
        trigger,
        clock=clock,
        actor=actor,
        reason=reason,
        facts=dict(facts or {}),
        details=details,
        persist=lambda dest, event: store.transition_supervised(
            record.box_id,
            record.process,
            expected_state=record.state,
            new_state=dest,
            changes=changes,
            event=event,
        ),
        after_commit=after_commit,
    )
