"""Firing freerun triggers: each fire once, by its identity (process, scheduled UTC instant).

A fire is first recorded under its unique identity (a restart, a race or a second scheduler
finds it taken and does nothing), then its unit of work is created under its own unique key,
linked to the fire, and published. The fires of one pass go together: all of them recorded in
one store transaction, their units of work created in one, linked in one, and published in one
broker write, so a thousand entries firing on the same minute cost a few commits, not three
thousand; what a pass reads is grouped too (the firing processes' last fires, their fires
without a unit of work, their units of work in flight: one query each). A crash between these
steps is repaired on the next look at the process: its fired fires with no unit of work get
one, or get the one a previous attempt created. A fire while ``max_active`` units of work are in flight is recorded
as skipped, visibly.

After downtime, ``catchup`` decides: ``all`` fires every missed fire (up to a limit), ``latest``
only the newest, ``none`` none (the newest is recorded as missed, so it is visible).
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from db.errors import StateConflict, TransitionRefused
from db.gates import fire_baseline, free_slots
from db.models import FireRecord
from db.state_change import change_uow
from db.states import ACTIVE_UOW_STATES, Catchup, FireOutcome, UowKind
from db.timeperiod import instant_stamp
from db.triggers import Trigger, parse_trigger
from db.uow_factory import UowSpec

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from db.clock import Clock
    from db.models import ProcessEntry, ProcessRecord, UnitOfWork
    from db.store import Store
    from scheduler.config import SchedulerConfig
    from scheduler.dispatch import Dispatcher

log = logging.getLogger(f"tactus.{__name__}")

#: A fire counts as on time (not missed) under ``catchup: none`` when this late at most.
ON_TIME = timedelta(seconds=30)
#: Why a prepared fire's unit of work is canceled at its instant.
CHANGED_BEFORE_INSTANT = "the process was disabled, edited or removed before the fire's instant"


@dataclass(frozen=True, slots=True)
class Held:
    """A fire prepared ahead: recorded, its unit of work stored, its message held here until
    the instant, or (``sent``) published already with the broker's delay to the instant and
    kept here until then only to cancel it if its process changes."""

    instant: datetime
    entry: ProcessEntry
    uow: UnitOfWork
    sent: bool = False


def fire_stamp(instant: datetime) -> str:
    """A fire instant in the unit of work's window form (``20261101053000``, UTC)."""
    return instant_stamp(instant)


