"""Frozen values stored and returned by the store.

Instants are aware UTC datetimes (milliseconds), durations are timedeltas, timeperiods are stored
in their SPEC section 2 string form next to their qualifier (so an hourly period at midnight is
never mistaken for a daily one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from db.states import (
    Blocking,
    Catchup,
    FireOutcome,
    JobState,
    ProcessKind,
    ProcessSource,
    Qualifier,
    RunIf,
    StateMachineName,
    SupervisedState,
    UowKind,
    UowState,
)

T = TypeVar("T")

#: Placeholders a ``command`` may use; the shell driver fills them in.
COMMAND_PLACEHOLDERS = frozenset(
    {"process", "timeperiod", "start_timeperiod", "end_timeperiod", "uow_id", "attempt"}
)


@dataclass(frozen=True, kw_only=True, slots=True)
class StepEntry:
    """One step of a flow (SPEC section 10). ``None`` in ``retries``, ``retry_delay`` and
    ``timeout`` means the process's value; ``arguments`` are merged over the process's."""

    name: str
    worker: str | None = None
    command: tuple[str, ...] | str | None = None
    shell: bool = False
    #: Step names; None: not given (then, when no step of the process gives it, the step
    #: depends on the one before it).
    depends_on: tuple[str, ...] | None = None
    run_if: RunIf = RunIf.ALL_SUCCEEDED
    retries: int | None = None
    retry_delay: timedelta | None = None
    timeout: timedelta | None = None
    arguments: Mapping[str, Any] = field(default_factory=dict)
    boxes: tuple[str, ...] | None = None
    noop_exit_code: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The file form (fields left at their default are left out)."""
        data: dict[str, Any] = {"name": self.name}
        if self.worker is not None:
            data["worker"] = self.worker
        if self.command is not None:
            data["command"] = (
                list(self.command) if isinstance(self.command, tuple) else self.command
            )
        if self.shell:
            data["shell"] = True
        if self.depends_on is not None:
            data["depends_on"] = list(self.depends_on)
        if self.run_if is not RunIf.ALL_SUCCEEDED:
            data["run_if"] = self.run_if.value
        if self.retries is not None:
            data["retries"] = self.retries
        for name in ("retry_delay", "timeout"):
            value = getattr(self, name)
            if value is not None:
                data[name] = _seconds(value)
        if self.arguments:
            data["arguments"] = dict(self.arguments)
        if self.boxes is not None:
            data["boxes"] = list(self.boxes)
        if self.noop_exit_code is not None:
            data["noop_exit_code"] = self.noop_exit_code
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepEntry:
        """Inverse of :meth:`to_dict` for trusted, already validated data."""
        command = data.get("command")
        depends_on = data.get("depends_on")
        boxes = data.get("boxes")
        return cls(
            name=data["name"],
            worker=data.get("worker"),
            command=tuple(command) if isinstance(command, list) else command,
            shell=bool(data.get("shell", False)),
            depends_on=None if depends_on is None else tuple(depends_on),
            run_if=RunIf(data.get("run_if", "all_succeeded")),
            retries=data.get("retries"),
            retry_delay=None
            if data.get("retry_delay") is None
            else timedelta(seconds=data["retry_delay"]),
            timeout=None if data.get("timeout") is None else timedelta(seconds=data["timeout"]),
            arguments=dict(data.get("arguments", {})),
            boxes=None if boxes is None else tuple(boxes),
            noop_exit_code=data.get("noop_exit_code"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class ProcessEntry:
    """One registered process (SPEC section 4): every field with its default.

    Validation of single fields and of field combinations lives in
    :func:`db.registration.validate_entry`; cross-entry rules (cycles, trees) in
    :func:`db.registration.validate_entries`. This class only holds values.
    """

    name: str
    kind: ProcessKind
    worker: str | None = None
    #: argv tuple, or one string run by ``/bin/sh -c`` when ``shell`` is true.
    command: tuple[str, ...] | str | None = None
    shell: bool = False
    time_qualifier: Qualifier | None = None
    state_machine: StateMachineName = StateMachineName.DISCRETE
    blocking: Blocking = Blocking.NORMAL
    tree: str | None = None
    depends_on: tuple[str, ...] = ()
    #: First timeperiod of the grid (SPEC section 2 string); None: the current period at
    #: registration time.
    start_timeperiod: str | None = None
    lag: timedelta = timedelta(seconds=300)
    trigger: str | None = None
    #: IANA zone for cron and ``at`` triggers; None: the ``timezone`` setting.
    timezone: str | None = None
    catchup: Catchup = Catchup.LATEST
    max_active: int = 1
    retries: int = 3
    retry_delay: timedelta = timedelta(seconds=60)
    timeout: timedelta = timedelta(seconds=3600)
    arguments: Mapping[str, Any] = field(default_factory=dict)
    boxes: tuple[str, ...] = (".*",)
    workers: int = 1
    enabled: bool = True
    description: str = ""
    #: Exit code of a ``command`` that means "nothing to do" (the unit of work becomes noop);
    #: None: only 0 succeeds.
    noop_exit_code: int | None = None
    #: The steps of a flow (SPEC section 10), in file order; empty: one command or worker.
    steps: tuple[StepEntry, ...] = ()
    #: The payload every fire's unit of work carries (a freerun entry; SPEC section 12).
    payload_id: str | None = None
    #: An inline payload (a JSON value) as a file or a request gives it: registration stores
    #: it as a payload and keeps only its ``payload_id``, so a stored entry never holds one.
    payload: Any = None

    def step(self, name: str) -> StepEntry | None:
        """The step called ``name``, or None."""
        for step in self.steps:
            if step.name == name:
                return step
        return None

    def to_dict(self) -> dict[str, Any]:
        """The file form: plain JSON types, durations in seconds, enums as their values."""
        return {
            "name": self.name,
            "kind": self.kind.value,
            "worker": self.worker,
            "command": list(self.command) if isinstance(self.command, tuple) else self.command,
            "shell": self.shell,
            "time_qualifier": self.time_qualifier.value if self.time_qualifier else None,
            "state_machine": self.state_machine.value,
            "blocking": self.blocking.value,
            "tree": self.tree,
            "depends_on": list(self.depends_on),
            "start_timeperiod": self.start_timeperiod,
            "lag": _seconds(self.lag),
            "trigger": self.trigger,
            "timezone": self.timezone,
            "catchup": self.catchup.value,
            "max_active": self.max_active,
            "retries": self.retries,
            "retry_delay": _seconds(self.retry_delay),
            "timeout": _seconds(self.timeout),
            "arguments": dict(self.arguments),
            "boxes": list(self.boxes),
            "workers": self.workers,
            "enabled": self.enabled,
            "description": self.description,
            "noop_exit_code": self.noop_exit_code,
            # None, not []: an empty list of steps is refused in a file, and this must load back.
            "steps": [step.to_dict() for step in self.steps] or None,
            "payload_id": self.payload_id,
            "payload": self.payload,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProcessEntry:
        """Inverse of :meth:`to_dict` for trusted, already validated data (the store's)."""
        command = data.get("command")
        return cls(
            name=data["name"],
            kind=ProcessKind(data["kind"]),
            worker=data.get("worker"),
            command=tuple(command) if isinstance(command, list) else command,
            shell=bool(data.get("shell", False)),
            time_qualifier=Qualifier(data["time_qualifier"])
            if data.get("time_qualifier")
            else None,
            state_machine=StateMachineName(data.get("state_machine", "discrete")),
            blocking=Blocking(data.get("blocking", "normal")),
            tree=data.get("tree"),
            depends_on=tuple(data.get("depends_on", ())),
            start_timeperiod=data.get("start_timeperiod"),
            lag=timedelta(seconds=data.get("lag", 300)),
            trigger=data.get("trigger"),
            timezone=data.get("timezone"),
            catchup=Catchup(data.get("catchup", "latest")),
            max_active=int(data.get("max_active", 1)),
            retries=int(data.get("retries", 3)),
            retry_delay=timedelta(seconds=data.get("retry_delay", 60)),
            timeout=timedelta(seconds=data.get("timeout", 3600)),
            arguments=dict(data.get("arguments", {})),
            boxes=tuple(data.get("boxes", (".*",))),
            workers=int(data.get("workers", 1)),
            enabled=bool(data.get("enabled", True)),
            description=data.get("description", ""),
            noop_exit_code=data.get("noop_exit_code"),
            steps=tuple(StepEntry.from_dict(step) for step in data.get("steps") or ()),
            payload_id=data.get("payload_id"),
            payload=data.get("payload"),
        )


def _seconds(delta: timedelta) -> int | float:
    seconds = delta.total_seconds()
    return int(seconds) if seconds == int(seconds) else seconds


@dataclass(frozen=True, kw_only=True, slots=True)
class ProcessRecord:
    """A process as stored: the effective entry plus what the registration file last said.

    ``registered`` keeps the file's values of the last registration (None for processes created
    through the API), so a re-register overwrites only the fields the file changed and keeps
    run-time edits of the others.
    """

    entry: ProcessEntry
    source: ProcessSource
    registered: Mapping[str, Any] | None = None
    version: int = 1
    created_at: datetime
    updated_at: datetime

    @property
    def name(self) -> str:
        return self.entry.name


@dataclass(frozen=True, kw_only=True, slots=True)
class Job:
    """One (managed process, timeperiod) pair."""

    id: str
    process: str
    qualifier: Qualifier
    timeperiod: str
    state: JobState = JobState.EMBRYO
    #: The unit of work currently or last run for this job.
    uow_id: str | None = None
    #: How many times the job was (re)started; part of its units of work's run key.
    run: int = 0
    created_at: datetime
    updated_at: datetime
    version: int = 1

    @property
    def key(self) -> str:
        return f"{self.process}/{self.timeperiod}"


@dataclass(frozen=True, kw_only=True, slots=True)
class UnitOfWork:
    """One dispatched piece of work over ``[start_timeperiod, end_timeperiod)``.

    ``(process, start_timeperiod, end_timeperiod, run_key)`` is unique: a unit of work is never
    created twice by accident.
    """

    id: str
    process: str
    kind: UowKind
    start_timeperiod: str
    end_timeperiod: str
    run_key: str
    state: UowState = UowState.REQUESTED
    #: The job's timeperiod (managed units of work only).
    timeperiod: str | None = None
    #: 1 for the first attempt, incremented by each retry.
    attempt: int = 1
    #: Attempts allowed after the first (a snapshot of the process's ``retries``).
    retries: int = 0
    arguments: Mapping[str, Any] = field(default_factory=dict)
    created_at: datetime
    updated_at: datetime
    #: When it is due (a freerun fire's instant, an ad-hoc task's ``--at``).
    scheduled_at: datetime | None = None
    #: Last time it was published to the broker.
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    #: When an invalid attempt becomes eligible to run again.
    retry_at: datetime | None = None
    heartbeat_at: datetime | None = None
    worker_id: str | None = None
    box_id: str | None = None
    pid: int | None = None
    exit_code: int | None = None
    #: Tail of the output of the last attempt (bounded by the worker).
    output: str | None = None
    #: Why the last attempt failed (exception with traceback, timeout, worker lost ...).
    error: str | None = None
    #: A flow run (SPEC section 10): its steps are units of work whose ``parent`` is its id.
    flow: bool = False
    #: A step of a flow run: the flow run's id and the step's name.
    parent: str | None = None
    step: str | None = None
    #: What a step handed to its dependents (a JSON object, at most 64 KiB).
    result: Mapping[str, Any] | None = None
    #: The payload it was given (SPEC section 12): a task's, a trigger's or its entry's.
    payload_id: str | None = None
    version: int = 1
    #: The payload's bytes, never stored with the unit of work: a worker loads them when it
    #: claims the unit of work (``uow.payload`` in a worker class); None everywhere else.
    payload: bytes | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class Payload:
    """Bytes given to units of work (SPEC section 12), stored once per content: ``sha256`` is
    unique, so posting the same bytes again gives this payload back."""

    id: str
    #: SHA-256 of ``data``, 64 lower-case hex digits.
    sha256: str
    size: int
    content_type: str
    created_at: datetime
    #: The bytes; None when only the description was read.
    data: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class UowMessage:
    """One message a running unit of work emitted (SPEC section 12)."""

    uow_id: str
    #: 1, 2, 3 ... in the order the unit of work emitted them, over all its attempts.
    seq: int
    attempt: int
    at: datetime
    text: str


@dataclass(frozen=True, kw_only=True, slots=True)
class MessagePage:
    """Messages of one unit of work in ``seq`` order, and what its cap left out."""

    items: list[UowMessage]
    #: Messages emitted past ``max_messages_per_uow``: not stored (the oldest are kept).
    dropped: int = 0
    #: Whether messages follow the last item (ask again with ``after`` = its ``seq``).
    more: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    """One entry of an entity's history: who changed what, when, from which state to which, why."""

    entity: str
    entity_id: str
    at: datetime
    trigger: str
    from_state: str | None
    to_state: str | None
    actor: str
    reason: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class UowTransition:
    """One compare-and-set of :meth:`db.store.Store.transition_uows`: the arguments of
    :meth:`~db.store.Store.transition_uow`, to be written together with others."""

    uow_id: str
    expected_state: UowState
    new_state: UowState
    event: Event
    changes: Mapping[str, Any] | None = None
    expected_version: int | None = None
    #: Compare-and-sets that apply together with this one, all or none (a step's outcome with
    #: its flow run and the steps it releases). Backends without multi-document transactions
    #: apply them one after the other and stop at the first refusal (see
    #: :attr:`db.store.Store.atomic_groups`).
    together: tuple[UowTransition, ...] = ()
    #: The job moves this step's outcome allows at once (a catch-up's next period,
    #: :mod:`db.chain`): written in the step's transaction if they all still apply, else left
    #: out (the step applies alone and the scheduler decides them at its next look). Backends
    #: without transactions leave them out always.
    chain: JobChain | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class JobChain:
    """What a managed unit of work's outcome moves on at once (:mod:`db.chain`): its job
    finished, the next period's job started with its unit of work, and (store queue) the
    message announcing that unit of work; all or none."""

    finish: JobTransition
    start: JobStart
    put: tuple[tuple[str, bytes], ...] = ()
    #: The claim of the started unit of work by the worker whose outcome this is, when it
    #: takes it at once (``start.uow`` is then stored in progress, after its creation event).
    claim_event: Event | None = None
    #: When the message is available (the settlement's instant, so the same commit's refill
    #: claim takes it); None: the finish's.
    put_at: datetime | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class JobTransition:
    """One compare-and-set of :meth:`db.store.Store.transition_jobs`: the arguments of
    :meth:`~db.store.Store.transition_job`, to be written together with others."""

    process: str
    timeperiod: str
    expected_state: JobState
    new_state: JobState
    event: Event
    changes: Mapping[str, Any] | None = None
    expected_version: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class JobStart:
    """One start of :meth:`db.store.Store.start_jobs`: the arguments of
    :meth:`~db.store.Store.start_job`, to be written together with others."""

    process: str
    timeperiod: str
    expected_state: JobState
    expected_version: int
    new_state: JobState
    event: Event
    uow: UnitOfWork
    uow_event: Event


@dataclass(frozen=True, kw_only=True, slots=True)
class UowInstants:
    """A unit of work's process and the instants of its dispatch (``/metrics`` reads the
    newest 500: these columns only, not whole units of work)."""

    process: str
    created_at: datetime
    scheduled_at: datetime | None = None
    submitted_at: datetime | None = None
    started_at: datetime | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class FireRecord:
    """One scheduled fire of a freerun trigger; unique by (process, scheduled_at)."""

    process: str
    scheduled_at: datetime
    outcome: FireOutcome
    uow_id: str | None = None
    recorded_at: datetime
    reason: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class SupervisedProcess:
    """Desired and actual state of one process on one box (the box configuration)."""

    box_id: str
    process: str
    #: Whether the operator wants it running on this box.
    desired: bool = True
    state: SupervisedState = SupervisedState.STOPPED
    pid: int | None = None
    #: psutil create_time of ``pid``: pid plus create time identifies the OS process.
    create_time: float | None = None
    started_at: datetime | None = None
    stopped_at: datetime | None = None
    exit_code: int | None = None
    #: Failed starts in a row (drives backoff and fatal).
    start_attempts: int = 0
    backoff_until: datetime | None = None
    #: Last psutil facts (rss, cpu_percent ...), refreshed by the supervisor.
    stats: Mapping[str, Any] = field(default_factory=dict)
    updated_at: datetime
    version: int = 1

    @property
    def key(self) -> str:
        return f"{self.box_id}/{self.process}"


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerRecord:
    """A worker OS process and its heartbeat."""

    worker_id: str
    process: str
    box_id: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    #: ``alive``, ``stopped`` or ``lost``.
    state: str = "alive"
    current_uow: str | None = None
    concurrency: int = 1


@dataclass(frozen=True, kw_only=True, slots=True)
class QueuedMessage:
    """A message of the embedded queue kept in the store."""

    id: str
    queue: str
    body: bytes
    #: Not delivered before this instant (delayed delivery).
    available_at: datetime
    #: How many times it was claimed.
    deliveries: int = 0
    claimed_by: str | None = None
    #: The claim expires then and the message is delivered again (visibility timeout).
    claimed_until: datetime | None = None
    created_at: datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class QueueSettlement:
    """Embedded-queue writes to commit with unit-of-work changes
    (:meth:`db.store.QueueStore.settle_uows`): a worker on the store queue acks its delivery, puts
    the status message and claims the next messages in the commit that records the outcome."""

    #: Whose claims are acked, and who claims.
    consumer: str
    #: Ids of messages to delete, each only if ``consumer`` still holds its claim.
    ack: tuple[str, ...] = ()
    #: (queue, body) messages to insert, deliverable from ``now``, whether or not an ack held.
    put: tuple[tuple[str, bytes], ...] = ()
    #: Claim up to ``claim_limit`` deliverable messages of this queue (none when None).
    claim_queue: str | None = None
    claim_limit: int = 0
    now: datetime
    #: How long the new claims last.
    visibility: timedelta


@dataclass(frozen=True, kw_only=True, slots=True)
class QueueSettled:
    """What a committed :class:`QueueSettlement` did."""

    #: How many of ``ack`` were deleted (the others' claims were lost).
    acked: int
    #: The messages claimed, oldest first.
    claimed: tuple[QueuedMessage, ...] = ()
    #: The ids of the units of work the steps' chains started (:attr:`UowTransition.chain`):
    #: a chain left out is not here.
    chained: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class JobQuery:
    """Filter and order of :meth:`db.store.Store.find_jobs`."""

    process: str | None = None
    #: Jobs of any of these processes (a page of the dashboard: one read for its rows).
    processes: frozenset[str] | None = None
    states: frozenset[JobState] | None = None
    #: Inclusive lower and exclusive upper bound on the timeperiod string.
    from_timeperiod: str | None = None
    to_timeperiod: str | None = None
    #: Newest timeperiod first (the UI); False: oldest first (the scheduler's window).
    newest_first: bool = True


@dataclass(frozen=True, kw_only=True, slots=True)
class UowQuery:
    """Filter and order of :meth:`db.store.Store.find_uows`."""

    process: str | None = None
    states: frozenset[UowState] | None = None
    kind: UowKind | None = None
    #: Units of work of one job (managed): its timeperiod.
    timeperiod: str | None = None
    #: Only those with ``retry_at`` at or before this instant.
    retry_due_before: datetime | None = None
    #: Only those with ``submitted_at`` before this instant.
    submitted_before: datetime | None = None
    #: Only those with ``heartbeat_at`` before this instant (or never beaten).
    heartbeat_before: datetime | None = None
    #: Only the steps of this flow run.
    parent: str | None = None
    #: Only the steps of these names (with ``parent``).
    steps: frozenset[str] | None = None
    #: Only runs: no step of a flow run (a flow run counts once, as in ``count_uows``).
    top_level: bool = False
    #: Only flow runs (True) or only what is not a flow run (False).
    flow: bool | None = None
    #: Newest (highest id) first; False: oldest first.
    newest_first: bool = True


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list; pass ``next_cursor`` back to get the next page (None: last page)."""

    items: list[T]
    next_cursor: str | None = None
