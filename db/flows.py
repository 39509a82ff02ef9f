"""Flows (SPEC section 10): the steps of one run, as units of work of the flow run.

A flow run is a unit of work (``flow`` true) of a process that declares ``steps``. The first
worker that receives it *expands* it: the steps are inserted ``pending`` (each under its own
unique key, so a second expansion finds them), and one group of compare-and-sets moves the flow
run ``requested -> in_progress`` and its root steps ``pending -> requested``. From then on the
flow run has no worker of its own: its steps move it.

Every change that ends a step is written *together* with the flow run's compare-and-set
(``step_ended``, or ``succeed`` / ``cancel`` with the last step) and with the transitions it
makes possible for the steps downstream (``ready``, ``upstream_failed``, ``not_needed``): on
SQL that is one transaction, so no pass of the scheduler is needed between two steps and a crash
cannot leave a step stranded. The flow run's compare-and-set serialises two parallel steps that
end at once: the loser's group is refused whole, re-planned from what is stored and written
again. MongoDB has no multi-document transactions: there the step's change is written alone and
the flow is then reconciled (:func:`reconcile`, idempotent), and the scheduler's recovery
reconciles every flow run in progress, so a crash between the two writes delays a step but
never strands it.

The DAG a flow run follows is the one it was expanded with (kept in its ``result``), so an edit
of the registration while it runs changes the next run, not this one.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from db.errors import DuplicateKey, InvalidInput, NotFound, StateConflict, TransitionRefused
from db.ids import new_id
from db.machines.uow import UOW_MACHINE
from db.models import Event, ProcessEntry, StepEntry, UnitOfWork, UowQuery, UowTransition
from db.states import (
    FAILED_STEP_STATES,
    TERMINAL_UOW_STATES,
    RunIf,
    UowKind,
    UowState,
)

if TYPE_CHECKING:
    from db.clock import Clock
    from db.store import Store

log = logging.getLogger(f"tactus.{__name__}")

#: Largest result a step may hand on (the JSON text, in bytes).
RESULT_LIMIT = 64 * 1024
#: Longest step name (the step's run key is its flow run's id, a dot and its name).
STEP_NAME_LENGTH = 32
#: How many times a refused group is planned again from what is stored before giving up.
_TRIES = 50

#: Called after a commit with the units of work a flow change made requested (to publish)
#: and the flow runs it ended (to announce).
Announce = Callable[[Sequence[UnitOfWork]], None]


# -- the DAG ---------------------------------------------------------------------------------------


def upstream_of(steps: Sequence[StepEntry]) -> dict[str, tuple[str, ...]]:
    """Each step's upstream steps: its ``depends_on``, or, when no step of the process gives
    ``depends_on``, the step before it (a plain list runs in order)."""
    if all(step.depends_on is None for step in steps):
        return {step.name: (() if i == 0 else (steps[i - 1].name,)) for i, step in enumerate(steps)}
    return {step.name: tuple(step.depends_on or ()) for step in steps}


def run_order(upstream: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """The steps in waves: every step of a wave can run once the waves before it ended (in
    file order within a wave). ``upstream`` must be acyclic (see :func:`find_cycle`)."""
    done: set[str] = set()
    waves: list[list[str]] = []
    left = list(upstream)
    while left:
        wave = [name for name in left if all(up in done for up in upstream[name])]
        if not wave:
            raise InvalidInput("steps", f"a cycle among {', '.join(left)}")
        waves.append(wave)
        done.update(wave)
        left = [name for name in left if name not in done]
    return waves


def find_cycle(upstream: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle of ``upstream`` as the steps along it (the first repeated at the end), or None."""
    colour: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        colour[name] = 1
        path.append(name)
        for up in upstream.get(name, ()):
            if colour.get(up) == 1:
                return [*path[path.index(up) :], up]
            if up in upstream and colour.get(up) is None:
                found = visit(up)
                if found:
                    return found
        path.pop()
        colour[name] = 2
        return None

    for name in upstream:
        if colour.get(name) is None:
            found = visit(name)
            if found:
                return found
    return None


def dag_of(entry: ProcessEntry) -> list[list[Any]]:
    """The DAG a flow run keeps: ``[[name, [upstream ...], run_if], ...]`` in file order."""
    upstream = upstream_of(entry.steps)
    return [[step.name, list(upstream[step.name]), step.run_if.value] for step in entry.steps]


