"""Executors (SPEC section 11): workers that reach Tactus only over HTTP, the server's side.

An executor has no access to the store or the broker. It long-polls ``POST
/api/v1/executor/claim`` (:mod:`mx.api.executor`), and this module hands it the oldest due
``requested`` unit of work of its processes that its box may run, claimed with the very
compare-and-set every worker makes (``requested -> in_progress`` through the funnel,
:func:`db.state_change.change_uows`): of an executor, another executor and a local worker
racing for one unit of work exactly one wins, and the losers go on to the next candidate.

The claim reads the store; it does not consume the broker. The message that announced the unit
of work stays in the process's queue: a local worker of the process that receives it finds the
unit of work no longer requested and acks it as the duplicate it is (workers/slot.py, step 2),
as it does after any redelivery. A process served by executors alone has no consumer, so its
queue keeps those small id messages until a local worker runs (docs/executors.md).

Each executor is one :class:`~db.models.WorkerRecord`, its id prefixed with
:data:`EXECUTOR_PREFIX` (``kind: "http"`` in ``GET /api/v1/workers``), ``concurrency`` its
slots. Every claim and every heartbeat beats it; an executor silent for ``heartbeat_interval *
heartbeat_misses`` is lost by the scheduler's liveness rules (:mod:`db.liveness`), its units of
work invalid and retried, its record removed after ``worker_retention``.

The lease that the claim hands out (:mod:`mx.services.leases`) is the claim's identity as
stored: the executor's worker id, the attempt and ``started_at``.
"""

from __future__ import annotations

import base64
import logging
import random
import re
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from db import flows
from db.errors import InvalidInput, NotFound, StateConflict, TactusError, TransitionRefused
from db.models import QueueSettlement, UnitOfWork, UowQuery, WorkerRecord
from db.placement import runs_on
from db.state_change import UowChange, change_uow, change_uows, claim_change, settle_uows
from db.states import ProcessKind, UowKind, UowState, WorkerState
from mx.services import validate
from mx.services.leases import lease_of, tell
from mx.services.serialize import EXECUTOR_PREFIX

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from datetime import datetime

    from db.models import ProcessEntry
    from db.store import Store
    from mx.services.context import ServiceContext

    #: Writes the changes of a claim (with an outcome's, and the status messages of the embedded
    #: store queue) in one commit: (context, changes, messages, whether to announce what a flow's
    #: change releases) -> what became of each change, in their order.
    Commit = Callable[
        [ServiceContext, Sequence[UowChange], Sequence[tuple[str, bytes]], bool],
        list[UnitOfWork | TactusError],
    ]

log = logging.getLogger(f"tactus.{__name__}")

#: Longest long-poll of a claim, in seconds (SPEC section 11).
MAX_WAIT = 30.0
#: Requested units of work one look reads at most (per process when the executor names its
#: processes), a page of :data:`PAGE` at a time.
CANDIDATES = 200
PAGE = 16
#: The first candidates are tried in a random order, so that many executors claiming at once
#: spread over the oldest units of work instead of all racing for the first.
SPREAD = 8
#: Looks one claim takes at most (one more after each look that expanded a flow run).
LOOKS = 3
#: A settlement of the store queue that claims no message still names a visibility.
NO_CLAIM = timedelta(seconds=60)
#: An executor's name and the instance part of its id: what a token name may hold.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: Most slots an executor may declare.
MAX_SLOTS = 1000
#: The fields a claim's body may hold.
CLAIM_FIELDS = ("name", "box", "instance", "slots", "processes", "pid", "running", "wait")
#: Seconds a read of a process's entry serves the claims after it (as a local worker's
#: :data:`workers.runner.ENTRY_REFRESH`): an edit reaches the claims made this long after it.
ENTRY_REFRESH = 1.0
#: Seconds the first page of candidates read by a claim serves the claims after it: while work
#: flows, one read of candidates serves a page of claims instead of one. A unit of work
#: requested since (newer, so later in the order) is seen once the page is used up or this old.
CANDIDATES_REFRESH = 0.25
#: Seconds a candidate handed to a claim is left out of the pages read again, at the most (a
#: claim writes it or passes it over well within that).
TAKEN_HOLD = 5.0


