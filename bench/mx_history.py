"""The history of bench/mx.py's store, made by a seeded generator: jobs, units of work and
events as the rows the SQL store writes (built by :mod:`db.backends.sql.rows` from the values
of :mod:`db.models`).

- every past job finished (about 97% processed, the rest skipped or noop; 3% of them
  reprocessed once, so two runs), the open periods embryo (discrete) or in progress
  (continuous); every job but an open discrete one has at least one unit of work, 4% of the
  units of work needed a second attempt;
- the freerun processes share what the managed ones leave of ``Shape.uows``;
- history events for everything that happened in the last ``Shape.event_days`` days (creation,
  claim and outcome of every unit of work; start, outcome and reprocess of every job) and the
  registration of every process.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from mx_shape import FREERUN_TRIGGERS, NOW, Shape

from db.backends.sql import rows
from db.backends.sql.schema import events, jobs, processes, uows
from db.models import Event, Job, ProcessRecord, UnitOfWork
from db.states import JobState, Qualifier, UowKind, UowState
from db.timeperiod import Timeperiod

Rows = Iterator[tuple[sa.Table, dict[str, Any]]]


class History:
    """Makes the rows of jobs, units of work and events, process by process."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.rng = random.Random(shape.seed)
        self.event_since = NOW - timedelta(days=shape.event_days)
        self.managed_uows = 0

    def _id(self, at: datetime) -> str:
        """An id of :func:`db.ids.new_id`'s shape for an instant in the past."""
        return f"{int(at.timestamp() * 1000):012x}{self.rng.getrandbits(48):012x}"

    def _event(
        self,
        trail: list[dict[str, Any]],
        entity: str,
        key: str,
        at: datetime,
        trigger: str,
        src: str | None,
        dst: str | None,
    ) -> None:
        """Append the event to ``trail`` if it falls in the event window."""
        if at < self.event_since:
            return
        actor = "scheduler" if entity == "job" or trigger in ("create", "retry") else "worker"
        event = Event(
            entity=entity,
            entity_id=key,
            at=at,
            trigger=trigger,
            from_state=src,
            to_state=dst,
            actor=actor,
        )
        trail.append(rows.event_row(event))

    def _uow(
        self,
        process: str,
        kind: UowKind,
        window: tuple[str, str, str],
        created: datetime,
        outcome: UowState,
        *,
        timeperiod: str | None = None,
        scheduled_at: datetime | None = None,
        retries: int = 3,
    ) -> Rows:
        """One unit of work's row and its events: created at ``created``, claimed, run (a second
        attempt after a failure now and then; every attempt when it ends ``canceled``)."""
        rng = self.rng
        uid = self._id(created)
        trail: list[dict[str, Any]] = []
        self._event(trail, "uow", uid, created, "create", None, "requested")
        done = outcome not in (UowState.IN_PROGRESS, UowState.REQUESTED)
        attempts = 1
        if outcome is UowState.CANCELED:
            attempts = retries + 1
        elif done and rng.random() < 0.04:
            attempts = 2
        at, changes = created, 0
        for attempt in range(1, attempts + 1 if outcome is not UowState.REQUESTED else 1):
            at += timedelta(seconds=rng.uniform(0.05, 2))
            self._event(trail, "uow", uid, at, "claim", "requested", "in_progress")
            at += timedelta(seconds=rng.uniform(5, 240))
            changes += 1
            if attempt < attempts or outcome is UowState.CANCELED:
                self._event(trail, "uow", uid, at, "fail", "in_progress", "invalid")
                changes += 1
            if attempt < attempts:
                at += timedelta(seconds=min(60 * 2 ** (attempt - 1), 3600))
                self._event(trail, "uow", uid, at, "retry", "invalid", "requested")
                changes += 1
        if outcome is UowState.CANCELED:
            self._event(trail, "uow", uid, at, "give_up", "invalid", "canceled")
            changes += 1
        elif done:
            trigger = "finish_noop" if outcome is UowState.NOOP else "succeed"
            self._event(trail, "uow", uid, at, trigger, "in_progress", str(outcome))
            changes += 1
        started = outcome is not UowState.REQUESTED
        failed = outcome is UowState.CANCELED
        start, end, run_key = window
        uow = UnitOfWork(
            id=uid,
            process=process,
            kind=kind,
            start_timeperiod=start,
            end_timeperiod=end,
            run_key=run_key,
            state=outcome,
            timeperiod=timeperiod,
            attempt=attempts,
            retries=retries,
            arguments={"source": "bench"},
            created_at=created,
            updated_at=at,
            scheduled_at=scheduled_at,
            submitted_at=created,
            started_at=at if started else None,
            finished_at=at if done else None,
            heartbeat_at=at if started else None,
            worker_id=f"{process}-w{rng.randrange(4)}" if started else None,
            box_id=f"box{rng.randrange(8)}" if started else None,
            pid=rng.randrange(1000, 60000) if started else None,
            exit_code=(1 if failed else 0) if done else None,
            output=(
                f"{process} {start}: read {rng.randrange(10**6)} rows, "
                f"wrote {rng.randrange(10**4)}\n"
                if done
                else None
            ),
            error=(
                "Traceback (most recent call last):\n  ...\nTimeoutError: source not ready\n"
                if attempts > 1
                else None
            ),
            version=1 + changes,
        )
        yield uows, rows.uow_row(uow)
        for event in trail:
            yield events, event

    # managed processes

    def managed(self, record: ProcessRecord) -> Rows:
        """The jobs of one managed process from its start to ``NOW``, with their units of
        work and events."""
        entry = record.entry
        period = Timeperiod.parse(entry.time_qualifier, entry.start_timeperiod)
        current = Timeperiod.containing(entry.time_qualifier, NOW)
        while period <= current:
            yield from self._job(record, period)
            period = period.next()

    def _job(self, record: ProcessRecord, period: Timeperiod) -> Rows:
        entry, rng = record.entry, self.rng
        continuous = entry.state_machine != "discrete"
        runs = 3 if continuous and entry.time_qualifier is Qualifier.HOURLY else 1
        span = period.end - period.start
        closed_at = period.end + entry.lag
        closed = closed_at <= NOW
        key = f"{entry.name}/{period}"
        job = Job(
            id=self._id(period.start),
            process=entry.name,
            qualifier=entry.time_qualifier,
            timeperiod=str(period),
            created_at=period.start,
            updated_at=period.start,
        )
        if not closed and not continuous:
            # The open period of a discrete process: the slot exists, no unit of work yet.
            yield jobs, rows.job_row(job)
            return
        state = JobState.IN_PROGRESS
        if closed:
            roll = rng.random()
            state = JobState.PROCESSED
            if roll < 0.015:
                state = JobState.SKIPPED
            elif roll < 0.025:
                state = JobState.NOOP
        reprocessed = closed and closed_at + timedelta(days=4) < NOW and rng.random() < 0.03
        trail: list[dict[str, Any]] = []
        made: list[Rows] = []
        version, last_id, updated = 1, None, period.start
        for run in range(2 if reprocessed else 1):
            if not closed:
                n = max(1, min(runs, 1 + int((NOW - period.start) / span * (runs - 1))))
                times = [period.start + (NOW - period.start) * i / n for i in range(n)]
            elif run == 1:  # reprocessed three days later: one final unit of work
                times = [closed_at + timedelta(days=3, seconds=rng.uniform(0, 60))]
            elif continuous:
                times = [period.start + span * i / runs for i in range(runs - 1)]
                times.append(closed_at + timedelta(seconds=rng.uniform(0, 60)))
            else:
                times = [closed_at + timedelta(seconds=rng.uniform(0, 60))]
            final_run = run == (1 if reprocessed else 0)
            self._event(trail, "job", key, times[0], "start", "embryo", "in_progress")
            version += 1
            for i, at in enumerate(times):
                last = i == len(times) - 1
                if not closed:
                    outcome = UowState.IN_PROGRESS if last else UowState.PROCESSED
                elif final_run and last and state is JobState.SKIPPED:
                    outcome = UowState.CANCELED
                elif final_run and last and state is JobState.NOOP:
                    outcome = UowState.NOOP
                else:
                    outcome = UowState.PROCESSED
                parts = list(
                    self._uow(
                        entry.name,
                        UowKind.MANAGED,
                        (str(period), str(period.next()), f"r{run}v{version}"),
                        at,
                        outcome,
                        timeperiod=str(period),
                        retries=entry.retries,
                    )
                )
                made.append(parts)
                last_id, updated = parts[0][1]["id"], parts[0][1]["updated_at"]
                if not last:
                    self._event(trail, "job", key, at, "run_again", "in_progress", "in_progress")
                    version += 1
            if not closed:
                break
            done = state if final_run else JobState.PROCESSED
            src = "in_progress"
            if continuous:
                self._event(trail, "job", key, updated, "finalize", "in_progress", "final_run")
                version += 1
                src = "final_run"
            trigger = {JobState.SKIPPED: "skip", JobState.NOOP: "complete_noop"}.get(
                done, "complete"
            )
            self._event(trail, "job", key, updated, trigger, src, str(done))
            version += 1
            if not final_run:
                again = updated + timedelta(days=3)
                self._event(trail, "job", key, again, "reprocess", str(done), "embryo")
                version += 1
        yield (
            jobs,
            rows.job_row(
                Job(
                    id=job.id,
                    process=job.process,
                    qualifier=job.qualifier,
                    timeperiod=job.timeperiod,
                    state=state,
                    uow_id=last_id,
                    run=1 if reprocessed else 0,
                    created_at=job.created_at,
                    updated_at=updated,
                    version=version,
                )
            ),
        )
        for parts in made:
            self.managed_uows += 1
            yield from parts
        for event in trail:
            yield events, event

    # freerun processes

    def freerun(self, record: ProcessRecord, count: int) -> Rows:
        """``count`` fires of one freerun process up to ``NOW``, oldest first; the newest is in
        progress."""
        entry, rng = record.entry, self.rng
        index = int(entry.name[1:])
        every = (
            timedelta(minutes=1)
            if index == 0
            else FREERUN_TRIGGERS[index % len(FREERUN_TRIGGERS)][1]
        )
        for k in range(count - 1, -1, -1):
            at = NOW - every * (k + 1) + timedelta(seconds=index % 60)
            roll = rng.random()
            outcome = UowState.PROCESSED
            if k == 0:
                outcome = UowState.IN_PROGRESS
            elif roll < 0.02:
                outcome = UowState.NOOP
            elif roll < 0.025:
                outcome = UowState.CANCELED
            stamp = at.strftime("%Y%m%d%H%M%S")
            yield from self._uow(
                entry.name,
                UowKind.FREERUN,
                (stamp, stamp, "fire"),
                at,
                outcome,
                scheduled_at=at,
                retries=entry.retries,
            )

    def all(self, records: list[ProcessRecord]) -> Iterator[tuple[sa.Table, dict[str, Any]]]:
        """Every row: the managed processes first, then the freeruns share what is left of
        ``shape.uows``."""
        for record in records:
            yield processes, rows.process_row(record, version=1)
            yield (
                events,
                rows.event_row(
                    Event(
                        entity="process",
                        entity_id=record.name,
                        at=record.created_at,
                        trigger="register",
                        from_state=None,
                        to_state=None,
                        actor="token deploy",
                        reason="created from process_context.py",
                    )
                ),
            )
        for record in records:
            if record.entry.kind == "managed":
                yield from self.managed(record)
        freeruns = [r for r in records if r.entry.kind == "freerun"]
        left = self.shape.uows - self.managed_uows
        if not freeruns or left <= 0:
            return
        heavy = int(left * self.shape.heavy_share) if len(freeruns) > 1 else left
        rest = left - heavy
        for i, record in enumerate(freeruns):
            if i == 0:
                count = heavy
            else:
                count = rest // (len(freeruns) - 1) + (1 if i <= rest % (len(freeruns) - 1) else 0)
            yield from self.freerun(record, count)
