"""The scheduler component: one pass over what is due, run in a loop, woken by status messages.

A pass (:meth:`Scheduler.run_pass`) reads the registry, materializes and drives each managed
process whose trigger is due or that a status change woke, fires due freeruns, and now and then
runs the recovery rules. It holds nothing that the store does not: a restarted scheduler rebuilds
everything from the store (caches here are derived and rebuilt on demand).

The clock is injected: tests call :meth:`run_pass` with a :class:`~db.clock.FakeClock` instead
of sleeping.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from db.backoff import backoff
from db.errors import InvalidInput, MalformedMessage, NotFound, TactusError
from db.gates import DEFAULT_MANAGED_TRIGGER
from db.relations import Registry, related_names
from db.states import ProcessKind
from db.triggers import parse_trigger
from mq.message import Message, status_queue
from scheduler.dispatch import Dispatcher
from scheduler.freerun import FreerunFirer
from scheduler.ledger import materialize, materialize_many
from scheduler.managed import ManagedDriver
from scheduler.recovery import Recovery

if TYPE_CHECKING:
    from collections.abc import Callable

    from db.clock import Clock
    from db.models import ProcessEntry, ProcessRecord
    from db.outage import Outages
    from db.store import Store
    from mq.broker import Broker, Consumer, Delivery
    from scheduler.config import SchedulerConfig

log = logging.getLogger(f"tactus.{__name__}")

#: How often the registry is re-read even without SIGHUP (picks up API edits).
REGISTRY_REFRESH = timedelta(seconds=10)
#: Follow-up looks within one pass when finishing jobs wake parents and dependents.
MAX_CASCADE_ROUNDS = 8
#: Status messages the listener holds, reads and acks together.
STATUS_PREFETCH = 50
#: Seconds the status listener lets a trickle of statuses gather before it takes more: on the
#: store queue each take is a write that the workers' commits queue behind (SQLite has one
#: writer at a time), so statuses arriving one by one are claimed and acked by the dozen.
STATUS_LINGER = 0.02
#: After an outage of the store or the broker, the requested units of work submitted this long
#: before it began are published again too: a publish that failed shortly before this scheduler
#: noticed the outage (mx's trigger, another scheduler) is covered.
REPOST_MARGIN = timedelta(minutes=1)
#: A pass that fails for another reason than an outage (a bug, bad data) is tried again after
#: a pause that doubles from this ...
FAILED_PASS_BASE = timedelta(seconds=1)
#: ... up to this.
FAILED_PASS_CAP = timedelta(seconds=30)


@dataclass(slots=True)
class PassReport:
    """What one pass did (for tests, logs and the benchmark)."""

    looked: list[str] = field(default_factory=list)
    started: int = 0
    finished: int = 0
    fires: int = 0
    materialized: int = 0
    recovery: object | None = None


class Scheduler:
    """Drives managed jobs and freerun fires; see the module docstring."""

    def __init__(
        self,
        store: Store,
        broker: Broker,
        clock: Clock,
        config: SchedulerConfig,
        *,
        outages: Outages | None = None,
        store_steady_for: Callable[[], float] | None = None,
    ) -> None:
        """
        Args:
            outages: the daemon's outage trackers: when one ends, what was stored meanwhile is
                published again.
            store_steady_for: how long this scheduler's own beats have reached the store on
                time (its :class:`~scheduler.presence.Presence`); liveness waits for it.
        """
        self.store = store
        self.broker = broker
        self.clock = clock
        self.config = config
        self.outages = outages
        self.dispatcher = Dispatcher(
            store, self._publish, clock, config.queue_prefix, publish_many=broker.publish_many
        )
        self.driver = ManagedDriver(store, self.dispatcher, clock, config.window)
        self.firer = FreerunFirer(
            store, self.dispatcher, clock, config, publish_ahead=broker.exact_delay
        )
        self.recovery = Recovery(
            store,
            self.dispatcher,
            clock,
            config,
            store_steady_for=store_steady_for,
        )
        self._records: dict[str, ProcessRecord] = {}
        self._registry = Registry({})
        #: The managed processes looked at alone (trees, dependencies: see _managed).
        self._related: frozenset[str] = frozenset()
        self._loaded_at: datetime | None = None
        self._next_look: dict[str, datetime] = {}
        self._last_recovery: datetime | None = None
        #: False until the first pass has re-posted what was requested before it.
        self._announced = False
        self._wake: set[str] = set()
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        #: Re-post the requested units of work submitted since this instant (an outage ended).
        self._repost_since: datetime | None = None
        #: Passes failed in a row (not counting outages, which the store and broker wait out).
        self._failed_passes = 0
        if outages is not None:
            outages.store.on_recovery(self._outage_ended)
            outages.broker.on_recovery(self._outage_ended)

    # -- the pass -------------------------------------------------------------------------------

    def _publish(self, queue: str, body: bytes, delay: timedelta | None) -> None:
        self.broker.publish(queue, body, delay=delay)

    def reload(self) -> None:
        """Re-read the registry from the store (also on SIGHUP)."""
        records = {r.name: r for r in self.store.list_processes()}
        for name in set(self._records) - set(records):
            self.firer.forget(name)
            self._next_look.pop(name, None)
        self._records = records
        self._registry = Registry.from_entries(
            r.entry for r in records.values() if r.entry.kind is ProcessKind.MANAGED
        )
        self._related = related_names(self._registry)
        self._loaded_at = self.clock.now()

    def request_reload(self) -> None:
        """Re-read the registry before the next pass (SIGHUP); safe from a signal handler."""
        self._loaded_at = None
        self._event.set()

    def wake(self, *processes: str) -> None:
        """Look at these processes at once (a status change concerns them)."""
        with self._lock:
            self._wake.update(processes)
        self._event.set()

    def run_pass(self) -> PassReport:
        """Do everything that is due now; returns what was done."""
        now = self.clock.now()
        if self._loaded_at is None or now - self._loaded_at >= REGISTRY_REFRESH:
            self.reload()
        report = PassReport()
        if not self._announced:
            # The first pass: finish what a predecessor may have left half done (fires
            # recorded without a unit of work, units of work stored and not published) before
            # this scheduler publishes anything of its own.
            self.recovery.repost_on_start(now)
            self.firer.complete_interrupted(
                [
                    r
                    for r in self._records.values()
                    if r.entry.kind is ProcessKind.FREERUN and r.entry.enabled
                ]
            )
            self._announced = True
        # Fires prepared ahead whose instant has come: first, before anything slower.
        self.firer.release(now, self._freerun_entry)
        with self._lock:
            woken, self._wake = self._wake, set()
            repost_since, self._repost_since = self._repost_since, None
        if repost_since is not None:
            try:
                self.recovery.repost_since(repost_since, now)
            except BaseException:
                self._outage_since(repost_since)  # not done: the next pass tries again
                raise
        self._managed(now, woken, report)
        self._freeruns(now, report)
        due = (
            self._last_recovery is None
            or now - self._last_recovery >= self.config.recovery_interval
        )
        # a status change may be a failure: set its retry time now, not a recovery period later
        if due or woken:
            self._last_recovery = now
            recovered = self.recovery.run(self._entry, now)
            report.recovery = recovered
            if recovered.processes:
                self._managed(now, recovered.processes, report, scheduled_only=False)
        return report

    def _outage_ended(self, lasted: float) -> None:
        """An outage of the store or the broker ended: what was stored meanwhile but could not
        be published (here, or by mx) is published at the next pass, not after
        ``unclaimed_timeout``. Runs in whichever thread saw the dependency back."""
        self._outage_since(self.clock.now() - timedelta(seconds=lasted) - REPOST_MARGIN)

    def _outage_since(self, since: datetime) -> None:
        with self._lock:
            if self._repost_since is None or since < self._repost_since:
                self._repost_since = since
        self._event.set()

    def _entry(self, name: str):
        record = self._records.get(name)
        return record.entry if record else None

    def _freerun_entry(self, name: str) -> ProcessEntry | None:
        """The entry of an enabled freerun process, as last read (None: disabled or gone)."""
        entry = self._entry(name)
        if entry is None or entry.kind is not ProcessKind.FREERUN or not entry.enabled:
            return None
        return entry

    def _managed(
        self, now: datetime, woken: set[str], report: PassReport, *, scheduled_only: bool = True
    ) -> None:
        """Materialize and look at the due and woken managed processes, then at the ones
        their finished jobs concern (parents, dependents), for up to MAX_CASCADE_ROUNDS.

        A process of a tree or with dependencies (either way) is looked at alone, in registry
        order, so that its look sees what the looks before it in the round wrote; the others
        relate to nobody and are looked at together (grouped reads and writes:
        :meth:`ManagedDriver.look_many`)."""
        managed = [
            r
            for r in self._records.values()
            if r.entry.kind is ProcessKind.MANAGED and r.entry.enabled
        ]
        pending = set(woken)
        for rounds in range(MAX_CASCADE_ROUNDS):
            wake_next: set[str] = set()
            together: list[tuple[ProcessEntry, bool]] = []
            for record in managed:
                name = record.name
                scheduled = rounds == 0 and scheduled_only and now >= self._next_look.get(name, now)
                if not scheduled and name not in pending:
                    continue
                if name not in self._related:
                    together.append((record.entry, scheduled))
                    continue
                entry = record.entry
                if scheduled:
                    report.materialized += materialize(self.store, entry, now)
                    self._next_look[name] = self._next(entry, now)
                result = self.driver.look(entry, self._registry, scheduled=scheduled)
                report.looked.append(name)
                report.started += result.started
                report.finished += result.finished
                if result.changed_finished:
                    wake_next.update(self._neighbours(name))
            if together:
                self._look_together(together, now, report)
            if not wake_next:
                return
            pending = wake_next

    def _look_together(
        self, looks: list[tuple[ProcessEntry, bool]], now: datetime, report: PassReport
    ) -> None:
        """Materialize and look at processes that relate to no other (nobody to wake)."""
        due = [entry for entry, scheduled in looks if scheduled]
        if due:
            report.materialized += materialize_many(self.store, due, now)
            for entry in due:
                self._next_look[entry.name] = self._next(entry, now)
        results = self.driver.look_many(looks, self._registry)
        for entry, _ in looks:
            result = results[entry.name]
            report.looked.append(entry.name)
            report.started += result.started
            report.finished += result.finished

    def _neighbours(self, name: str) -> set[str]:
        parent = self._registry.parent(name)
        names = {d.name for d in self._registry.dependents(name)}
        if parent is not None:
            names.add(parent.name)
        return names

    def _next(self, entry, now: datetime) -> datetime:
        trigger = parse_trigger(
            entry.trigger or DEFAULT_MANAGED_TRIGGER, entry.timezone or self.config.timezone
        )
        return trigger.next_fire(now) or now + timedelta(days=365)

    def _freeruns(self, now: datetime, report: PassReport) -> None:
        due = []
        for record in self._records.values():
            entry = record.entry
            if entry.kind is not ProcessKind.FREERUN or not entry.enabled:
                continue
            wake_at = self.firer.wake_at(record)
            if wake_at is not None and wake_at <= now:
                due.append(record)
        if due:
            # all of the pass's fires together: a few store transactions, not three a fire
            report.fires += len(self.firer.fire_due_together(due, now))

    def next_wakeup(self) -> datetime:
        """When the next pass is due (the loop also wakes on status messages)."""
        now = self.clock.now()
        candidates = [now + self.config.tick]
        candidates += list(self._next_look.values())
        for record in self._records.values():
            if record.entry.kind is ProcessKind.FREERUN and record.entry.enabled:
                due = self.firer.wake_at(record)
                if due is not None:
                    candidates.append(due)
        release = self.firer.next_release()
        if release is not None:
            candidates.append(release)
        return max(now, min(candidates))

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Run the loop and the status listener in background threads."""
        self._stopping.clear()
        self._threads = [
            threading.Thread(target=self._loop, name="scheduler-loop", daemon=True),
            threading.Thread(target=self._listen, name="scheduler-status", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._event.set()
        self.join(timeout)
        if any(t.is_alive() for t in self._threads if t.name == "scheduler-loop"):
            return
        try:
            handed = self.firer.hand_over_held()
        except TactusError as exc:
            # Stored as requested: the next scheduler's first pass publishes them.
            log.warning("stopping: fires prepared ahead not handed to the broker: %s", exc)
        else:
            if handed:
                log.info("stopping: %d fire(s) prepared ahead handed to the broker", handed)

    def join(self, timeout: float | None = None) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.run_pass()
            except Exception as exc:
                if self._stopping.is_set():
                    break  # the store or the broker gave up waiting because we stop
                # status messages do not cut this pause short: a pass that fails would fail again
                self._stopping.wait(self._failed_pass(exc))
                continue
            self._failed_passes = 0
            wait = (self.next_wakeup() - self.clock.now()).total_seconds()
            self._event.wait(max(0.0, min(wait, self.config.tick.total_seconds())))
            self._event.clear()

    def _failed_pass(self, exc: Exception) -> float:
        """Log a failed pass and return the pause before the next: doubling with each failure
        in a row, so a pass that keeps failing (a bug, bad data) never spins and logs a line
        per attempt, only one per pause."""
        self._failed_passes += 1
        pause = backoff(FAILED_PASS_BASE, self._failed_passes, cap=FAILED_PASS_CAP, jitter=0.2)
        if isinstance(exc, TactusError):
            log.error(
                "scheduler pass failed (%d in a row; next try in %.0f s): %s",
                self._failed_passes,
                pause.total_seconds(),
                exc,
            )
        else:
            log.exception(
                "scheduler pass failed (%d in a row; next try in %.0f s)",
                self._failed_passes,
                pause.total_seconds(),
            )
        return pause.total_seconds()

    def _take_statuses(self, consumer: Consumer, deliveries: list[Delivery]) -> None:
        """Wake the processes the status messages name, then ack them in one go; a malformed
        one, or one naming no unit of work, is dead-lettered with a log line."""
        good: list[Delivery] = []
        for delivery in deliveries:
            try:
                message = Message.decode(delivery.body)
                if message.kind == "uow_status":
                    self.store.get_uow(message.uow_id)
            except (MalformedMessage, NotFound, InvalidInput) as exc:
                log.warning("status listener: dead-lettering a message: %s", exc)
                consumer.reject(delivery, str(exc))
                continue
            self.wake(message.process)
            good.append(delivery)
        # the store is the truth: a lost status message only delays a look, and one delivered
        # again wakes a process once more, so the acks may wait for the next claim's commit
        consumer.ack_many(good, defer=True)

    def _listen(self) -> None:
        queue = status_queue(self.config.queue_prefix)
        while not self._stopping.is_set():
            try:
                with self.broker.consumer(queue, prefetch=STATUS_PREFETCH) as consumer:
                    while not self._stopping.is_set():
                        delivery = consumer.get(timeout=0.5)
                        if delivery is None:
                            continue
                        # the statuses already in hand are taken (and acked) together
                        held = [delivery]
                        while len(held) < STATUS_PREFETCH:
                            more = consumer.get_ready()
                            if more is None:
                                break
                            held.append(more)
                        self._take_statuses(consumer, held)
                        if len(held) < STATUS_PREFETCH:
                            self._stopping.wait(STATUS_LINGER)
            except TactusError as exc:
                if self._stopping.is_set():
                    return  # the broker gave up waiting because we stop
                # the broker waits out outages; what reaches here is a refusal (a bad login):
                # not worth a line a second
                log.error("status listener: %s; opening the consumer again in 30 s", exc)
                self._stopping.wait(30.0)
