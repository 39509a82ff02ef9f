"""Runs as the page draws them: a job's attempts on a time line, a process's recent runs with
their durations and landing times, and the last 24 hours of every shown process (the Gantt).

An attempt is read from its unit of work's history: the ``claim`` event starts it and the next
event that leaves ``in_progress`` ends it (processed, noop, invalid, canceled, or requested when
a stopping worker handed it back). Every read is bounded by what is drawn: at most ``limit``
units of work per process, one history read per unit of work drawn with its attempts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from db.models import UowQuery
from db.states import ProcessKind, UowState
from db.timeperiod import Timeperiod
from mx.services import validate

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    from db.models import Event, ProcessRecord, UnitOfWork
    from db.store import Store

#: Units of work drawn with their attempts on a job's page (newest first).
JOB_ATTEMPT_UOWS = 20
#: Recent runs on a process's duration chart.
RECENT_RUNS = 30
#: Runs per process in the dashboard's last 24 hours (its newest units of work).
DAY_RUNS = 50
#: The window of the dashboard's Gantt.
DAY = timedelta(hours=24)
#: The unit of work state an attempt is in while it runs.
RUNNING = UowState.IN_PROGRESS.value


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt of a unit of work: from its claim to the event that ended it."""

    uow_id: str
    number: int
    started: datetime
    #: None: still running.
    finished: datetime | None
    #: The state the attempt ended in (``in_progress`` while it runs).
    outcome: str
    exit_code: int | None = None
    #: What a Python worker's ``process_uow`` came to (``details.returned``), else None.
    returned: str | None = None


@dataclass(frozen=True, slots=True)
class Run:
    """One unit of work's latest attempt, as the duration chart and the Gantt draw it."""

    process: str
    uow_id: str
    state: str
    #: The job's timeperiod, or the instant the unit of work was scheduled or made.
    label: str
    started: datetime
    finished: datetime | None
    #: How long it ran (to ``now`` while it runs).
    seconds: float
    #: When it finished after its period closed (managed) or after it was scheduled (freerun);
    #: None while it runs.
    landed_after: float | None = None
    timeperiod: str | None = None


def instant_of(uow: UnitOfWork) -> datetime:
    """The instant a unit of work stands for when it has no timeperiod: scheduled, else made."""
    return uow.scheduled_at or uow.submitted_at or uow.created_at


def attempts(events: Iterable[Event], uow_id: str) -> list[Attempt]:
    """The attempts a unit of work's history records, oldest first."""
    found: list[Attempt] = []
    open_at: datetime | None = None
    number = 0
    for event in sorted(events, key=lambda e: e.at):
        if event.trigger == "claim":
            open_at = event.at
            number = int(event.details.get("attempt") or number + 1)
        elif event.from_state == RUNNING and open_at is not None:
            found.append(
                Attempt(
                    uow_id=uow_id,
                    number=number,
                    started=open_at,
                    finished=event.at,
                    outcome=event.to_state or "",
                    exit_code=event.details.get("exit_code"),
                    returned=event.details.get("returned"),
                )
            )
            open_at = None
    if open_at is not None:
        found.append(
            Attempt(uow_id=uow_id, number=number, started=open_at, finished=None, outcome=RUNNING)
        )
    return found


def returned(events: Iterable[Event]) -> str | None:
    """What the latest finished attempt's worker class returned (``details.returned``)."""
    value = None
    for event in sorted(events, key=lambda e: e.at):
        if event.from_state == RUNNING and "returned" in event.details:
            value = event.details["returned"]
    return value


def job_attempts(store: Store, uows: list[UnitOfWork]) -> dict[str, list[Attempt]]:
    """The attempts of a job's newest :data:`JOB_ATTEMPT_UOWS` units of work, by id."""
    return {u.id: attempts(store.history("uow", u.id), u.id) for u in uows[:JOB_ATTEMPT_UOWS]}


def recent_runs(store: Store, name: str, *, now: datetime, limit: int = RECENT_RUNS) -> list[Run]:
    """Of the process ``name``'s newest ``limit`` units of work, those that started, oldest
    first (a daemon has none).

    Raises:
        InvalidInput: a malformed name.
        NotFound: no such process.
    """
    record = store.get_process(validate.process_name(name, "name"))
    if record.entry.kind is ProcessKind.DAEMON:
        return []
    uows = store.find_uows(UowQuery(process=record.name, top_level=True), limit=limit).items
    return [_run(record, u, now) for u in reversed(uows) if u.started_at is not None]


def last_day(
    store: Store, records: Iterable[ProcessRecord], *, now: datetime, limit: int = DAY_RUNS
) -> list[tuple[str, list[Run]]]:
    """Per process, its runs of the last 24 hours that started (at most ``limit``, the newest),
    oldest first."""
    since = now - DAY
    rows = []
    for record in records:
        uows = store.find_uows(UowQuery(process=record.name, top_level=True), limit=limit).items
        runs = [
            _run(record, u, now)
            for u in reversed(uows)
            if u.started_at is not None and (u.finished_at or now) > since
        ]
        rows.append((record.name, runs))
    return rows


def _run(record: ProcessRecord, uow: UnitOfWork, now: datetime) -> Run:
    assert uow.started_at is not None
    end = uow.finished_at
    landed = None
    if end is not None:
        managed = record.entry.kind is ProcessKind.MANAGED and record.entry.time_qualifier
        if managed and uow.timeperiod:
            closed = Timeperiod.parse(record.entry.time_qualifier, uow.timeperiod).end
        else:
            closed = instant_of(uow)
        landed = (end - closed).total_seconds()
    return Run(
        process=uow.process,
        uow_id=uow.id,
        state=uow.state.value,
        label=uow.timeperiod or instant_of(uow).strftime("%Y-%m-%d %H:%M:%S"),
        started=uow.started_at,
        finished=end,
        seconds=max(0.0, ((end or now) - uow.started_at).total_seconds()),
        landed_after=landed,
        timeperiod=uow.timeperiod,
    )
