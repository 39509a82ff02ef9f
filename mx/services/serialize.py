"""The JSON shapes of the REST API, shared by ``launch.py --json`` so scripts see one shape."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from db.models import (
    Event,
    FireRecord,
    Job,
    ProcessRecord,
    SupervisedProcess,
    UnitOfWork,
    WorkerRecord,
)


def instant(value: datetime | None) -> str | None:
    """``2026-11-01T05:30:00.123Z`` (UTC, milliseconds), or None."""
    if value is None:
        return None
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond // 1000:03d}"
    return text + "Z"


def process_json(
    record: ProcessRecord,
    *,
    counts: dict[str, int] | None = None,
    next_fire: datetime | None = None,
) -> dict[str, Any]:
    data = record.entry.to_dict()
    data.update(
        source=record.source.value,
        version=record.version,
        created_at=instant(record.created_at),
        updated_at=instant(record.updated_at),
        next_fire=instant(next_fire),
        counts=counts or {},
    )
    return data


def job_json(job: Job) -> dict[str, Any]:
    return {
        "process": job.process,
        "timeperiod": job.timeperiod,
        "qualifier": job.qualifier.value,
        "state": job.state.value,
        "uow_id": job.uow_id,
        "run": job.run,
        "version": job.version,
        "created_at": instant(job.created_at),
        "updated_at": instant(job.updated_at),
    }


def uow_json(uow: UnitOfWork) -> dict[str, Any]:
    return {
        "id": uow.id,
        "process": uow.process,
        "kind": uow.kind.value,
        "state": uow.state.value,
        "timeperiod": uow.timeperiod,
        "start_timeperiod": uow.start_timeperiod,
        "end_timeperiod": uow.end_timeperiod,
        "run_key": uow.run_key,
        "attempt": uow.attempt,
        "retries": uow.retries,
        "arguments": dict(uow.arguments),
        "created_at": instant(uow.created_at),
        "updated_at": instant(uow.updated_at),
        "scheduled_at": instant(uow.scheduled_at),
        "submitted_at": instant(uow.submitted_at),
        "started_at": instant(uow.started_at),
        "finished_at": instant(uow.finished_at),
        "retry_at": instant(uow.retry_at),
        "heartbeat_at": instant(uow.heartbeat_at),
        "worker_id": uow.worker_id,
        "box_id": uow.box_id,
        "pid": uow.pid,
        "exit_code": uow.exit_code,
        "output": uow.output,
        "error": uow.error,
        "flow": uow.flow,
        "parent": uow.parent,
        "step": uow.step,
        "result": None if uow.result is None or uow.flow else dict(uow.result),
        "payload_id": uow.payload_id,
        "version": uow.version,
    }


def event_json(event: Event) -> dict[str, Any]:
    return {
        "at": instant(event.at),
        "trigger": event.trigger,
        "from": event.from_state,
        "to": event.to_state,
        "actor": event.actor,
        "reason": event.reason,
        "details": dict(event.details),
    }


def fire_json(fire: FireRecord) -> dict[str, Any]:
    return {
        "process": fire.process,
        "scheduled_at": instant(fire.scheduled_at),
        "outcome": fire.outcome.value,
        "uow_id": fire.uow_id,
        "recorded_at": instant(fire.recorded_at),
        "reason": fire.reason,
    }


def supervised_json(record: SupervisedProcess) -> dict[str, Any]:
    return {
        "box_id": record.box_id,
        "process": record.process,
        "desired": "running" if record.desired else "stopped",
        "state": record.state.value,
        "pid": record.pid,
        "started_at": instant(record.started_at),
        "stopped_at": instant(record.stopped_at),
        "exit_code": record.exit_code,
        "start_attempts": record.start_attempts,
        "backoff_until": instant(record.backoff_until),
        "stats": _stats(record.stats),
        "updated_at": instant(record.updated_at),
    }


def _stats(stats: Mapping[str, Any]) -> dict[str, Any]:
    """The supervisor's facts, with the instant they were read in the API's format."""
    data = dict(stats)
    if isinstance(data.get("at"), str):
        with contextlib.suppress(ValueError):
            data["at"] = instant(datetime.fromisoformat(data["at"]).astimezone(UTC))
    return data


#: Worker ids of executors (SPEC section 11) start with this.
EXECUTOR_PREFIX = "http:"


def worker_json(
    worker: WorkerRecord, *, alive: bool | None = None, running: int | None = None
) -> dict[str, Any]:
    """A worker, an executor (``kind: "http"``) or a scheduler's presence record; ``running``:
    how many units of work it holds in progress (None: not counted)."""
    http = worker.worker_id.startswith(EXECUTOR_PREFIX)
    return {
        "worker_id": worker.worker_id,
        "kind": "http" if http else "local",
        # an executor's --name (its id reads http:<name>@<box>:<instance>)
        "name": worker.worker_id[len(EXECUTOR_PREFIX) :].partition("@")[0] if http else None,
        "slots": worker.concurrency,
        "running": running,
        "process": worker.process,
        "box_id": worker.box_id,
        "pid": worker.pid,
        "state": worker.state,
        "alive": alive,
        "current_uow": worker.current_uow,
        "concurrency": worker.concurrency,
        "started_at": instant(worker.started_at),
        "heartbeat_at": instant(worker.heartbeat_at),
    }