def is_executor(worker_id: str) -> bool:
    """Whether a worker record is an executor's."""
    return worker_id.startswith(EXECUTOR_PREFIX)


@dataclass(frozen=True, kw_only=True, slots=True)
class Executor:
    """Who claims: an executor as its requests describe it."""

    #: ``--name`` (the host name by default).
    name: str
    #: The box it runs on, matched against the processes' ``boxes``.
    box_id: str
    #: Tells apart two runs of one executor (its pid and a random part).
    instance: str
    slots: int = 1
    #: Processes it runs; empty: every process whose boxes allow its box.
    processes: tuple[str, ...] = ()
    #: Its pid on its own box (shown only).
    pid: int = 0
    #: Units of work it runs now, as it says.
    running: tuple[str, ...] = ()

    @property
    def worker_id(self) -> str:
        return f"{EXECUTOR_PREFIX}{self.name}@{self.box_id}:{self.instance}"

    @property
    def label(self) -> str:
        """Its record's ``process``: the processes it runs, ``*`` for every one."""
        text = ",".join(self.processes) or "*"
        return text if len(text) <= validate.MAX_NAME else text[: validate.MAX_NAME - 1] + "+"

    def serves(self, process: str) -> bool:
        return not self.processes or process in self.processes


def executor_from(body: Mapping[str, Any]) -> Executor:
    """The executor a claim's body describes.

    Raises:
        InvalidInput: an unknown field, or a bad value (the field is named).
    """
    validate.only_fields(body, CLAIM_FIELDS)
    processes = body.get("processes", [])
    if not isinstance(processes, list) or len(processes) > 1000:
        raise InvalidInput("processes", "must be a list of process names")
    running = body.get("running", [])
    if not isinstance(running, list) or len(running) > MAX_SLOTS:
        raise InvalidInput("running", "must be a list of unit-of-work ids")
    slots = validate.whole(body.get("slots", 1))
    if not isinstance(slots, int) or isinstance(slots, bool) or not 1 <= slots <= MAX_SLOTS:
        raise InvalidInput("slots", f"must be an integer from 1 to {MAX_SLOTS}")
    pid = validate.whole(body.get("pid", 0))
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 <= pid < 2**31:
        raise InvalidInput("pid", "must be a process id")
    box = body.get("box")
    if not isinstance(box, str) or not box or len(box) > 100:
        raise InvalidInput("box", "must be the executor's box id (1 to 100 characters)")
    return Executor(
        name=_name(body.get("name"), "name"),
        box_id=validate.text("box", box),
        instance=_name(body.get("instance"), "instance"),
        slots=slots,
        processes=tuple(dict.fromkeys(validate.process_name(p, "processes") for p in processes)),
        pid=pid,
        running=tuple(validate.identifier(u, "running") for u in running),
    )


def count_of(body: Mapping[str, Any], executor: Executor) -> int:
    """How many units of work a claim asks for: ``count``, 1 to the executor's ``slots``
    (absent: 1).

    Raises:
        InvalidInput: field ``count``.
    """
    count = validate.whole(body.get("count", 1))
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= executor.slots:
        raise InvalidInput("count", f"must be an integer from 1 to slots ({executor.slots})")
    return count


def wait_of(body: Mapping[str, Any]) -> float:
    """How long a claim may wait for a unit of work: ``wait`` seconds, 0 to :data:`MAX_WAIT`
    (absent: 0, answer at once).

    Raises:
        InvalidInput: field ``wait``.
    """
    wait = body.get("wait", 0)
    if not isinstance(wait, int | float) or isinstance(wait, bool) or not 0 <= wait <= MAX_WAIT:
        raise InvalidInput("wait", f"must be a number of seconds from 0 to {MAX_WAIT:g}")
    return float(wait)