@dataclass(frozen=True, slots=True)
class Dag:
    """A flow run's DAG as it was expanded."""

    upstream: Mapping[str, tuple[str, ...]]
    run_if: Mapping[str, RunIf]

    @classmethod
    def of(cls, flow_run: UnitOfWork) -> Dag:
        rows = (flow_run.result or {}).get("dag") or []
        return cls(
            upstream={row[0]: tuple(row[1]) for row in rows},
            run_if={row[0]: RunIf(row[2]) for row in rows},
        )

    @property
    def names(self) -> list[str]:
        return list(self.upstream)

    def downstream(self, name: str) -> list[str]:
        return [other for other, ups in self.upstream.items() if name in ups]


def step_entry(entry: ProcessEntry, name: str) -> ProcessEntry:
    """What running step ``name`` of ``entry`` takes: the process with the step's command or
    worker, and its retries, retry delay, timeout, arguments and boxes where it gives them.

    Raises:
        NotFound: ``entry`` has no such step (renamed or removed since the run began).
    """
    step = entry.step(name)
    if step is None:
        raise NotFound("step", f"{entry.name}.{name}")
    return replace(
        entry,
        worker=step.worker,
        command=step.command,
        shell=step.shell,
        retries=entry.retries if step.retries is None else step.retries,
        retry_delay=entry.retry_delay if step.retry_delay is None else step.retry_delay,
        timeout=entry.timeout if step.timeout is None else step.timeout,
        arguments={**dict(entry.arguments), **dict(step.arguments)},
        boxes=entry.boxes if step.boxes is None else step.boxes,
        noop_exit_code=step.noop_exit_code,
        steps=(),
    )


def entry_for(entry: ProcessEntry, uow: UnitOfWork) -> ProcessEntry:
    """The entry that runs ``uow``: its step's for a step, else ``entry``; the process's own
    when the step is gone from it."""
    if uow.step is None:
        return entry
    try:
        return step_entry(entry, uow.step)
    except NotFound:
        return entry


def is_flow_run(entry: ProcessEntry, kind: UowKind, arguments: Mapping[str, Any] | None) -> bool:
    """Whether a new unit of work of ``entry`` is a flow run (an ad-hoc task with a command
    of its own is not)."""
    return bool(entry.steps) and not (kind is UowKind.ADHOC and (arguments or {}).get("command"))


