"""Why has process P (at timeperiod T) not run, or what is it waiting for (SPEC section 14).

:func:`explain` reads the stored state and answers with a list of reasons, each a stable
``code``, a plain ``message`` and the ``facts`` it rests on (ids, states, instants, names).
It decides nothing itself: every gate is judged with the rule the scheduler decides with
(:mod:`db.gates`, :mod:`db.relations`, :func:`db.liveness.is_live`), so an explanation cannot
follow other rules than the decision it explains. The codes and where the scheduler applies
each rule are listed in ``docs/why.md``.

The answer is never empty: when nothing holds the process back, it says what it is doing
(``running``, ``queued``, ``due``) or what it did (``ran``, ``skipped``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from db.errors import InvalidInput, NotFound
from db.gates import (
    DEFAULT_MANAGED_TRIGGER,
    LOOK_WINDOW,
    BlockingVerdict,
    attempts_remain,
    blocking_verdict,
    closes_at,
    fire_baseline,
    free_slots,
    retry_time,
)
from db.liveness import is_live
from db.models import JobQuery, UowQuery
from db.relations import Registry, first_period, readiness, relation, timeperiod_of
from db.states import (
    ACTIVE_JOB_STATES,
    ACTIVE_UOW_STATES,
    FINISHED_JOB_STATES,
    SUCCESSFUL_JOB_STATES,
    Blocking,
    JobState,
    ProcessKind,
    StateMachineName,
    UowState,
)
from db.timeperiod import Timeperiod
from db.triggers import parse_trigger
from mx.services import validate
from mx.services.serialize import instant

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from db.models import FireRecord, Job, ProcessEntry, ProcessRecord, UnitOfWork, WorkerRecord
    from db.relations import Relation
    from db.store import Store

#: The process name of the scheduler's presence records (``scheduler/presence.py``).
SCHEDULER = "scheduler"
#: Related jobs or periods a fact lists at most (the count says how many there are).
LISTED = 20

#: Every code :func:`explain` can answer with, in the order reasons are listed.
CODES = (
    "disabled",
    "no_scheduler",
    "daemon",
    "no_job",
    "not_created",
    "not_due",
    "lag",
    "dependency_skipped",
    "blocked_by_dependency",
    "blocked_by_child",
    "held_back",
    "max_active",
    "retry_wait",
    "retries_exhausted",
    "canceled",
    "queued",
    "running",
    "due",
    "ran",
    "skipped",
    "no_worker",
)


def reason(code: str, message: str, **facts: Any) -> dict[str, Any]:
    """One reason in its API shape."""
    return {"code": code, "message": message, "facts": facts}


@dataclass(slots=True)
class _Look:
    """What one explanation reads once and every rule shares."""

    store: Store
    record: ProcessRecord
    now: datetime
    liveness: timedelta
    timezone: str
    reasons: list[dict[str, Any]] = field(default_factory=list)

    @property
    def entry(self) -> ProcessEntry:
        return self.record.entry

    def add(self, code: str, message: str, **facts: Any) -> None:
        self.reasons.append(reason(code, message, **facts))


def explain(
    store: Store,
    name: str,
    timeperiod: str | None = None,
    *,
    now: datetime,
    liveness: timedelta,
    default_timezone: str,
) -> dict[str, Any]:
    """Why ``name`` (at ``timeperiod``) has not run or is waiting, from the stored state.

    Args:
        store: the store.
        name: the process.
        timeperiod: a managed process's timeperiod; None: its oldest unfinished job, or the
            period containing ``now`` when all are finished. Freerun processes have none.
        now: the instant to judge against (the store's clock, as the scheduler's).
        liveness: how long a worker or scheduler may stay silent and still count as alive
            (``heartbeat_interval * heartbeat_misses``).
        default_timezone: the ``timezone`` setting (freerun triggers without their own).

    Returns:
        ``{"process", "kind", "timeperiod", "state", "checked_at", "reasons"}``; ``reasons``
        is a non-empty list of ``{"code", "message", "facts"}``.

    Raises:
        InvalidInput: a malformed name or timeperiod, or a timeperiod for a freerun process.
        NotFound: no such process.
    """
    validate.process_name(name, "name")
    if timeperiod is not None:
        validate.timeperiod(timeperiod)
    record = store.get_process(name)
    look = _Look(store, record, now, liveness, default_timezone)
    entry = record.entry
    if not entry.enabled:
        look.add(
            "disabled",
            f"{entry.name} is disabled: the scheduler neither fires it nor moves its jobs",
            process=entry.name,
            enabled=False,
            updated_at=instant(record.updated_at),
        )
    _scheduler(look)
    state = None
    if entry.kind is ProcessKind.MANAGED:
        job_period = _managed(look, timeperiod)
        timeperiod, state = job_period
    elif entry.kind is ProcessKind.FREERUN:
        if timeperiod is not None:
            raise InvalidInput(
                "timeperiod", "a freerun process has no timeperiods: leave timeperiod out"
            )
        _freerun(look)
    else:
        look.add(
            "daemon",
            f"{entry.name} is a daemon: the supervisor keeps it running on its boxes; "
            "the scheduler never fires it",
            process=entry.name,
            kind=entry.kind.value,
        )
    if not entry.enabled:
        # The scheduler skips a disabled process (``Scheduler._managed``, ``_freeruns``): none
        # of its jobs is due, whatever its gates say; ``disabled`` already names what holds it.
        look.reasons = [r for r in look.reasons if r["code"] != "due"]
    return {
        "process": entry.name,
        "kind": entry.kind.value,
        "timeperiod": timeperiod,
        "state": state,
        "checked_at": instant(now),
        "reasons": look.reasons,
    }


# -- presence -------------------------------------------------------------------------------------


def _presence(records: list[WorkerRecord]) -> list[dict[str, Any]]:
    return [
        {
            "worker_id": r.worker_id,
            "box_id": r.box_id,
            "state": r.state,
            "heartbeat_at": instant(r.heartbeat_at),
        }
        for r in sorted(records, key=lambda r: r.heartbeat_at, reverse=True)
    ]


def _silent(look: _Look, process: str) -> dict[str, Any] | None:
    """The presence facts of ``process``'s records when none of them is live (None when one
    is): the last heartbeat seen, every record, and the liveness they are judged by."""
    records = look.store.list_workers(process=process)
    if any(is_live(r, look.now, look.liveness) for r in records):
        return None
    return {
        "last_heartbeat": instant(max((r.heartbeat_at for r in records), default=None)),
        "records": _presence(records),
        "liveness_seconds": int(look.liveness.total_seconds()),
    }


def _seen(last: str | None) -> str:
    return f"the last heartbeat seen was at {last}" if last else "none has ever registered"


def _scheduler(look: _Look) -> None:
    """``no_scheduler``: no scheduler's presence record is alive (as ``/api/v1/health``)."""
    silent = _silent(look, SCHEDULER)
    if silent is None:
        return
    records = silent.pop("records")
    look.add(
        "no_scheduler",
        f"no live scheduler: {_seen(silent['last_heartbeat'])}; nothing is fired or moved "
        "until one runs",
        **silent,
        schedulers=records,
    )