class FreerunFirer:
    """Fires due freerun processes; keeps each one's next due instant (derived, not truth)."""

    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        clock: Clock,
        config: SchedulerConfig,
        *,
        publish_ahead: bool = False,
    ) -> None:
        """
        Args:
            publish_ahead: publish a fire prepared ahead at once, with the delay to its
                instant, instead of holding it until then (a broker whose delay is exact:
                :attr:`mq.broker.Broker.exact_delay`).
        """
        self.store = store
        self.dispatcher = dispatcher
        self.clock = clock
        self.config = config
        self.publish_ahead = publish_ahead
        self._due: dict[str, tuple[ProcessEntry, datetime | None]] = {}
        #: Fires prepared ahead, waiting for their instant (:meth:`release`).
        self._held: list[Held] = []
        #: process -> an upcoming instant not prepared (no room under ``max_active``): the pass
        #: at the instant decides it, as it would without preparation.
        self._declined: dict[str, datetime] = {}

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

    def wake_at(self, record: ProcessRecord) -> datetime | None:
        """When a pass should look at ``record``: ``prepare_ahead`` before its next fire (its
        fire is then prepared ahead), or at the fire itself when that was declined."""
        due = self.next_due(record)
        if due is None or self._declined.get(record.name) == due:
            return due
        return due - self.config.prepare_ahead

    def next_release(self) -> datetime | None:
        """The instant of the earliest fire held for release (not one published ahead)."""
        return min((held.instant for held in self._held if not held.sent), default=None)

    def forget(self, name: str) -> None:
        self._due.pop(name, None)
        self._declined.pop(name, None)

    def _baseline(self, record: ProcessRecord) -> datetime:
        """Fires after this instant are candidates: the last recorded fire, or the last edit
        of the process (a new trigger or a re-enable does not fire what passed before it)."""
        return fire_baseline(record.updated_at, self.store.last_fire(record.name))

    def fire_due_together(
        self, records: Sequence[ProcessRecord], now: datetime
    ) -> list[FireRecord]:
        """Fire what is due for each of ``records`` up to ``now``, and prepare the fires due
        within ``prepare_ahead`` of it, together (module doc); returns the fires recorded."""
        entries = {record.name: record.entry for record in records}
        to_create = self._interrupted(entries)
        last_fires = self.store.last_fires(list(entries))
        due: dict[str, list[tuple[datetime, FireOutcome]]] = {}
        upcoming: dict[str, datetime] = {}
        baselines: dict[str, datetime] = {}
        for record in records:
            entry, name = record.entry, record.name
            trigger = self.trigger(entry)
            baselines[name] = fire_baseline(record.updated_at, last_fires.get(name))
            due[name] = self._due_fires(trigger, baselines[name], now, entry.catchup)
            after = max([baselines[name], *(instant for instant, _ in due[name])])
            following = trigger.next_fire(after)
            if following is not None and following <= now + self.config.prepare_ahead:
                if self._declined.get(name) != following:
                    upcoming[name] = following
        # What is in flight, for every process that may fire: one grouped count.
        firing = [n for n, fires in due.items() if any(o is FireOutcome.FIRED for _, o in fires)]
        firing += [n for n in upcoming if n not in firing]
        in_flight = Counter(entry.name for entry, _ in to_create)
        if firing:
            counts = self.store.count_uows(firing, states=ACTIVE_UOW_STATES)
            for (name, _), count in counts.items():
                in_flight[name] += count
        planned = []
        for name, fires in due.items():
            for fire in self._planned(entries[name], fires, now, in_flight=in_flight[name]):
                planned.append(fire)
                in_flight[name] += fire.outcome is FireOutcome.FIRED
        prepared = {}
        for name, instant in upcoming.items():
            if free_slots(entries[name].max_active, in_flight[name]):
                prepared[name] = instant
                planned.append(
                    FireRecord(
                        process=name,
                        scheduled_at=instant,
                        outcome=FireOutcome.FIRED,
                        recorded_at=now,
                        reason="",
                    )
                )
            else:
                # No room now; a unit of work may end before the instant: decide it then.
                self._declined[name] = instant
        recorded = self.fire_planned(planned, entries, repairs=to_create)
        # The next due instants follow from what was just recorded (by this pass, or by a
        # racing scheduler for the same instants): no read of the store needed.
        for name, fires in due.items():
            newest = max((instant for instant, _ in fires), default=baselines[name])
            after = max(baselines[name], newest, prepared.get(name, newest))
            self._due[name] = (entries[name], self.trigger(entries[name]).next_fire(after))
        return recorded

    def fire_planned(
        self,
        planned: Sequence[FireRecord],
        entries: Mapping[str, ProcessEntry],
        *,
        repairs: Sequence[tuple[ProcessEntry, datetime]] = (),
    ) -> list[FireRecord]:
        """Record ``planned`` in one store transaction, then create, link and publish the
        units of work of the ones recorded as fired (and of ``repairs``) together; returns
        the fires recorded (a fire recorded before is passed over)."""
        to_create = list(repairs)
        recorded = [
            fire
            for fire, new in zip(planned, self.store.record_fires(planned), strict=True)
            if new  # False: fired before (a restart, a race or another scheduler)
        ]
        for fire in recorded:
            if fire.outcome is FireOutcome.FIRED:
                to_create.append((entries[fire.process], fire.scheduled_at))
            else:
                log.warning(
                    "freerun %s: fire at %s %s: %s",
                    fire.process,
                    fire.scheduled_at,
                    fire.outcome,
                    fire.reason,
                )
        self._create(to_create)
        return recorded

    def complete_interrupted(self, records: Sequence[ProcessRecord]) -> int:
        """Give the fires that an interrupted pass recorded without a unit of work theirs, for
        every one of ``records`` (a starting scheduler calls it: a process firing once a day
        must not wait a day for it). Returns how many were completed."""
        to_create = self._interrupted({record.name: record.entry for record in records})
        self._create(to_create)
        return len(to_create)

    def _interrupted(
        self, entries: Mapping[str, ProcessEntry]
    ) -> list[tuple[ProcessEntry, datetime]]:
        """The fired fires of ``entries`` that have no unit of work linked (one read)."""
        if not entries:
            return []
        found = self.store.unlinked_fires(list(entries))
        for name, count in Counter(fire.process for fire in found).items():
            log.warning(
                "freerun %s: completing %d fire(s) recorded just before a crash", name, count
            )
        return [(entries[fire.process], fire.scheduled_at) for fire in found]

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

    @staticmethod
    def _planned(
        entry: ProcessEntry,
        due: list[tuple[datetime, FireOutcome]],
        now: datetime,
        *,
        in_flight: int,
    ) -> list[FireRecord]:
        """The fire records of ``due``: fired while ``max_active`` leaves room (counting the
        units of work ``in_flight``, those of interrupted fires included, and the fires before
        it), else skipped."""
        fires = []
        for instant, outcome in due:
            reason = ""
            if outcome is FireOutcome.MISSED:
                reason = "scheduler was down (catchup: none)"
            elif not free_slots(entry.max_active, in_flight):
                outcome = FireOutcome.SKIPPED
                reason = f"max_active {entry.max_active} reached: previous unit of work in flight"
            else:
                in_flight += 1
            fires.append(
                FireRecord(
                    process=entry.name,
                    scheduled_at=instant,
                    outcome=outcome,
                    recorded_at=now,
                    reason=reason,
                )
            )
        return fires

    def _create(self, fires: list[tuple[ProcessEntry, datetime]]) -> None:
        """Create, link and publish the units of work of ``fires`` (a taken key recovers the
        unit of work an interrupted attempt created)."""
        if not fires:
            return
        specs = [
            UowSpec(
                entry=entry,
                kind=UowKind.FREERUN,
                start=fire_stamp(instant),
                end=fire_stamp(instant),
                run_key="fire",
                scheduled_at=instant,
                reason=f"trigger {entry.trigger!r} fired for {instant.isoformat()}",
            )
            for entry, instant in fires
        ]
        created = self.dispatcher.create_many(specs)
        self.store.set_fire_uows(
            [
                (entry.name, instant, uow.id)
                for (entry, instant), (uow, _) in zip(fires, created, strict=True)
            ]
        )
        now = self.clock.now()
        ready, ahead = [], []
        for (entry, instant), (uow, _) in zip(fires, created, strict=True):
            if instant > now:
                ahead.append(Held(instant, entry, uow))
            else:
                ready.append(uow)
        # Held first: a publish that fails leaves them to release() at their instant.
        self._held.extend(ahead)
        if not self.publish_ahead:
            self.dispatcher.publish_all(ready)
            return
        self.dispatcher.publish_all([*ready, *(held.uow for held in ahead)])
        sent = {held.uow.id for held in ahead}
        self._held = [replace(h, sent=True) if h.uow.id in sent else h for h in self._held]

    def release(self, now: datetime, current: Callable[[str], ProcessEntry | None]) -> int:
        """Publish the held fires whose instant has come, in one broker write; a fire whose
        process changed meanwhile (``current``: its entry now, None when disabled or gone)
        has its unit of work canceled instead, visibly. A fire published ahead is canceled
        as soon as a pass before its instant sees its process changed (its message then
        finds the unit of work canceled: the worker acks it and runs nothing), and is
        forgotten once its instant has come. Returns how many were published."""
        if not self._held:
            return 0
        before = self._held
        fresh, changed, self._held = [], [], []
        for held in before:
            if held.sent and held.instant <= now:
                continue  # its message is the broker's: a worker claims it at the instant
            if not held.sent and held.instant > now:
                self._held.append(held)  # not yet
            elif current(held.entry.name) != held.entry:
                changed.append(held)  # at its instant, or published ahead and not yet due
            elif held.sent:
                self._held.append(held)  # published ahead, unchanged: kept until its instant
            else:
                fresh.append(held)
        try:
            self.dispatcher.publish_all(held.uow for held in fresh)
        except BaseException:
            # Held again: the next pass publishes them (a message already sent twice is
            # harmless: a worker's claim is a compare-and-set).
            self._held = before
            raise
        for held in changed:
            log.warning(
                "freerun %s: fire at %s canceled: %s",
                held.entry.name,
                held.instant,
                CHANGED_BEFORE_INSTANT,
            )
            try:
                change_uow(
                    self.store,
                    held.uow,
                    "cancel",
                    clock=self.clock,
                    actor="scheduler",
                    reason=CHANGED_BEFORE_INSTANT,
                )
            except (StateConflict, TransitionRefused):
                pass  # changed meanwhile: canceled from mx, or claimed at its instant
        return len(fresh)

    def hand_over_held(self) -> int:
        """(On stop.) Publish what is still held with the broker's delay until each instant,
        so that a scheduler stopping between preparing and releasing a fire delays nothing
        (a fire published ahead is the broker's already). Returns how many were published."""
        held = [h for h in self._held if not h.sent]
        self._held = []
        self.dispatcher.publish_all(h.uow for h in held)
        return len(held)


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