def check_result(text: str) -> dict[str, Any]:
    """A step's result from its JSON text.

    Raises:
        InvalidInput: larger than :data:`RESULT_LIMIT`, not JSON, or not a JSON object.
    """
    size = len(text.encode())
    if size > RESULT_LIMIT:
        raise InvalidInput(
            "result", f"is {size} bytes; a step may hand on at most {RESULT_LIMIT} bytes (64 KiB)"
        )
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidInput("result", f"is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInput("result", f"must be a JSON object, not {type(value).__name__}")
    return value


# -- planning --------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Move:
    """One planned change of a flow: a unit of work, a trigger of its machine, the changes."""

    uow: UnitOfWork
    trigger: str
    reason: str = ""
    changes: Mapping[str, Any] | None = None
    details: Mapping[str, Any] | None = None


#: States of a step that has not ended.
OPEN_STEP_STATES = frozenset(set(UowState) - TERMINAL_UOW_STATES)


class StepView(ABC):
    """The steps of one flow run as the planner sees them: what is stored, plus the changes
    planned so far (:meth:`set`)."""

    def __init__(self) -> None:
        self.planned: dict[str, UowState] = {}

    def set(self, name: str, state: UowState) -> None:
        self.planned[name] = state

    def state(self, name: str) -> UowState | None:
        """The step's state (None: not created)."""
        if name in self.planned:
            return self.planned[name]
        uow = self.uow(name)
        return None if uow is None else uow.state

    @abstractmethod
    def uow(self, name: str) -> UnitOfWork | None:
        """The step as stored (None: not created)."""

    @abstractmethod
    def find(
        self, names: Iterable[str] | None, states: frozenset[UowState], limit: int
    ) -> list[str]:
        """Up to ``limit`` names among ``names`` (None: every step) whose state is in
        ``states``."""

    @abstractmethod
    def results(self, names: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The results of those of ``names`` that are processed and handed one on."""


class StoredSteps(StepView):
    """Every step, read at once (reconciling, expanding, retrying: all of them matter)."""

    def __init__(self, steps: Mapping[str, UnitOfWork]) -> None:
        super().__init__()
        self.steps = dict(steps)

    def uow(self, name: str) -> UnitOfWork | None:
        return self.steps.get(name)

    def find(
        self, names: Iterable[str] | None, states: frozenset[UowState], limit: int
    ) -> list[str]:
        pool = self.steps if names is None else names
        return [n for n in pool if self.state(n) in states][:limit]

    def results(self, names: Iterable[str]) -> dict[str, dict[str, Any]]:
        return {
            n: dict(u.result)
            for n in names
            if (u := self.steps.get(n)) is not None
            and u.result is not None
            and self.state(n) is UowState.PROCESSED
        }


class StepsOnDemand(StepView):
    """Steps read when the planner asks, a few at a time: a step's end looks at its downstream
    steps and their upstream steps only, so a flow of n steps costs O(n) reads, not O(n²)."""

    def __init__(self, store: Store, flow_run: UnitOfWork) -> None:
        super().__init__()
        self.store = store
        self.flow_run = flow_run
        self._read: dict[str, UnitOfWork | None] = {}

    def uow(self, name: str) -> UnitOfWork | None:
        if name not in self._read:
            run = self.flow_run
            self._read[name] = self.store.find_uow_by_key(
                run.process, run.start_timeperiod, run.end_timeperiod, f"{run.id}.{name}"
            )
        return self._read[name]

    def find(
        self, names: Iterable[str] | None, states: frozenset[UowState], limit: int
    ) -> list[str]:
        wanted = None if names is None else set(names)
        local = [
            n
            for n, state in self.planned.items()
            if state in states and (wanted is None or n in wanted)
        ]
        rest = None if wanted is None else frozenset(wanted - set(self.planned))
        if rest is not None and not rest:
            return local[:limit]
        page = self.store.find_uows(
            UowQuery(parent=self.flow_run.id, steps=rest, states=states),
            limit=limit + len(self.planned),
        )
        stored = [u.step for u in page.items if u.step is not None and u.step not in self.planned]
        return (local + stored)[:limit]

    def results(self, names: Iterable[str]) -> dict[str, dict[str, Any]]:
        wanted = frozenset(names)
        if not wanted:
            return {}
        page = self.store.find_uows(
            UowQuery(parent=self.flow_run.id, steps=wanted, states=frozenset({UowState.PROCESSED})),
            limit=max(len(wanted), 1),
        )
        return {u.step: dict(u.result) for u in page.items if u.step and u.result is not None}


def plan(
    flow_run: UnitOfWork,
    steps: Mapping[str, UnitOfWork] | StepView,
    *,
    now: datetime,
    ended: tuple[str, UowState] | None = None,
) -> tuple[list[Move], Move | None]:
    """What the steps of ``flow_run`` allow next.

    Args:
        flow_run: the flow run as read (in progress, or requested when it is being expanded).
        steps: its steps by name as read, or a :class:`StepView` that reads them on demand.
        now: stamps ``submitted_at`` of the steps made requested.
        ended: (step, new state) of a change about to be written with the plan: only the
            steps downstream of it are looked at (everything when None).

    Returns:
        The step moves (pending steps made requested, upstream_failed or noop, in dependency
        order, cascading) and the flow run's own move: ``succeed`` or ``cancel`` once every
        step has ended, else ``step_ended`` when ``ended`` is given (the flow run's
        compare-and-set that serialises its steps), else None.
    """
    dag = Dag.of(flow_run)
    view = steps if isinstance(steps, StepView) else StoredSteps(steps)
    if ended is not None:
        view.set(*ended)
    work = deque(dag.names if ended is None else dag.downstream(ended[0]))
    moves: list[Move] = []
    opened = False
    while work:
        name = work.popleft()
        uow = view.uow(name)
        if uow is None or view.state(name) is not UowState.PENDING:
            continue
        ups = dag.upstream[name]
        if view.find(ups, OPEN_STEP_STATES, 1):
            continue
        failed = sorted(view.find(ups, FAILED_STEP_STATES, len(ups)))
        run_if = dag.run_if[name]
        if run_if is RunIf.ALL_SUCCEEDED and failed:
            trigger, dest = "upstream_failed", UowState.UPSTREAM_FAILED
            reason = f"upstream {', '.join(failed)} failed"
        elif run_if is RunIf.ANY_FAILED and not failed:
            trigger, dest = "not_needed", UowState.NOOP
            reason = "every upstream step succeeded (run_if any_failed)"
        else:
            trigger, dest = "ready", UowState.REQUESTED
            reason = "upstream ended" if ups else "root step"
        changes: dict[str, Any] | None = None
        if dest is UowState.REQUESTED:
            handed = view.results(ups)
            arguments = {k: v for k, v in uow.arguments.items() if k != "upstream"}
            if handed:
                arguments["upstream"] = handed
            changes = {"arguments": arguments, "submitted_at": now}
            opened = True
        else:
            changes = {"finished_at": now} if dest is UowState.NOOP else None
            work.extend(dag.downstream(name))  # it ended: its dependents may move too
        moves.append(Move(uow=uow, trigger=trigger, reason=reason, changes=changes))
        view.set(name, dest)
    run_move: Move | None = None
    if dag.names and not opened and not _open_after(view, dag, ended):
        canceled = sorted(view.find(None, frozenset({UowState.CANCELED}), 10))
        if canceled:
            run_move = Move(
                uow=flow_run,
                trigger="cancel",
                reason=f"step {', '.join(canceled)} canceled",
                changes={"finished_at": now},
            )
        else:
            run_move = Move(
                uow=flow_run,
                trigger="succeed",
                reason="every step ended",
                changes={"finished_at": now},
            )
    elif ended is not None:
        run_move = Move(
            uow=flow_run,
            trigger="step_ended",
            reason=f"step {ended[0]} {ended[1]}",
            details={"step": ended[0], "state": str(ended[1])},
        )
    return moves, run_move


def _open_after(view: StepView, dag: Dag, ended: tuple[str, UowState] | None) -> bool:
    """Whether a step of the flow has not ended, once the planned moves are made (a downstream
    step of the one that ended still pending answers without a read)."""
    if ended is not None and any(
        view.state(name) is UowState.PENDING for name in dag.downstream(ended[0])
    ):
        return True
    return bool(view.find(None, OPEN_STEP_STATES, 1))


def _transition(move: Move, *, at: datetime, actor: str, version: int | None) -> UowTransition:
    uow = move.uow
    dest = UowState(UOW_MACHINE.decide(uow.state, move.trigger, uow.id))
    event = Event(
        entity="uow",
        entity_id=uow.id,
        at=at,
        trigger=move.trigger,
        from_state=str(uow.state),
        to_state=str(dest),
        actor=actor,
        reason=move.reason,
        details=dict(move.details or {}),
    )
    return UowTransition(
        uow_id=uow.id,
        expected_state=uow.state,
        new_state=dest,
        event=event,
        changes=move.changes,
        expected_version=version,
    )


def _as_stored(move: Move, transition: UowTransition) -> UnitOfWork:
    """The unit of work as a written ``move`` leaves it (for announcing: ids and states)."""
    return replace(move.uow, state=transition.new_state, **dict(move.changes or {}))


# -- reading ---------------------------------------------------------------------------------------


def steps_of(store: Store, flow_run_id: str) -> dict[str, UnitOfWork]:
    """The steps of a flow run by name (as stored)."""
    found: dict[str, UnitOfWork] = {}
    cursor = None
    while True:
        page = store.find_uows(
            UowQuery(parent=flow_run_id, newest_first=False), limit=500, cursor=cursor
        )
        for uow in page.items:
            if uow.step is not None:
                found[uow.step] = uow
        cursor = page.next_cursor
        if cursor is None:
            return found


# -- writing ---------------------------------------------------------------------------------------


def group_for(
    store: Store, step: UowTransition, step_uow: UnitOfWork, *, at: datetime, actor: str
) -> tuple[UowTransition, list[UnitOfWork]]:
    """``step`` (a change that ends a step) with the flow's changes it makes possible, as one
    group to write together; and the units of work to announce once it is written."""
    flow_run = store.get_uow(step_uow.parent or "")
    moves, run_move = plan(
        flow_run,
        _Ending(store, flow_run, step_uow, dict(step.changes or {}).get("result")),
        now=at,
        ended=(step_uow.step or "", UowState(step.new_state)),
    )
    together: list[UowTransition] = []
    announce: list[UnitOfWork] = []
    if run_move is not None:
        t = _transition(run_move, at=at, actor=actor, version=flow_run.version)
        together.append(t)
        if run_move.trigger != "step_ended":
            announce.append(_as_stored(run_move, t))
    for move in moves:
        t = _transition(move, at=at, actor=actor, version=move.uow.version)
        together.append(t)
        if t.new_state is UowState.REQUESTED:
            announce.append(_as_stored(move, t))
    return replace(step, together=tuple(together)), announce


class _Ending(StepsOnDemand):
    """The steps as a step's end sees them: that step as it is about to be, with its result."""

    def __init__(self, store: Store, flow_run: UnitOfWork, step: UnitOfWork, result: Any) -> None:
        super().__init__(store, flow_run)
        self._read[step.step or ""] = replace(step, result=result)

    def results(self, names: Iterable[str]) -> dict[str, dict[str, Any]]:
        # the stored rows of steps planned here are not what they are about to be: the step
        # that ends hands on the result it is about to store
        wanted = list(names)
        found = super().results([n for n in wanted if n not in self.planned])
        for name in wanted:
            uow = self._read.get(name)
            if self.planned.get(name) is UowState.PROCESSED and uow and uow.result is not None:
                found[name] = dict(uow.result)
        return found


def ends_a_step(uow: UnitOfWork, new_state: UowState) -> bool:
    """Whether moving ``uow`` to ``new_state`` ends a step of a flow run."""
    return uow.parent is not None and new_state in TERMINAL_UOW_STATES


def reconcile(
    store: Store, flow_run_id: str, *, clock: Clock, actor: str, announce: Announce | None = None
) -> list[UnitOfWork]:
    """Write whatever the stored steps of a flow run allow next (idempotent: nothing when
    nothing is due). The flow run's compare-and-set comes first, so two reconcilers never
    both move the same step.

    Returns:
        The units of work moved to requested and the flow run if it ended.
    """
    for _ in range(_TRIES):
        flow_run = store.get_uow(flow_run_id)
        if flow_run.state is not UowState.IN_PROGRESS:
            return []
        now = clock.now()
        moves, run_move = plan(flow_run, steps_of(store, flow_run_id), now=now)
        if not moves and run_move is None:
            return []
        lead = run_move or Move(
            uow=flow_run, trigger="step_ended", reason="reconciled", details={"reconciled": True}
        )
        head = _transition(lead, at=now, actor=actor, version=flow_run.version)
        members = [_transition(m, at=now, actor=actor, version=m.uow.version) for m in moves]
        (result,) = store.transition_uows([replace(head, together=tuple(members))])
        if isinstance(result, StateConflict):
            continue  # another writer moved the flow first: plan again from what is stored
        if isinstance(result, NotFound):
            return []
        done = [_as_stored(m, t) for m, t in zip(moves, members, strict=True)]
        done = [u for u in done if u.state is UowState.REQUESTED]
        if run_move is not None:
            done.append(result)
        _log_moves(flow_run_id, [head, *members])
        announced(announce, done)
        return done
    log.warning(
        "flow run %s: still contended after %d tries; recovery goes on", flow_run_id, _TRIES
    )
    return []


def expand(
    store: Store,
    flow_run: UnitOfWork,
    entry: ProcessEntry,
    *,
    clock: Clock,
    actor: str,
    announce: Announce | None = None,
) -> UnitOfWork:
    """Create the steps of a requested flow run (pending; those already stored by an
    interrupted expansion are kept) and move it in progress with its root steps requested, in
    one group.

    Returns:
        The flow run as stored after the expansion.

    Raises:
        StateConflict: expanded (or changed) by another worker first.
        TransitionRefused: the flow run is not requested.
    """
    now = clock.now()
    if not entry.steps:
        raise InvalidInput("steps", f"process {entry.name} has no steps to run")
    dag = dag_of(entry)
    specs = []
    for step in entry.steps:
        run = step_entry(entry, step.name)
        uow = UnitOfWork(
            id=new_id(),
            process=flow_run.process,
            kind=flow_run.kind,
            start_timeperiod=flow_run.start_timeperiod,
            end_timeperiod=flow_run.end_timeperiod,
            run_key=f"{flow_run.id}.{step.name}",
            state=UowState.PENDING,
            timeperiod=flow_run.timeperiod,
            retries=run.retries,
            arguments={**dict(flow_run.arguments), **dict(step.arguments)},
            created_at=now,
            updated_at=now,
            scheduled_at=None,
            submitted_at=None,
            parent=flow_run.id,
            step=step.name,
            payload_id=flow_run.payload_id,
        )
        event = Event(
            entity="uow",
            entity_id=uow.id,
            at=now,
            trigger="create",
            from_state=None,
            to_state=UowState.PENDING.value,
            actor=actor,
            reason=f"step {step.name} of flow run {flow_run.id}",
        )
        specs.append((uow, event))
    for result in store.create_uows(specs):
        if isinstance(result, DuplicateKey):
            log.info("flow run %s: a step stored by an interrupted expansion is kept", flow_run.id)
    with_dag = replace(flow_run, result={"dag": dag})
    moves, _ = plan(with_dag, steps_of(store, flow_run.id), now=now)
    head = _transition(
        Move(
            uow=flow_run,
            trigger="expand",
            reason=f"{len(entry.steps)} steps",
            changes={"result": {"dag": dag}, "started_at": now, "worker_id": None},
        ),
        at=now,
        actor=actor,
        version=flow_run.version,
    )
    members = [_transition(m, at=now, actor=actor, version=m.uow.version) for m in moves]
    (result,) = store.transition_uows([replace(head, together=tuple(members))])
    if isinstance(result, Exception):
        raise result
    _log_moves(flow_run.id, [head, *members])
    requested = [_as_stored(m, t) for m, t in zip(moves, members, strict=True)]
    announced(announce, [u for u in requested if u.state is UowState.REQUESTED])
    if not store.atomic_groups:
        reconcile(store, flow_run.id, clock=clock, actor=actor, announce=announce)
    return result


def cancel(
    store: Store,
    flow_run: UnitOfWork,
    *,
    clock: Clock,
    actor: str,
    reason: str,
) -> UnitOfWork:
    """Cancel a flow run and every step of it that has not ended, in one group (a running
    step's worker sees its unit of work canceled and kills it, process group and all).

    Raises:
        TransitionRefused: the flow run has ended.
        StateConflict: it changed meanwhile.
    """
    for _ in range(_TRIES):
        now = clock.now()
        head = _transition(
            Move(uow=flow_run, trigger="cancel", reason=reason, changes={"finished_at": now}),
            at=now,
            actor=actor,
            version=flow_run.version,
        )
        members = [
            _transition(
                Move(uow=s, trigger="cancel", reason=f"flow run canceled: {reason}"),
                at=now,
                actor=actor,
                version=s.version,
            )
            for s in steps_of(store, flow_run.id).values()
            if s.state not in TERMINAL_UOW_STATES
        ]
        (result,) = store.transition_uows([replace(head, together=tuple(members))])
        if isinstance(result, UnitOfWork):
            _log_moves(flow_run.id, [head, *members])
            return result
        fresh = store.get_uow(flow_run.id)
        if fresh.state is not flow_run.state:
            raise result
        flow_run = fresh  # a step moved meanwhile: plan again
    raise StateConflict("uow", flow_run.id, expected=str(flow_run.state), actual="contended")


def retry_failed(
    store: Store,
    flow_run: UnitOfWork,
    entry: ProcessEntry | None,
    *,
    clock: Clock,
    actor: str,
    announce: Announce | None = None,
) -> tuple[UnitOfWork, list[str]]:
    """Put a canceled flow run back in progress and its canceled and upstream_failed steps
    back to pending with fresh attempts (processed steps and their results are kept); the
    steps that can run at once are requested in the same group. Each re-run step gets its
    step's ``retries`` again (from ``entry``; the ones it had when ``entry`` is None).

    Returns:
        (the flow run as stored, the names of the steps re-run).

    Raises:
        TransitionRefused: the flow run is not canceled, or is not a flow run.
        StateConflict: it changed meanwhile.
    """
    if not flow_run.flow:
        raise TransitionRefused("uow", flow_run.id, str(flow_run.state), "retry_failed")
    for _ in range(_TRIES):
        now = clock.now()
        steps = steps_of(store, flow_run.id)
        failed = [s for s in steps.values() if s.state in FAILED_STEP_STATES]
        head = _transition(
            Move(
                uow=flow_run,
                trigger="retry_failed",
                reason=f"re-running {', '.join(s.step or '' for s in failed) or 'nothing'}",
                changes={"finished_at": None},
            ),
            at=now,
            actor=actor,
            version=flow_run.version,
        )
        members = []
        rerun: dict[str, UnitOfWork] = dict(steps)
        for s in failed:
            fresh = s.attempt + 1
            allowed = s.retries
            if entry is not None and entry.step(s.step or "") is not None:
                allowed = step_entry(entry, s.step or "").retries
            changes = {
                "attempt": fresh,
                # attempts remain while attempt <= retries: ``allowed`` more after this one
                "retries": fresh - 1 + allowed,
                "finished_at": None,
                "started_at": None,
                "retry_at": None,
                "worker_id": None,
                "pid": None,
                "heartbeat_at": None,
                "exit_code": None,
                "error": None,
                "output": None,
                "result": None,
            }
            move = Move(uow=s, trigger="rerun", reason="retry-failed", changes=changes)
            members.append(_transition(move, at=now, actor=actor, version=s.version))
            rerun[s.step or ""] = replace(
                s, state=UowState.PENDING, version=s.version + 1, **changes
            )
        back = replace(flow_run, state=UowState.IN_PROGRESS, version=flow_run.version + 1)
        moves, _ = plan(back, rerun, now=now)
        ready = [_transition(m, at=now, actor=actor, version=m.uow.version) for m in moves]
        (result,) = store.transition_uows([replace(head, together=tuple(members + ready))])
        if isinstance(result, UnitOfWork):
            _log_moves(flow_run.id, [head, *members, *ready])
            requested = [
                _as_stored(m, t)
                for m, t in zip(moves, ready, strict=True)
                if t.new_state is UowState.REQUESTED
            ]
            announced(announce, requested)
            if not store.atomic_groups:
                reconcile(store, flow_run.id, clock=clock, actor=actor, announce=announce)
            return result, [s.step or "" for s in failed]
        fresh_run = store.get_uow(flow_run.id)
        if fresh_run.state is not flow_run.state:
            raise result
        flow_run = fresh_run
    raise StateConflict("uow", flow_run.id, expected=str(flow_run.state), actual="contended")


def _log_moves(flow_run_id: str, transitions: Sequence[UowTransition]) -> None:
    for t in transitions:
        log.info(
            "uow %s: %s -> %s (%s by %s%s) [flow run %s]",
            t.uow_id,
            t.event.from_state,
            t.event.to_state,
            t.event.trigger,
            t.event.actor,
            f": {t.event.reason}" if t.event.reason else "",
            flow_run_id,
        )


def announced(announce: Announce | None, uows: Sequence[UnitOfWork]) -> None:
    """Call ``announce`` with ``uows`` after their commit; a failure is logged, not raised (the
    change is stored, and recovery re-posts a requested unit of work nobody published)."""
    if announce is None or not uows:
        return
    try:
        announce(uows)
    except Exception:
        # Stored is stored: recovery re-posts a requested unit of work nobody published.
        log.exception("flow: announcing %s failed", ", ".join(u.id for u in uows))


def reconcile_open(
    store: Store, *, clock: Clock, actor: str, announce: Announce | None = None
) -> int:
    """Reconcile every flow run in progress (the scheduler's recovery: a backend without
    multi-document transactions, or a writer that crashed between two writes). Returns how
    many flow runs moved."""
    moved = 0
    cursor = None
    while True:
        page = store.find_uows(
            UowQuery(states=frozenset({UowState.IN_PROGRESS}), flow=True, newest_first=False),
            limit=200,
            cursor=cursor,
        )
        for flow_run in page.items:
            if reconcile(store, flow_run.id, clock=clock, actor=actor, announce=announce):
                moved += 1
        cursor = page.next_cursor
        if cursor is None:
            return moved
