"""Firing freerun triggers: each fire once, by its identity (process, scheduled UTC instant).

A fire is first recorded under its unique identity (a restart, a race or a second scheduler
finds it taken and does nothing), then its unit of work is created under its own unique key and
published. A crash between the two is repaired on the next look: the last fire with no unit of
work gets one. A fire while ``max_active`` units of work are in flight is recorded as skipped,
visibly.

After downtime, ``catchup`` decides: ``all`` fires every missed fire (up to a limit), ``latest``
only the newest, ``none`` none (the newest is recorded as missed, so it is visible).
"""

from __future__ import annotations

import logging
from collections import deque
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from db.models import FireRecord, UowQuery
from db.states import ACTIVE_UOW_STATES, Catchup, FireOutcome, UowKind
from db.triggers import Trigger, parse_trigger

if TYPE_CHECKING:
    from db.clock import Clock
    from db.models import ProcessEntry, ProcessRecord
    from db.store import Store
    from scheduler.config import SchedulerConfig
    from scheduler.dispatch import Dispatcher

log = logging.getLogger(f"tactus.{__name__}")

#: A fire counts as on time (not missed) under ``catchup: none`` when this late at most.
ON_TIME = timedelta(seconds=30)


def fire_stamp(instant: datetime) -> str:
    """A fire instant in the unit of work's window form (``20261101053000``, UTC)."""
    return instant.strftime("%Y%m%d%H%M%S")


class FreerunFirer:
    """Fires due freerun processes; keeps each one's next due instant (derived, not truth)."""

    def __init__(
        self, store: Store, dispatcher: Dispatcher, clock: Clock, config: SchedulerConfig
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.clock = clock
        self.config = config
        self._due: dict[str, tuple[ProcessEntry, datetime | None]] = {}

    def trigger(self, entry: ProcessEntry) -> Trigger:
        return parse_trigger(entry.trigger or "", entry.timezone or self.config.timezone)

    def next_due(self, record: ProcessRecord) -> datetime | None:
        """When ``record`` fires next (cached until its entry changes or it fires)."""
        cached = self._due.get(record.name)
        if cached is not None and cached[0] == record.entry:
            return cached[1]
        due = self.trigger(record.entry).next_fire(self._baseline(record))
        self._due[record.name] = (record.entry, due)
        return due

    def forget(self, name: str) -> None:
        self._due.pop(name, None)

    def _baseline(self, record: ProcessRecord) -> datetime:
        """Fires after this instant are candidates: the last recorded fire, or the last edit
        of the process (a new trigger or a re-enable does not fire what passed before it)."""
        last = self.store.last_fire(record.name)
        baseline = record.updated_at
        if last is not None and last.scheduled_at > baseline:
            baseline = last.scheduled_at
        return baseline

    def fire_due(self, record: ProcessRecord, now: datetime) -> list[FireRecord]:
        """Fire what is due for ``record`` up to ``now``; returns the fires recorded."""
        entry = record.entry
        self._repair_last(entry)
        trigger = self.trigger(entry)
        due = self._due_fires(trigger, self._baseline(record), now, entry.catchup)
        recorded = [self._fire(entry, instant, outcome, now) for instant, outcome in due]
        self._due.pop(record.name, None)
        return [r for r in recorded if r is not None]

    def _due_fires(
        self, trigger: Trigger, baseline: datetime, now: datetime, catchup: Catchup
    ) -> list[tuple[datetime, FireOutcome]]:
        if catchup is Catchup.ALL:
            newest = deque(trigger.fires(baseline, now), maxlen=self.config.catchup_limit)
            return [(f, FireOutcome.FIRED) for f in newest]
        latest = _latest_fire(trigger, baseline, now)
        if latest is None:
            return []
        if catchup is Catchup.NONE and now - latest > ON_TIME:
            return [(latest, FireOutcome.MISSED)]
        return [(latest, FireOutcome.FIRED)]

    def _fire(
        self, entry: ProcessEntry, instant: datetime, outcome: FireOutcome, now: datetime
    ) -> FireRecord | None:
        reason = ""
        if outcome is FireOutcome.MISSED:
            reason = "scheduler was down (catchup: none)"
        elif self._in_flight(entry) >= entry.max_active:
            outcome = FireOutcome.SKIPPED
            reason = f"max_active {entry.max_active} reached: previous unit of work in flight"
        fire = FireRecord(
            process=entry.name,
            scheduled_at=instant,
            outcome=outcome,
            recorded_at=now,
            reason=reason,
        )
        if not self.store.record_fire(fire):
            return None  # fired before (restart, race or another scheduler)
        if outcome is FireOutcome.FIRED:
            self._create(entry, instant)
        else:
            log.warning("freerun %s: fire at %s %s: %s", entry.name, instant, outcome, reason)
        return fire

    def _in_flight(self, entry: ProcessEntry) -> int:
        query = UowQuery(process=entry.name, states=ACTIVE_UOW_STATES)
        return len(self.store.find_uows(query, limit=entry.max_active).items)

    def _create(self, entry: ProcessEntry, instant: datetime) -> None:
        stamp = fire_stamp(instant)
        uow, _ = self.dispatcher.create(
            entry,
            kind=UowKind.FREERUN,
            start=stamp,
            end=stamp,
            run_key="fire",
            scheduled_at=instant,
            reason=f"trigger {entry.trigger!r} fired for {instant.isoformat()}",
        )
        self.store.set_fire_uow(entry.name, instant, uow.id)
        self.dispatcher.publish(uow)

    def _repair_last(self, entry: ProcessEntry) -> None:
        """A fire recorded just before a crash, whose unit of work was never created."""
        last = self.store.last_fire(entry.name)
        if last is not None and last.outcome is FireOutcome.FIRED and last.uow_id is None:
            log.warning(
                "freerun %s: completing fire %s after a crash", entry.name, last.scheduled_at
            )
            self._create(entry, last.scheduled_at)


def _latest_fire(trigger: Trigger, after: datetime, now: datetime) -> datetime | None:
    """The newest fire in (after, now], looking back in growing windows so that a trigger
    firing every second does not enumerate days of missed fires."""
    window = timedelta(minutes=1)
    while True:
        start = max(after, now - window)
        latest = None
        for latest in trigger.fires(start, now):  # noqa: B007 - only the last one is wanted
            pass
        if latest is not None or start <= after:
            return latest
        window *= 8