def _workers(look: _Look) -> None:
    """``no_worker``: no live worker of the process on any box."""
    name = look.entry.name
    silent = _silent(look, name)
    if silent is None:
        return
    records = silent.pop("records")
    look.add(
        "no_worker",
        f"no live worker for {name} on any box: {_seen(silent['last_heartbeat'])}; its units "
        "of work wait until one runs",
        process=name,
        **silent,
        workers=records,
        boxes=list(look.entry.boxes),
    )


# -- managed ----------------------------------------------------------------------------------


def _managed(look: _Look, timeperiod: str | None) -> tuple[str, str | None]:
    """The reasons of one job; returns its timeperiod and state (None: no job)."""
    entry = look.entry
    window = look.store.find_jobs(
        JobQuery(process=entry.name, states=ACTIVE_JOB_STATES, newest_first=False),
        limit=entry.max_active + LOOK_WINDOW,
    ).items
    if timeperiod is None:
        period = (
            timeperiod_of(window[0])
            if window
            else Timeperiod.containing(entry.time_qualifier, look.now)
        )
    else:
        period = Timeperiod.parse(entry.time_qualifier, timeperiod)
    try:
        job = look.store.get_job(entry.name, str(period))
    except NotFound:
        _no_job(look, period)
        return str(period), None
    if job.state in FINISHED_JOB_STATES:
        _finished(look, job)
        return job.timeperiod, job.state.value
    registry = Registry.from_entries(
        r.entry for r in look.store.list_processes() if r.entry.kind is ProcessKind.MANAGED
    )
    if job.state is JobState.EMBRYO:
        _embryo(look, registry, job, window)
    else:
        _started(look, registry, job)
    _workers(look)
    return job.timeperiod, job.state.value