def _name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise InvalidInput(field, "must be 1 to 64 letters, digits or _ . -")
    return value


# -- the registry ----------------------------------------------------------------------------------


class RecentBeats:
    """When mx last beat each executor's record (monotonic seconds), so that its many requests
    (a claim per slot, a heartbeat per unit of work) write one beat an interval, not one
    each. Bounded; per mx process (another mx beats on its own)."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def due(self, worker_id: str, interval: float) -> bool:
        """Whether to beat now (and if so, it counts as beaten)."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(worker_id)
            if last is not None and now - last < interval / 2:
                return False
            self._last.pop(worker_id, None)
            self._last[worker_id] = now
            while len(self._last) > self.size:
                self._last.pop(next(iter(self._last)))
            return True


def check_in(store: Store, executor: Executor, now: datetime) -> None:
    """Beat the executor's record, registering it on its first request (or again after its
    record was removed)."""
    current = executor.running[0] if executor.running else None
    try:
        store.beat_worker(executor.worker_id, now, current_uow=current)
        return
    except NotFound:
        pass
    store.save_worker(
        WorkerRecord(
            worker_id=executor.worker_id,
            process=executor.label,
            box_id=executor.box_id,
            pid=executor.pid,
            started_at=now,
            heartbeat_at=now,
            current_uow=current,
            concurrency=executor.slots,
        )
    )
    log.info(
        "executor %s: registered (%d slot(s), processes %s)",
        executor.worker_id,
        executor.slots,
        executor.label,
    )


def beat(store: Store, worker_id: str, now: datetime, current_uow: str | None) -> None:
    """Beat an executor's record (a heartbeat of one of its units of work)."""
    try:
        store.beat_worker(worker_id, now, current_uow=current_uow)
    except NotFound:
        pass  # removed after it was lost: its next claim registers it again


def leave(store: Store, executor: Executor) -> bool:
    """The executor stopped (after its drain): its record says ``stopped``.

    Returns:
        Whether this call changed it.
    """
    changed = False
    for state in (WorkerState.ALIVE, WorkerState.LOST):
        changed = changed or store.set_worker_state(
            executor.worker_id, WorkerState.STOPPED, expected_state=state
        )
    if changed:
        log.info("executor %s: stopped", executor.worker_id)
    return changed


# -- the claim -------------------------------------------------------------------------------------


class Entries:
    """The entries that run the processes' units of work as claims read them, each read again
    once :data:`ENTRY_REFRESH` old; shared by the claims of one mx process (a claim per unit of
    work would otherwise read its process each time). A daemon's or a missing process's entry
    is None: an executor claims none of its units of work."""

    def __init__(self, refresh: float = ENTRY_REFRESH, size: int = 10_000) -> None:
        self.refresh = refresh
        self.size = size
        self._read: dict[str, tuple[float, ProcessEntry | None]] = {}
        self._lock = threading.Lock()

    def get(self, store: Store, process: str) -> ProcessEntry | None:
        """The entry of ``process``, from memory while fresh, else from the store."""
        now = time.monotonic()
        with self._lock:
            found = self._read.get(process)
        if found is not None and now - found[0] < self.refresh:
            return found[1]
        try:
            entry: ProcessEntry | None = store.get_process(process).entry
        except NotFound:
            entry = None
        if entry is not None and entry.kind is ProcessKind.DAEMON:
            entry = None
        with self._lock:
            self._read.pop(process, None)
            self._read[process] = (now, entry)
            while len(self._read) > self.size:
                self._read.pop(next(iter(self._read)))
        return entry


