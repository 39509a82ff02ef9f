"""Conversion between Tactus values and MongoDB documents.

Enum members are stored as their string values, instants as BSON datetimes (milliseconds, UTC),
and a process's entry in its file form (:meth:`~db.models.ProcessEntry.to_dict`). Every read
turns instants back into aware UTC datetimes, whatever the client returned.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from db.errors import InvalidInput
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

#: Events kept per entity; older ones are dropped by ``$push``'s ``$slice``.
HISTORY_LIMIT = 500
#: Unit-of-work fields holding instants.
UOW_INSTANTS = frozenset(
    {
        "created_at",
        "updated_at",
        "scheduled_at",
        "submitted_at",
        "started_at",
        "finished_at",
        "retry_at",
        "heartbeat_at",
    }
)
#: Supervised-process fields holding instants.
SUPERVISED_INSTANTS = frozenset({"started_at", "stopped_at", "backoff_until", "updated_at"})


def no_history() -> dict[str, Any]:
    """Projection for ordinary reads: the embedded history can be long; ``history()`` reads it.

    A new dict per call: mongomock adds ``"_id": 1`` to the projection it is given, and a shared
    ``{"history": False, "_id": 1}`` then makes nx-27017 return nothing but ``_id``.
    """
    return {"history": False}


# -- instants -----------------------------------------------------------------------------------


def to_utc(value: datetime, field: str) -> datetime:
    """An aware instant as stored: UTC, truncated to milliseconds as BSON does.

    Raises:
        InvalidInput: ``value`` is naive (field ``field``).
    """
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidInput(field, f"must be an aware datetime (got {value!r})")
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond - value.microsecond % 1000)


def to_utc_or_none(value: datetime | None, field: str) -> datetime | None:
    """:func:`to_utc`, passing None through."""
    return None if value is None else to_utc(value, field)


def aware_utc(value: datetime) -> datetime:
    """An instant read back, as aware UTC (mongomock may hand back naive ones)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def from_stored(value: datetime | None) -> datetime | None:
    """:func:`aware_utc`, passing None through."""
    return None if value is None else aware_utc(value)


def stored_values(changes: Mapping[str, Any], instants: frozenset[str]) -> dict[str, Any]:
    """``changes`` in stored form: instants normalised, mappings as plain dicts."""
    values: dict[str, Any] = {}
    for name, value in changes.items():
        if name in instants:
            values[name] = to_utc_or_none(value, name)
        elif isinstance(value, Mapping):
            values[name] = dict(value)
        else:
            values[name] = value
    return values


def _instant(doc: Mapping[str, Any], field: str) -> datetime:
    return aware_utc(doc[field])


# -- events -------------------------------------------------------------------------------------


def event_doc(event: Event) -> dict[str, Any]:
    """The stored form of one history event."""
    return {
        "entity": event.entity,
        "entity_id": event.entity_id,
        "at": to_utc(event.at, "event.at"),
        "trigger": event.trigger,
        "from_state": event.from_state,
        "to_state": event.to_state,
        "actor": event.actor,
        "reason": event.reason,
        "details": dict(event.details),
    }


def push_event(event: Event) -> dict[str, Any]:
    """The ``$push`` clause appending ``event`` to a document's capped history."""
    return {"history": {"$each": [event_doc(event)], "$slice": -HISTORY_LIMIT}}


def event_from_doc(doc: Mapping[str, Any]) -> Event:
    """Inverse of :func:`event_doc`."""
    return Event(
        entity=doc["entity"],
        entity_id=doc["entity_id"],
        at=_instant(doc, "at"),
        trigger=doc["trigger"],
        from_state=doc.get("from_state"),
        to_state=doc.get("to_state"),
        actor=doc["actor"],
        reason=doc.get("reason") or "",
        details=dict(doc.get("details") or {}),
    )


# -- processes ----------------------------------------------------------------------------------


def process_doc(record: ProcessRecord) -> dict[str, Any]:
    """The stored form of a process (without its history)."""
    return {
        "name": record.entry.name,
        "kind": record.entry.kind.value,
        "entry": record.entry.to_dict(),
        "source": record.source.value,
        "registered": None if record.registered is None else dict(record.registered),
        "version": record.version,
        "created_at": to_utc(record.created_at, "created_at"),
        "updated_at": to_utc(record.updated_at, "updated_at"),
    }


def process_from_doc(doc: Mapping[str, Any]) -> ProcessRecord:
    """Inverse of :func:`process_doc`."""
    registered = doc.get("registered")
    return ProcessRecord(
        entry=ProcessEntry.from_dict(doc["entry"]),
        source=ProcessSource(doc["source"]),
        registered=None if registered is None else dict(registered),
        version=doc["version"],
        created_at=_instant(doc, "created_at"),
        updated_at=_instant(doc, "updated_at"),
    )


# -- jobs ---------------------------------------------------------------------------------------


def job_doc(job: Job) -> dict[str, Any]:
    """The stored form of a new job, with an empty history."""
    return {
        "_id": job.id,
        "process": job.process,
        "qualifier": job.qualifier.value,
        "timeperiod": job.timeperiod,
        "state": job.state.value,
        "uow_id": job.uow_id,
        "run": job.run,
        "created_at": to_utc(job.created_at, "created_at"),
        "updated_at": to_utc(job.updated_at, "updated_at"),
        "version": job.version,
        "history": [],
    }


