"""Conversions between the frozen values of :mod:`db.models` and rows of :mod:`.schema`.

``*_row`` functions build the dict that is inserted, with instants already normalised to aware
UTC milliseconds, so that a value returned by an insert equals the one read back later.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from db.clock import require_aware, truncate_ms
from db.models import (
    Event,
    FireRecord,
    Job,
    ProcessEntry,
    ProcessRecord,
    SupervisedProcess,
    UnitOfWork,
    WorkerRecord,
)
from db.states import (
    FireOutcome,
    JobState,
    ProcessSource,
    Qualifier,
    SupervisedState,
    UowKind,
    UowState,
)

#: Fields holding instants, per entity; ``normalise`` checks and truncates them.
INSTANT_FIELDS = frozenset(
    {
        "created_at",
        "updated_at",
        "scheduled_at",
        "submitted_at",
        "started_at",
        "finished_at",
        "retry_at",
        "heartbeat_at",
        "stopped_at",
        "backoff_until",
        "recorded_at",
        "at",
    }
)


def instant(value: datetime | None, field: str) -> datetime | None:
    """An aware UTC datetime truncated to milliseconds (None stays None); refuses naive ones."""
    return None if value is None else truncate_ms(require_aware(value, field))


def normalise(values: Mapping[str, Any]) -> dict[str, Any]:
    """Changes ready to bind: instants checked and truncated, mappings copied to plain dicts."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name in INSTANT_FIELDS:
            value = instant(value, name)
        elif isinstance(value, Mapping):
            value = dict(value)
        out[name] = value
    return out


# -- processes ------------------------------------------------------------------------------------


def process_row(record: ProcessRecord, *, version: int) -> dict[str, Any]:
    """The row of a process record, stored with ``version``."""
    return {
        "name": record.entry.name,
        "kind": record.entry.kind.value,
        "entry": record.entry.to_dict(),
        "registered": None if record.registered is None else dict(record.registered),
        "source": record.source.value,
        "version": version,
        "created_at": instant(record.created_at, "created_at"),
        "updated_at": instant(record.updated_at, "updated_at"),
    }