class Candidates:
    """The first page of candidates of each process filter as a claim read it, shared by the
    claims of one mx process until it is :data:`CANDIDATES_REFRESH` old or used up. Each
    candidate is handed to one claim only (:meth:`take`): claims made at once, whose writes go
    in one commit (:class:`GroupCommit`), try different units of work, and a page read again
    leaves out those handed out and not yet written (:meth:`settled`). A candidate that changed
    since it was read is refused by the claim's compare-and-set on its version (the next one
    is tried): this memory changes which units of work a claim tries first, never what a claim
    may do."""

    def __init__(self, refresh: float = CANDIDATES_REFRESH) -> None:
        self.refresh = refresh
        self._pages: dict[tuple[str, ...], tuple[float, list[UnitOfWork]]] = {}
        #: Candidates handed to a claim and not yet written, and since when (monotonic).
        self._taken: dict[str, float] = {}
        self._lock = threading.Lock()

    def take(self, key: tuple[str, ...], page: float | None = None) -> UnitOfWork | None:
        """The next candidate of the page kept for ``key`` while it is fresh, or while it is
        the page kept at ``page`` (:meth:`keep`'s answer); None: none left."""
        now = time.monotonic()
        with self._lock:
            found = self._pages.get(key)
            if found is None or not found[1]:
                return None
            if found[0] != page and now - found[0] >= self.refresh:
                return None
            uow = found[1].pop(0)
            self._taken[uow.id] = now
            return uow

    def keep(self, key: tuple[str, ...], page: list[UnitOfWork]) -> float:
        """Keep ``page`` for ``key`` (less the candidates handed out meanwhile); returns its
        stamp, for :meth:`take`."""
        now = time.monotonic()
        with self._lock:
            for uow_id, since in list(self._taken.items()):
                if now - since > TAKEN_HOLD:
                    del self._taken[uow_id]
            self._pages[key] = (now, [u for u in page if u.id not in self._taken])
        return now

    def settled(self, uow_ids: set[str]) -> None:
        """The candidates ``uow_ids`` were written (won or lost) or passed over."""
        with self._lock:
            for uow_id in uow_ids:
                self._taken.pop(uow_id, None)

    def handed_out(self, uow_id: str) -> bool:
        """Whether a claim holds ``uow_id`` now (taken and not yet written)."""
        with self._lock:
            return uow_id in self._taken


@dataclass(frozen=True, slots=True)
class Memory:
    """What the claims of one mx process share: the processes' entries, the candidates, and
    the units of work as its claims wrote them."""

    entries: Entries = field(default_factory=Entries)
    candidates: Candidates = field(default_factory=Candidates)
    claimed: Claimed = field(default_factory=lambda: Claimed())