def job_from_doc(doc: Mapping[str, Any]) -> Job:
    """Inverse of :func:`job_doc`."""
    return Job(
        id=doc["_id"],
        process=doc["process"],
        qualifier=Qualifier(doc["qualifier"]),
        timeperiod=doc["timeperiod"],
        state=JobState(doc["state"]),
        uow_id=doc.get("uow_id"),
        run=doc.get("run", 0),
        created_at=_instant(doc, "created_at"),
        updated_at=_instant(doc, "updated_at"),
        version=doc["version"],
    )


# -- units of work ------------------------------------------------------------------------------

_UOW_PLAIN_FIELDS = (
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
    "parent",
    "step",
    "payload_id",
)


def uow_doc(uow: UnitOfWork) -> dict[str, Any]:
    """The stored form of a new unit of work, with an empty history."""
    doc: dict[str, Any] = {"_id": uow.id, "kind": uow.kind.value, "state": uow.state.value}
    doc.update((name, getattr(uow, name)) for name in _UOW_PLAIN_FIELDS)
    doc.update((name, to_utc_or_none(getattr(uow, name), name)) for name in UOW_INSTANTS)
    doc["arguments"] = dict(uow.arguments)
    doc["flow"] = uow.flow
    doc["result"] = None if uow.result is None else dict(uow.result)
    doc["history"] = []
    return doc


def uow_from_doc(doc: Mapping[str, Any]) -> UnitOfWork:
    """Inverse of :func:`uow_doc`."""
    values: dict[str, Any] = {name: doc.get(name) for name in _UOW_PLAIN_FIELDS}
    values.update((name, from_stored(doc.get(name))) for name in UOW_INSTANTS)
    return UnitOfWork(
        id=doc["_id"],
        kind=UowKind(doc["kind"]),
        state=UowState(doc["state"]),
        arguments=dict(doc.get("arguments") or {}),
        flow=bool(doc.get("flow", False)),
        result=doc.get("result"),
        **values,
    )


# -- fires --------------------------------------------------------------------------------------


def fire_doc(fire: FireRecord) -> dict[str, Any]:
    """The stored form of one freerun fire."""
    return {
        "process": fire.process,
        "scheduled_at": to_utc(fire.scheduled_at, "scheduled_at"),
        "outcome": fire.outcome.value,
        "uow_id": fire.uow_id,
        "recorded_at": to_utc(fire.recorded_at, "recorded_at"),
        "reason": fire.reason,
    }


def fire_from_doc(doc: Mapping[str, Any]) -> FireRecord:
    """Inverse of :func:`fire_doc`."""
    return FireRecord(
        process=doc["process"],
        scheduled_at=_instant(doc, "scheduled_at"),
        outcome=FireOutcome(doc["outcome"]),
        uow_id=doc.get("uow_id"),
        recorded_at=_instant(doc, "recorded_at"),
        reason=doc.get("reason") or "",
    )


# -- supervised processes and workers -----------------------------------------------------------


def supervised_doc(record: SupervisedProcess) -> dict[str, Any]:
    """The stored form of a new supervised process, with an empty history."""
    return {
        "box_id": record.box_id,
        "process": record.process,
        "desired": record.desired,
        "state": record.state.value,
        "pid": record.pid,
        "create_time": record.create_time,
        "started_at": to_utc_or_none(record.started_at, "started_at"),
        "stopped_at": to_utc_or_none(record.stopped_at, "stopped_at"),
        "exit_code": record.exit_code,
        "start_attempts": record.start_attempts,
        "backoff_until": to_utc_or_none(record.backoff_until, "backoff_until"),
        "stats": dict(record.stats),
        "updated_at": to_utc(record.updated_at, "updated_at"),
        "version": record.version,
        "history": [],
    }


def supervised_from_doc(doc: Mapping[str, Any]) -> SupervisedProcess:
    """Inverse of :func:`supervised_doc`."""
    return SupervisedProcess(
        box_id=doc["box_id"],
        process=doc["process"],
        desired=bool(doc.get("desired", True)),
        state=SupervisedState(doc["state"]),
        pid=doc.get("pid"),
        create_time=doc.get("create_time"),
        started_at=from_stored(doc.get("started_at")),
        stopped_at=from_stored(doc.get("stopped_at")),
        exit_code=doc.get("exit_code"),
        start_attempts=doc.get("start_attempts", 0),
        backoff_until=from_stored(doc.get("backoff_until")),
        stats=dict(doc.get("stats") or {}),
        updated_at=_instant(doc, "updated_at"),
        version=doc["version"],
    )


def worker_doc(worker: WorkerRecord) -> dict[str, Any]:
    """The stored form of a worker registration, keyed by ``worker_id``."""
    return {
        "_id": worker.worker_id,
        "process": worker.process,
        "box_id": worker.box_id,
        "pid": worker.pid,
        "started_at": to_utc(worker.started_at, "started_at"),
        "heartbeat_at": to_utc(worker.heartbeat_at, "heartbeat_at"),
        "state": worker.state,
        "current_uow": worker.current_uow,
        "concurrency": worker.concurrency,
    }


def worker_from_doc(doc: Mapping[str, Any]) -> WorkerRecord:
    """Inverse of :func:`worker_doc`."""
    return WorkerRecord(
        worker_id=doc["_id"],
        process=doc["process"],
        box_id=doc["box_id"],
        pid=doc["pid"],
        started_at=_instant(doc, "started_at"),
        heartbeat_at=_instant(doc, "heartbeat_at"),
        state=doc.get("state", "alive"),
        current_uow=doc.get("current_uow"),
        concurrency=doc.get("concurrency", 1),
    )