def process_from(row: Mapping[str, Any]) -> ProcessRecord:
    """The process record of a ``processes`` row."""
    return ProcessRecord(
        entry=ProcessEntry.from_dict(row["entry"]),
        source=ProcessSource(row["source"]),
        registered=row["registered"],
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


# -- jobs -----------------------------------------------------------------------------------------


def job_row(job: Job) -> dict[str, Any]:
    """The row of a job."""
    return {
        "id": job.id,
        "process": job.process,
        "qualifier": Qualifier(job.qualifier).value,
        "timeperiod": job.timeperiod,
        "state": JobState(job.state).value,
        "uow_id": job.uow_id,
        "run": job.run,
        "version": job.version,
        "created_at": instant(job.created_at, "created_at"),
        "updated_at": instant(job.updated_at, "updated_at"),
    }


def job_from(row: Mapping[str, Any]) -> Job:
    """The job of a ``jobs`` row."""
    return Job(
        id=row["id"],
        process=row["process"],
        qualifier=Qualifier(row["qualifier"]),
        timeperiod=row["timeperiod"],
        state=JobState(row["state"]),
        uow_id=row["uow_id"],
        run=row["run"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
    )


# -- units of work --------------------------------------------------------------------------------

_UOW_PLAIN = (
    "id",
    "process",
    "start_timeperiod",
    "end_timeperiod",
    "run_key",
    "timeperiod",
    "attempt",
    "retries",
    "worker_id",
    "box_id",
    "pid",
    "exit_code",
    "output",
    "error",
    "version",
    "flow",
    "parent",
    "step",
    "payload_id",
)
_UOW_INSTANTS = (
    "created_at",
    "updated_at",
    "scheduled_at",
    "submitted_at",
    "started_at",
    "finished_at",
    "retry_at",
    "heartbeat_at",
)


def uow_row(uow: UnitOfWork) -> dict[str, Any]:
    """The row of a unit of work."""
    row = {name: getattr(uow, name) for name in _UOW_PLAIN}
    row.update({name: instant(getattr(uow, name), name) for name in _UOW_INSTANTS})
    row["kind"] = UowKind(uow.kind).value
    row["state"] = UowState(uow.state).value
    row["arguments"] = dict(uow.arguments)
    row["result"] = None if uow.result is None else dict(uow.result)
    return row


def uow_from(row: Mapping[str, Any]) -> UnitOfWork:
    """The unit of work of a ``uows`` row."""
    values = {name: row[name] for name in (*_UOW_PLAIN, *_UOW_INSTANTS)}
    values["flow"] = bool(values["flow"])
    return UnitOfWork(
        kind=UowKind(row["kind"]),
        state=UowState(row["state"]),
        arguments=row["arguments"],
        result=row["result"],
        **values,
    )


# -- history --------------------------------------------------------------------------------------


def event_row(event: Event) -> dict[str, Any]:
    """The row of a history event."""
    return {
        "entity": event.entity,
        "entity_id": event.entity_id,
        "at": instant(event.at, "at"),
        "trigger": event.trigger,
        "from_state": None if event.from_state is None else str(event.from_state),
        "to_state": None if event.to_state is None else str(event.to_state),
        "actor": event.actor,
        "reason": event.reason,
        "details": dict(event.details),
    }


def event_from(row: Mapping[str, Any]) -> Event:
    """The history event of an ``events`` row."""
    return Event(
        entity=row["entity"],
        entity_id=row["entity_id"],
        at=row["at"],
        trigger=row["trigger"],
        from_state=row["from_state"],
        to_state=row["to_state"],
        actor=row["actor"],
        reason=row["reason"],
        details=row["details"],
    )


# -- fires ----------------------------------------------------------------------------------------


def fire_row(fire: FireRecord) -> dict[str, Any]:
    """The row of a freerun fire."""
    return {
        "process": fire.process,
        "scheduled_at": instant(fire.scheduled_at, "scheduled_at"),
        "outcome": FireOutcome(fire.outcome).value,
        "uow_id": fire.uow_id,
        "recorded_at": instant(fire.recorded_at, "recorded_at"),
        "reason": fire.reason,
    }


def fire_from(row: Mapping[str, Any]) -> FireRecord:
    """The fire of a ``fires`` row."""
    return FireRecord(
        process=row["process"],
        scheduled_at=row["scheduled_at"],
        outcome=FireOutcome(row["outcome"]),
        uow_id=row["uow_id"],
        recorded_at=row["recorded_at"],
        reason=row["reason"],
    )


# -- supervised processes and workers -------------------------------------------------------------


def supervised_row(record: SupervisedProcess) -> dict[str, Any]:
    """The row of a supervised process."""
    return {
        "box_id": record.box_id,
        "process": record.process,
        "desired": record.desired,
        "state": SupervisedState(record.state).value,
        "pid": record.pid,
        "create_time": record.create_time,
        "started_at": instant(record.started_at, "started_at"),
        "stopped_at": instant(record.stopped_at, "stopped_at"),
        "exit_code": record.exit_code,
        "start_attempts": record.start_attempts,
        "backoff_until": instant(record.backoff_until, "backoff_until"),
        "stats": dict(record.stats),
        "updated_at": instant(record.updated_at, "updated_at"),
        "version": record.version,
    }


def supervised_from(row: Mapping[str, Any]) -> SupervisedProcess:
    """The supervised process of a ``supervised`` row."""
    return SupervisedProcess(
        box_id=row["box_id"],
        process=row["process"],
        desired=bool(row["desired"]),
        state=SupervisedState(row["state"]),
        pid=row["pid"],
        create_time=row["create_time"],
        started_at=row["started_at"],
        stopped_at=row["stopped_at"],
        exit_code=row["exit_code"],
        start_attempts=row["start_attempts"],
        backoff_until=row["backoff_until"],
        stats=row["stats"],
        updated_at=row["updated_at"],
        version=row["version"],
    )


_WORKER_FIELDS = (
    "worker_id",
    "process",
    "box_id",
    "pid",
    "started_at",
    "heartbeat_at",
    "state",
    "current_uow",
    "concurrency",
)


def worker_row(worker: WorkerRecord) -> dict[str, Any]:
    """The row of a worker."""
    return {
        "worker_id": worker.worker_id,
        "process": worker.process,
        "box_id": worker.box_id,
        "pid": worker.pid,
        "started_at": instant(worker.started_at, "started_at"),
        "heartbeat_at": instant(worker.heartbeat_at, "heartbeat_at"),
        "state": worker.state,
        "current_uow": worker.current_uow,
        "concurrency": worker.concurrency,
    }


def worker_from(row: Mapping[str, Any]) -> WorkerRecord:
    """The worker of a ``workers`` row."""
    return WorkerRecord(**{name: row[name] for name in _WORKER_FIELDS})