class Claimed:
    """The units of work as this mx's claims wrote them, each until its outcome or heartbeat
    comes (:meth:`take`): an outcome is written against it instead of a read of the store.
    One that changed since (another mx's heartbeat, the liveness rules, a cancel) is refused
    by the outcome's compare-and-set on its version, and the outcome is recorded again after a
    read (:func:`mx.services.leases.record_outcomes`): this memory saves a read, it never
    decides what an outcome may do. Bounded, the oldest dropped first."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._uows: dict[str, UnitOfWork] = {}
        self._lock = threading.Lock()

    def remember(self, uow: UnitOfWork) -> None:
        with self._lock:
            self._uows[uow.id] = uow
            while len(self._uows) > self.size:
                self._uows.pop(next(iter(self._uows)))

    def take(self, uow_id: str) -> UnitOfWork | None:
        """The unit of work as the claim wrote it, forgotten here; None: not remembered."""
        with self._lock:
            return self._uows.pop(uow_id, None)


def commit_alone(
    ctx: ServiceContext,
    requests: Sequence[UowChange],
    notices: Sequence[tuple[str, bytes]],
    announce: bool,
) -> list[UnitOfWork | TactusError]:
    """Write ``requests`` (and ``notices``, in the store queue) in one commit of their own."""
    told = ctx.announce_all if announce else None
    if notices:
        settlement = QueueSettlement(
            consumer="mx", put=tuple(notices), now=ctx.clock.now(), visibility=NO_CLAIM
        )
        written, _ = settle_uows(
            ctx.store, requests, settlement, clock=ctx.clock, actor=ctx.actor, announce=told
        )
        return list(written)
    return list(change_uows(ctx.store, requests, clock=ctx.clock, actor=ctx.actor, announce=told))


@dataclass(slots=True)
class _Job:
    """The writes one request thread asks :class:`GroupCommit` for."""

    ctx: ServiceContext
    requests: list[UowChange]
    notices: tuple[tuple[str, bytes], ...]
    announce: bool
    results: list[UnitOfWork | TactusError] | None = None
    error: BaseException | None = None

    @property
    def groups(self) -> bool:
        """Whether it may share a commit: no step of a flow run (what a step's change does to
        its flow is written under one actor, so a step's change is written alone)."""
        return all(r.uow.parent is None and not r.uow.flow for r in self.requests)


class GroupCommit:
    """The commits that mx's request threads ask for at once (claims, outcomes with the next
    claims), written together: one store transaction and one commit for what several
    executors' requests ask meanwhile.

    A thread that asks (:meth:`write`) queues its writes and takes :attr:`lock`; the first to
    get it writes every queued request's changes in one commit, and the others find theirs
    written when they get it in turn (flat combining). Each change keeps its actor (the
    executor that asked) and its own compare-and-set: two claims of one unit of work in one
    commit are one claim won and one refused (StateConflict), as in two commits. A commit that
    fails is tried again request by request, so that each request gets its own answer.
    """

    def __init__(self, commit: Commit = commit_alone) -> None:
        #: Held by the thread that writes: a store with one writer (SQLite) makes a waiting
        #: writer sleep in growing steps, so mx's own threads queue here instead.
        self.lock = threading.Lock()
        self._commit = commit
        self._queued: list[_Job] = []
        self._queue_lock = threading.Lock()
        #: Commits made, and requests written in them (for tests and logs).
        self.commits = 0
        self.requests = 0

    def write(
        self,
        ctx: ServiceContext,
        requests: Sequence[UowChange],
        notices: Sequence[tuple[str, bytes]] = (),
        announce: bool = False,
    ) -> list[UnitOfWork | TactusError]:
        """Write ``requests`` (and ``notices``) with what other threads ask meanwhile;
        what became of each of ``requests``, in their order (as :func:`commit_alone`)."""
        job = _Job(ctx, list(requests), tuple(notices), announce)
        with self._queue_lock:
            self._queued.append(job)
        with self.lock:
            if job.results is None and job.error is None:
                with self._queue_lock:
                    jobs, self._queued = self._queued, []
                together = [j for j in jobs if j.groups]
                if together:
                    self._write(together)
                for alone in (j for j in jobs if not j.groups):
                    self._write([alone])
        if job.error is not None:
            raise job.error
        assert job.results is not None
        return job.results

    def _write(self, jobs: list[_Job]) -> None:
        requests = [
            replace(r, actor=r.actor or j.ctx.actor) if len(jobs) > 1 else r
            for j in jobs
            for r in j.requests
        ]
        notices = [n for j in jobs for n in j.notices]
        try:
            written = self._commit(jobs[0].ctx, requests, notices, any(j.announce for j in jobs))
        except Exception as exc:
            if len(jobs) > 1:  # nothing was written: each request alone, with its own answer
                for job in jobs:
                    self._write([job])
                return
            jobs[0].error = exc
            return
        self.commits += 1
        self.requests += len(jobs)
        at = 0
        for job in jobs:
            job.results = written[at : at + len(job.requests)]
            at += len(job.requests)


def claim_next(
    ctx: ServiceContext,
    executor: Executor,
    *,
    heartbeat_interval: float,
    memory: Memory | None = None,
    commit: Commit = commit_alone,
) -> dict[str, Any] | None:
    """Claim the oldest due requested unit of work the executor may run, if any.

    A flow run among the candidates is expanded here (as the first worker that receives it
    does), and its root steps become candidates of the next look.

    Returns:
        The claim (SPEC section 11: ``uow_id``, ``lease``, ``process``, ``step``, ``command``
        or ``worker``, ``arguments``, ``timeout``, ``attempt``, and what the executor's shell
        driver and worker classes need besides), or None when nothing is due.
    """
    claim, _ = claim_with(
        ctx, executor, (), heartbeat_interval=heartbeat_interval, memory=memory, commit=commit
    )
    return claim


def claim_with(
    ctx: ServiceContext,
    executor: Executor,
    changes: Sequence[UowChange],
    *,
    heartbeat_interval: float,
    notices: Sequence[tuple[str, bytes]] = (),
    memory: Memory | None = None,
    commit: Commit = commit_alone,
) -> tuple[dict[str, Any] | None, list[UnitOfWork | TactusError]]:
    """:func:`claim_next`, with ``changes`` (the outcome of the executor's previous unit of
    work) written in the commit of the first claim tried, as a worker records an outcome
    with the claim of its next unit of work; alone when there is nothing to claim. Each change
    applies or is refused on its own (:func:`db.state_change.change_uows`).

    Args:
        notices: (queue, body) messages of the embedded store queue to put in that same
            commit (the outcome's status message; :func:`db.state_change.settle_uows`), as a
            worker on the store queue does; empty on another broker.
        memory: what mx's claims share (the processes' entries, the candidates read lately);
            None: this claim's own, read from the store.
        commit: writes each commit (:class:`GroupCommit`'s ``write``: with other requests'
            claims and outcomes).

    Returns:
        (the claim or None, what became of each of ``changes``, in their order).
    """
    claims, carried = claim_many(
        ctx,
        executor,
        changes,
        count=1,
        heartbeat_interval=heartbeat_interval,
        notices=notices,
        memory=memory,
        commit=commit,
    )
    return (claims[0] if claims else None), carried


def claim_many(
    ctx: ServiceContext,
    executor: Executor | None,
    changes: Sequence[UowChange],
    *,
    count: int,
    heartbeat_interval: float,
    notices: Sequence[tuple[str, bytes]] = (),
    memory: Memory | None = None,
    commit: Commit = commit_alone,
) -> tuple[list[dict[str, Any]], list[UnitOfWork | TactusError]]:
    """:func:`claim_with` for up to ``count`` units of work (an executor's free slots): the
    candidates it may run are claimed together in one commit (the carried ``changes`` and
    ``notices`` in the first), each with its own compare-and-set; those lost to another
    claimer are replaced by the next candidates. ``count`` 0 (``executor`` may then be None):
    the carried changes alone.

    Returns:
        (the claims, oldest first, at most ``count``; what became of each of ``changes``).
    """
    carry, carried = _Carry(list(changes), tuple(notices), commit), []
    memory = memory if memory is not None else Memory(candidates=Candidates(refresh=0.0))
    claims: list[dict[str, Any]] = []
    for _ in range(LOOKS if count > 0 else 0):
        if executor is None:
            raise ValueError("claim_many: an executor is needed to claim")
        expanded = _look(ctx, executor, memory, heartbeat_interval, carry, carried, claims, count)
        if len(claims) >= count or not expanded:
            break
        # a flow run was expanded: its root steps are candidates of the next look
    if carry.changes:
        carried = carry.write(ctx, [])
    return claims, carried


@dataclass(slots=True)
class _Carry:
    """What goes with the first claim tried: an outcome, and its status on the store queue."""

    changes: list[UowChange]
    notices: tuple[tuple[str, bytes], ...]
    commit: Commit

    def write(self, ctx: ServiceContext, claims: list[UowChange]) -> list[UnitOfWork | TactusError]:
        """Write the carried changes with ``claims`` (then nothing is carried any more)."""
        requests = [*self.changes, *claims]
        written = self.commit(ctx, requests, self.notices, bool(self.changes))
        self.changes, self.notices = [], ()
        return written


def _look(
    ctx: ServiceContext,
    executor: Executor,
    memory: Memory,
    heartbeat_interval: float,
    carry: _Carry,
    carried: list[UnitOfWork | TactusError],
    claims: list[dict[str, Any]],
    count: int,
) -> bool:
    """One look at the candidates, adding to ``claims`` until it holds ``count``; returns
    whether a flow run was expanded. The first claims tried take ``carry`` along (emptied;
    their results in ``carried``)."""
    store = ctx.store
    now = ctx.clock.now()
    expanded = False
    batch: list[tuple[UowChange, ProcessEntry]] = []
    for uow in _candidates(store, executor, memory.candidates, page=max(PAGE, 2 * count)):
        if uow.scheduled_at is not None and uow.scheduled_at > now:
            memory.candidates.settled({uow.id})
            continue  # a delayed task, not due yet
        entry = memory.entries.get(store, uow.process)
        if entry is None or not runs_on(flows.entry_for(entry, uow), executor.box_id):
            memory.candidates.settled({uow.id})
            continue
        if uow.flow:
            try:
                expanded = _expand(ctx, uow, entry) or expanded
            finally:
                memory.candidates.settled({uow.id})
            continue
        batch.append((_claim_change(executor, uow, now), entry))
        if len(claims) + len(batch) < count:
            continue
        _write_claims(ctx, executor, memory, batch, heartbeat_interval, carry, carried, claims)
        batch = []
        if len(claims) >= count:
            return expanded
        # the others were claimed or changed by another first: the next candidates
    if batch:
        _write_claims(ctx, executor, memory, batch, heartbeat_interval, carry, carried, claims)
    return expanded


def _claim_change(executor: Executor, uow: UnitOfWork, now: datetime) -> UowChange:
    """The funnel's ``claim`` of ``uow`` for ``executor`` (compare-and-set on its version:
    a candidate read lately that changed since is refused)."""
    return replace(
        claim_change(
            uow,
            worker_id=executor.worker_id,
            box_id=executor.box_id,
            pid=executor.pid,
            now=now,
            details={"attempt": uow.attempt, "executor": executor.worker_id},
        ),
        check_version=True,
    )


def _write_claims(
    ctx: ServiceContext,
    executor: Executor,
    memory: Memory,
    batch: list[tuple[UowChange, ProcessEntry]],
    heartbeat_interval: float,
    carry: _Carry,
    carried: list[UnitOfWork | TactusError],
    claims: list[dict[str, Any]],
) -> None:
    """Write the claims of ``batch`` in one commit (with what ``carry`` holds); the won ones
    join ``claims``. StateConflict / TransitionRefused / NotFound: claimed or changed by
    another first."""
    try:
        written = carry.write(ctx, [change for change, _ in batch])
    finally:
        memory.candidates.settled({change.uow.id for change, _ in batch})
    won = written[len(written) - len(batch) :]
    carried.extend(written[: len(written) - len(batch)])
    for (_, entry), claimed in zip(batch, won, strict=True):
        if isinstance(claimed, UnitOfWork):
            memory.claimed.remember(claimed)
            claims.append(
                claim_json(claimed, entry, heartbeat_interval=heartbeat_interval, store=ctx.store)
            )


def _candidates(
    store: Store, executor: Executor, memory: Candidates, *, page: int = PAGE
) -> Iterator[UnitOfWork]:
    """Requested units of work of the executor's processes, the oldest first (the first
    :data:`SPREAD` shuffled), read ``page`` at a time (per process when it names them), up to
    :data:`CANDIDATES`: a claim usually takes one of the first. The first page read lately by
    a claim comes first from ``memory`` while it is fresh; one read here is kept there."""
    key = executor.processes
    yielded: set[str] = set()
    while (uow := memory.take(key)) is not None:
        yielded.add(uow.id)
        yield uow
    requested = frozenset({UowState.REQUESTED})
    queries = [
        UowQuery(process=process, states=requested, newest_first=False)
        for process in executor.processes
    ] or [UowQuery(states=requested, newest_first=False)]
    cursors: list[str | None] = [None] * len(queries)
    seen = len(yielded)
    first = True
    while seen < CANDIDATES:
        found: list[UnitOfWork] = []
        for i, query in enumerate(queries):
            if first or cursors[i] is not None:
                read = store.find_uows(query, limit=page, cursor=cursors[i])
                found += read.items
                cursors[i] = read.next_cursor
        if len(queries) > 1:
            found.sort(key=lambda u: u.id)
        seen += len(found)
        if first:
            head = found[:SPREAD]
            random.shuffle(head)
            found[:SPREAD] = head
            # kept, and taken one at a time: the claims made meanwhile share it out
            stamp = memory.keep(key, [u for u in found if u.id not in yielded])
            while (uow := memory.take(key, stamp)) is not None:
                yielded.add(uow.id)
                yield uow
        else:
            # the later pages are this claim's alone; what another claim holds is left to it
            for uow in found:
                if uow.id not in yielded and not memory.handed_out(uow.id):
                    yielded.add(uow.id)
                    yield uow
        first = False
        if all(c is None for c in cursors):
            return


def _expand(ctx: ServiceContext, flow_run: UnitOfWork, entry: ProcessEntry) -> bool:
    """Expand a requested flow run (db.flows.expand), as a worker does on its delivery.

    Returns:
        Whether it was expanded (by this call or a racing one): its steps are there now.
    """
    try:
        flows.expand(
            ctx.store, flow_run, entry, clock=ctx.clock, actor=ctx.actor, announce=ctx.announce_all
        )
        return True
    except (StateConflict, TransitionRefused) as exc:
        log.info("uow %s: expanded elsewhere first (%s)", flow_run.id, exc)
        return True
    except InvalidInput as exc:
        log.warning("uow %s: cannot expand the flow run: %s", flow_run.id, exc)
        try:
            change_uow(
                ctx.store, flow_run, "cancel", clock=ctx.clock, actor=ctx.actor, reason=str(exc)
            )
        except (StateConflict, TransitionRefused):
            return False
        tell(ctx, flow_run)
        return False


def claim_json(
    uow: UnitOfWork, entry: ProcessEntry, *, heartbeat_interval: float, store: Store | None = None
) -> dict[str, Any]:
    """What an executor gets for a claimed unit of work: the SPEC's fields, and the rest of
    what its shell driver and worker classes take (the entry that runs it, its window, and
    its payload's bytes in base64: the executor cannot read the store)."""
    run = run_entry(entry, uow)
    payload = None
    if uow.payload_id is not None and store is not None:
        try:
            payload = base64.b64encode(store.get_payload(uow.payload_id).data).decode("ascii")
        except NotFound:
            payload = None  # the executor reports it invalid, as a worker would
    command = run.command if run.worker is None else None
    return {
        "uow_id": uow.id,
        "lease": lease_of(uow),
        "process": uow.process,
        "step": uow.step,
        "parent": uow.parent,
        "kind": uow.kind.value,
        "command": list(command) if isinstance(command, tuple) else command,
        "shell": run.shell,
        "worker": run.worker,
        "noop_exit_code": run.noop_exit_code,
        "arguments": dict(uow.arguments),
        "timeout": run.timeout.total_seconds(),
        "attempt": uow.attempt,
        "retries": uow.retries,
        "timeperiod": uow.timeperiod,
        "start_timeperiod": uow.start_timeperiod,
        "end_timeperiod": uow.end_timeperiod,
        "heartbeat_interval": heartbeat_interval,
        "payload_id": uow.payload_id,
        "payload": payload,
    }


def run_entry(entry: ProcessEntry, uow: UnitOfWork) -> ProcessEntry:
    """The entry that runs ``uow``: its step's, or for an ad-hoc task its own shell command,
    run literally (braces escaped, so that placeholder filling leaves them alone), as the
    local worker runs it."""
    if uow.step is None and uow.kind is UowKind.ADHOC:
        command = str(uow.arguments.get("command", ""))
        literal = command.replace("{", "{{").replace("}", "}}")
        return replace(entry, command=literal, shell=True, worker=None)
    return flows.entry_for(entry, uow)