def _no_job(look: _Look, period: Timeperiod) -> None:
    """No job for the period: before the first one, not started yet, or not created yet."""
    entry = look.entry
    first = first_period(look.store, entry, look.now)
    if period < first:
        look.add(
            "no_job",
            f"{period} is before {first}, the first period of {entry.name}: it never gets a job",
            timeperiod=str(period),
            first_timeperiod=str(first),
        )
    elif period.start > look.now:
        look.add(
            "not_due",
            f"the period {period} has not started yet: it starts at {instant(period.start)}",
            timeperiod=str(period),
            starts_at=instant(period.start),
            ends_at=instant(period.end),
        )
    else:
        newest = look.store.find_jobs(JobQuery(process=entry.name), limit=1).items
        trigger = entry.trigger or DEFAULT_MANAGED_TRIGGER
        look.add(
            "not_created",
            f"the job of {period} is not created yet: the scheduler creates the missing jobs "
            f"on the process's trigger ({trigger})",
            timeperiod=str(period),
            newest_timeperiod=newest[0].timeperiod if newest else None,
            trigger=trigger,
        )


def _finished(look: _Look, job: Job) -> None:
    last = look.store.history("job", job.key)
    why = last[-1].reason if last else ""
    facts = {
        "timeperiod": job.timeperiod,
        "state": job.state.value,
        "job_id": job.id,
        "uow_id": job.uow_id,
        "updated_at": instant(job.updated_at),
        "reason": why,
    }
    if job.state is JobState.SKIPPED:
        look.add("skipped", f"the job {job.timeperiod} was skipped: {why}", **facts)
    else:
        look.add("ran", f"the job {job.timeperiod} ran: it is {job.state.value}", **facts)


def _embryo(look: _Look, registry: Registry, job: Job, window: list[Job]) -> None:
    """An embryo job: the gates of ``ManagedDriver._embryo`` and of the slots, in its order."""
    entry = look.entry
    period = timeperiod_of(job)
    discrete = entry.state_machine is StateMachineName.DISCRETE
    if discrete and look.now < closes_at(entry, period):
        until = closes_at(entry, period)
        if look.now < period.end:
            look.add(
                "not_due",
                f"the period {period} has not ended yet: it ends at {instant(period.end)}"
                + (f", and the job runs after its lag, at {instant(until)}" if entry.lag else ""),
                timeperiod=str(period),
                ends_at=instant(period.end),
                runs_after=instant(until),
            )
        else:
            look.add(
                "lag",
                f"the period {period} ended at {instant(period.end)}; the job waits out its lag "
                f"of {int(entry.lag.total_seconds())} s, until {instant(until)}",
                timeperiod=str(period),
                ended_at=instant(period.end),
                lag_seconds=int(entry.lag.total_seconds()),
                until=instant(until),
            )
        return
    if entry.blocking is not Blocking.NORMAL:
        ready = readiness(look.store, registry, job, look.now)
        verdict = blocking_verdict(entry.blocking, ready)
        if verdict is BlockingVerdict.SKIP:
            look.add(
                "dependency_skipped",
                f"dependency {', '.join(ready.skipped_dependencies)} skipped: with blocking "
                "dependencies the scheduler skips this job at its next look",
                timeperiod=job.timeperiod,
                dependencies=list(ready.skipped_dependencies),
                blocking=entry.blocking.value,
            )
            return
        if verdict is BlockingVerdict.WAIT:
            # blocking ``dependencies`` waits for its dependencies only (not its children)
            dependencies = entry.blocking is Blocking.DEPENDENCIES
            _blocked(look, registry, job, succeeded=dependencies, children=not dependencies)
            return
    older = [j for j in window if j.state is JobState.EMBRYO and j.timeperiod < job.timeperiod]
    if entry.max_active == 1 and older:
        look.add(
            "held_back",
            f"with max_active 1 periods start in time order: the earlier period "
            f"{older[0].timeperiod} ({older[0].state.value}) starts first",
            timeperiod=job.timeperiod,
            earlier_timeperiod=older[0].timeperiod,
            earlier_state=older[0].state.value,
            earlier_waiting=len(older),
        )
        return
    in_flight = _in_flight(look.store, window)
    if not free_slots(entry.max_active, len(in_flight)):
        look.add(
            "max_active",
            f"max_active {entry.max_active} reached: "
            + ", ".join(f"{u['uow_id']} ({u['timeperiod']}, {u['state']})" for u in in_flight)
            + " in flight",
            timeperiod=job.timeperiod,
            max_active=entry.max_active,
            in_flight=in_flight,
        )
        return
    look.add(
        "due",
        f"nothing blocks the job {job.timeperiod}: the scheduler starts it at its next look",
        timeperiod=job.timeperiod,
        state=job.state.value,
        trigger=entry.trigger or DEFAULT_MANAGED_TRIGGER,
    )


def _in_flight(store: Store, window: list[Job]) -> list[dict[str, Any]]:
    """The process's units of work in flight, as the driver counts them: the current unit of
    each started job of the active window, when requested, in progress or invalid."""
    found = []
    for job in window:
        if job.state is JobState.EMBRYO or not job.uow_id:
            continue
        uow = _uow(store, job.uow_id)
        if uow is not None and uow.state in ACTIVE_UOW_STATES:
            found.append({"uow_id": uow.id, "timeperiod": job.timeperiod, "state": uow.state.value})
    return found


def _uow(store: Store, uow_id: str) -> UnitOfWork | None:
    try:
        return store.get_uow(uow_id)
    except NotFound:
        return None


def _started(look: _Look, registry: Registry, job: Job) -> None:
    """An in_progress or final_run job: the gates of ``ManagedDriver._advance``."""
    entry = look.entry
    uow = _uow(look.store, job.uow_id) if job.uow_id else None
    if uow is None:
        look.add(
            "due",
            f"the unit of work of {job.timeperiod} is missing: the scheduler gives the job a "
            "fresh one at its next look",
            timeperiod=job.timeperiod,
            state=job.state.value,
            uow_id=job.uow_id,
        )
        return
    if uow.state in ACTIVE_UOW_STATES or uow.state is UowState.CANCELED:
        _unit(look, uow, timeperiod=job.timeperiod)
        return
    period = timeperiod_of(job)
    if job.state is JobState.IN_PROGRESS:
        if entry.state_machine is not StateMachineName.DISCRETE and look.now < period.end:
            trigger = entry.trigger or DEFAULT_MANAGED_TRIGGER
            next_look = parse_trigger(trigger, look.timezone).next_fire(look.now)
            look.add(
                "not_due",
                f"the period {period} is open until {instant(period.end)}: its next run comes "
                f"with its trigger ({trigger}), next at {instant(next_look)}",
                timeperiod=str(period),
                ends_at=instant(period.end),
                next_run=instant(next_look),
                uow_id=uow.id,
                uow_state=uow.state.value,
            )
            return
        ready = readiness(look.store, registry, job, look.now)
        if not ready.finalizable:
            _blocked(look, registry, job, succeeded=False)
            return
    look.add(
        "due",
        f"the unit of work {uow.id} is {uow.state.value} and nothing blocks the job: the "
        "scheduler moves it on at its next look",
        timeperiod=job.timeperiod,
        state=job.state.value,
        uow_id=uow.id,
        uow_state=uow.state.value,
    )


def _blocked(
    look: _Look, registry: Registry, job: Job, *, succeeded: bool, children: bool = True
) -> None:
    """One reason per related process that holds the job: ``blocked_by_dependency`` or
    ``blocked_by_child``, with the related jobs not done and the periods not created yet
    (``succeeded``: a dependency must be processed or noop, not just finished; ``children``:
    the tree children hold it too, as they do unless the gate is ``blocking: dependencies``)."""
    period = timeperiod_of(job)
    related = [("dependency", dep) for dep in registry.dependencies(job.process)]
    child = registry.child(job.process) if children else None
    if child is not None:
        related.append(("child", child))
    for kind, other in related:
        rel = relation(look.store, period, other, look.now, f"{kind} {other.name}")
        if rel.succeeded if succeeded and kind == "dependency" else rel.finished:
            continue
        _blocked_by(look, job, kind, other, rel, succeeded=succeeded and kind == "dependency")


def _blocked_by(
    look: _Look, job: Job, kind: str, other: ProcessEntry, rel: Relation, *, succeeded: bool
) -> None:
    done = SUCCESSFUL_JOB_STATES if succeeded else FINISHED_JOB_STATES
    holding = [j for j in rel.jobs if j.state not in done]
    words = [f"{j.timeperiod} {j.state.value}" for j in holding[:3]]
    if rel.missing:
        words.append(f"{len(rel.missing)} period(s) not created yet")
    need = "processed or noop" if succeeded else "finished"
    code = "blocked_by_dependency" if kind == "dependency" else "blocked_by_child"
    look.add(
        code,
        f"waiting for {kind} {other.name} to be {need}: " + ", ".join(words),
        timeperiod=job.timeperiod,
        process=other.name,
        enabled=other.enabled,
        jobs=[{"timeperiod": j.timeperiod, "state": j.state.value} for j in holding[:LISTED]],
        unfinished=len(holding),
        not_created=[str(p) for p in rel.missing[:LISTED]],
        not_created_count=len(rel.missing),
    )


def _unit(look: _Look, uow: UnitOfWork, **extra: Any) -> None:
    """A unit of work in flight or canceled: waiting for a retry, a worker, or running."""
    facts = {"uow_id": uow.id, "state": uow.state.value, "attempt": uow.attempt, **extra}
    if uow.state is UowState.INVALID:
        if attempts_remain(uow):
            until = retry_time(uow, look.entry.retry_delay)
            look.add(
                "retry_wait",
                f"attempt {uow.attempt} of {uow.retries + 1} of unit of work {uow.id} failed; "
                f"it is retried at {instant(until)}",
                **facts,
                retries=uow.retries,
                until=instant(until),
                error=uow.error,
            )
        else:
            look.add(
                "retries_exhausted",
                f"unit of work {uow.id} failed its last attempt ({uow.attempt} of "
                f"{uow.retries + 1}): the scheduler cancels it at its next recovery",
                **facts,
                retries=uow.retries,
                error=uow.error,
            )
    elif uow.state is UowState.CANCELED:
        look.add(
            "canceled",
            f"unit of work {uow.id} was canceled: the scheduler skips its job at its next look",
            **facts,
        )
    elif uow.state is UowState.REQUESTED:
        look.add(
            "queued",
            f"unit of work {uow.id} is requested since {instant(uow.submitted_at)}: "
            "waiting for a worker to claim it",
            **facts,
            submitted_at=instant(uow.submitted_at or uow.created_at),
        )
    else:
        look.add(
            "running",
            f"unit of work {uow.id} is running on worker {uow.worker_id}",
            **facts,
            worker_id=uow.worker_id,
            started_at=instant(uow.started_at),
            heartbeat_at=instant(uow.heartbeat_at),
        )


# -- freerun ----------------------------------------------------------------------------------


def _freerun(look: _Look) -> None:
    """A freerun: its next fire (``FreerunFirer.next_due``), ``max_active`` (``_planned``) and
    the units of work in flight."""
    entry, store = look.entry, look.store
    last = store.last_fire(entry.name)
    last_fire = (
        None
        if last is None
        else {
            "scheduled_at": instant(last.scheduled_at),
            "outcome": last.outcome.value,
            "uow_id": last.uow_id,
            "reason": last.reason,
        }
    )
    query = UowQuery(
        process=entry.name, states=ACTIVE_UOW_STATES, newest_first=False, top_level=True
    )
    in_flight = store.find_uows(query, limit=entry.max_active + LISTED).items
    if entry.enabled:
        # A disabled freerun is never fired (``Scheduler._freeruns``), and re-enabling it (an
        # edit) moves its baseline: it has no next fire to name, nor one to skip.
        _fires(look, last, last_fire, in_flight)
    for uow in in_flight[:LISTED]:
        _unit(look, uow)
    if not in_flight:
        newest = store.find_uows(UowQuery(process=entry.name, top_level=True), limit=1).items
        if newest:
            uow = newest[0]
            look.add(
                "ran",
                f"its last unit of work {uow.id} is {uow.state.value}",
                uow_id=uow.id,
                state=uow.state.value,
                finished_at=instant(uow.finished_at),
            )
    _workers(look)


def _fires(
    look: _Look,
    last: FireRecord | None,
    last_fire: dict[str, Any] | None,
    in_flight: list[UnitOfWork],
) -> None:
    """An enabled freerun's next fire: ``not_due``, ``max_active`` or ``due``."""
    entry = look.entry
    trigger = parse_trigger(entry.trigger or "", entry.timezone or look.timezone)
    due = trigger.next_fire(fire_baseline(look.record.updated_at, last))
    if due is None:
        look.add(
            "not_due",
            f"the trigger {entry.trigger!r} fires no more",
            trigger=entry.trigger,
            next_fire=None,
            last_fire=last_fire,
        )
    elif due > look.now:
        look.add(
            "not_due",
            f"the next fire of {entry.trigger!r} is at {instant(due)}",
            trigger=entry.trigger,
            next_fire=instant(due),
            last_fire=last_fire,
        )
    if not free_slots(entry.max_active, len(in_flight)):
        look.add(
            "max_active",
            f"max_active {entry.max_active} reached: "
            + ", ".join(f"{u.id} ({u.state.value})" for u in in_flight)
            + " in flight; a fire meanwhile is recorded as skipped",
            max_active=entry.max_active,
            in_flight=[{"uow_id": u.id, "state": u.state.value} for u in in_flight],
            last_fire=last_fire,
        )
    elif due is not None and due <= look.now:
        look.add(
            "due",
            f"the fire at {instant(due)} is due: the scheduler fires it at its next pass",
            trigger=entry.trigger,
            next_fire=instant(due),
            last_fire=last_fire,
        )
