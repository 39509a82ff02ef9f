"""Retries, re-posts and lost workers: explicit rules in place of Synergy's garbage collector.

- An invalid unit of work returns to requested after ``retry_delay`` doubling per attempt
  (capped at an hour); past ``retries`` it is canceled (and its job skipped by the driver).
- A unit of work whose worker stopped beating becomes invalid (``db.liveness``) and is retried.
- A unit of work requested but never claimed is published again after ``unclaimed_timeout``;
  a managed one also at once when a worker of its process is declared lost (it may have
  started it in an outcome's commit, db.chain, and died before publishing it).
  The first pass of a scheduler re-posts every requested unit of work at once: its predecessor
  may have stopped (crashed, been killed) after storing one and before publishing it, and a
  duplicate message is harmless (the worker's claim is a compare-and-set; a delivery for a
  unit of work no longer requested is acked and ignored).
- Nothing that is still running (claimed, with a fresh heartbeat) is ever re-posted or canceled
  under its worker.
- Every flow run in progress is reconciled (``db.flows.reconcile``): on SQL a step's end
  already moved its flow in the same transaction and this finds nothing to do; on MongoDB it
  finishes what a crash between two writes left undone.

Everything is read from the store on each pass, so all of it survives a scheduler restart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from db.errors import StateConflict, TransitionRefused
from db.flows import entry_for, reconcile_open
from db.gates import attempts_remain, retry_time
from db.liveness import forget_old_workers, reap_lost_workers
from db.models import UowQuery
from db.state_change import change_uow
from db.states import UowKind, UowState

if TYPE_CHECKING:
    from db.clock import Clock
    from db.models import ProcessEntry, UnitOfWork, WorkerRecord
    from db.store import Store
    from scheduler.config import SchedulerConfig
    from scheduler.dispatch import Dispatcher

log = logging.getLogger(f"tactus.{__name__}")

ACTOR = "scheduler"


@dataclass(slots=True)
class RecoveryReport:
    """What one recovery pass did; ``processes`` are the ones to look at again."""

    lost: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    canceled: list[str] = field(default_factory=list)
    reposted: list[str] = field(default_factory=list)
    processes: set[str] = field(default_factory=set)


class Recovery:
    """One pass of the recovery rules."""

    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        clock: Clock,
        config: SchedulerConfig,
        *,
        store_steady_for: Callable[[], float] | None = None,
    ) -> None:
        """
        Args:
            store_steady_for: seconds this scheduler's own beats have reached the store on time
                (:meth:`scheduler.presence.Presence.steady_for`); liveness waits until that is
                ``heartbeat_misses`` intervals before it declares any worker lost.
        """
        self.store = store
        self.dispatcher = dispatcher
        self.clock = clock
        self.config = config
        self._store_steady_for = store_steady_for
        self._last_reconcile: datetime | None = None

    def run(self, entries: Callable[[str], ProcessEntry | None], now: datetime) -> RecoveryReport:
        """Apply every rule once.

        Args:
            entries: the process entry of a name (None if unknown).
            now: the current instant.
        """
        report = RecoveryReport()
        if self._workers_had_their_chance():
            report.lost = reap_lost_workers(
                self.store,
                now=now,
                interval=self.config.heartbeat_interval,
                misses=self.config.heartbeat_misses,
                clock=self.clock,
                on_lost=lambda worker: self._lost_worker(worker, now, report),
            )
            forget_old_workers(self.store, now=now, retention=self.config.worker_retention)
        for uow in self._all(UowQuery(states=frozenset({UowState.INVALID}), newest_first=False)):
            self._invalid(uow, entries(uow.process), now, report)
        stale = now - self.config.unclaimed_timeout
        query = UowQuery(
            states=frozenset({UowState.REQUESTED}), submitted_before=stale, newest_first=False
        )
        self._repost(query, stale, f"not claimed for {self.config.unclaimed_timeout}", report)
        if (
            self._last_reconcile is None
            or now - self._last_reconcile >= self.config.recovery_interval
        ):
            # every flow run in progress is read whole: once a recovery interval, not on each
            # status message that wakes the pass (a step's end wakes it once per step)
            self._last_reconcile = now
            reconcile_open(self.store, clock=self.clock, actor=ACTOR, announce=self._announce)
        return report

    def _lost_worker(self, worker: WorkerRecord, now: datetime, report: RecoveryReport) -> None:
        """Re-post the requested managed units of work of a lost worker's process: a worker
        that started a catch-up's next period in its outcome's commit (db.chain) and died
        before publishing it left one nobody will hear of until ``unclaimed_timeout`` (a
        duplicate delivery is harmless: the first claim wins). Freerun fires and tasks are
        only ever published by the scheduler and mx: nothing of theirs is re-posted here."""
        query = UowQuery(
            process=worker.process,
            states=frozenset({UowState.REQUESTED}),
            kind=UowKind.MANAGED,
            newest_first=False,
        )
        why = f"re-posted: worker {worker.worker_id} was lost, it may not have published it"
        self._repost(query, now, why, report)

    def _announce(self, uows: Sequence[UnitOfWork]) -> None:
        """Publish the steps a flow change made requested (flow runs that ended are seen by
        the pass itself)."""
        self.dispatcher.publish_all(u for u in uows if u.state is UowState.REQUESTED)

    def _workers_had_their_chance(self) -> bool:
        """False unless this scheduler's own beats have reached the store on time for
        ``heartbeat_misses`` intervals: during an outage of the store, or a stall (a lock held
        elsewhere), and for that long after it, the workers could not beat either, and must get
        fresh intervals to do so before any is judged silent. The same after this scheduler
        starts: it cannot tell whether the store was away while none ran."""
        if self._store_steady_for is None:
            return True
        grace = self.config.heartbeat_interval * self.config.heartbeat_misses
        return self._store_steady_for() >= grace.total_seconds()

    def repost_since(self, since: datetime, now: datetime) -> RecoveryReport:
        """Re-post the requested units of work submitted at or after ``since``: an outage of
        the store or the broker may have kept them from being published (here or by mx)."""
        report = RecoveryReport()
        query = UowQuery(states=frozenset({UowState.REQUESTED}), newest_first=False)
        why = "re-posted after an outage: its first publish may have failed"
        self._repost(query, now, why, report, since=since)
        if report.reposted:
            log.info("re-posted %d requested unit(s) of work after an outage", len(report.reposted))
        return report

    def repost_on_start(self, now: datetime) -> RecoveryReport:
        """Re-post every requested unit of work that is due: called once, before a starting
        scheduler creates anything (see the module doc)."""
        report = RecoveryReport()
        query = UowQuery(states=frozenset({UowState.REQUESTED}), newest_first=False)
        why = "re-posted on start: the scheduler before may have stopped before publishing it"
        self._repost(query, now, why, report, ahead_too=True)
        if report.reposted:
            log.info("re-posted %d requested unit(s) of work on start", len(report.reposted))
        return report

    def _repost(
        self,
        query: UowQuery,
        due: datetime,
        why: str,
        report: RecoveryReport,
        *,
        since: datetime | None = None,
        ahead_too: bool = False,
    ) -> None:
        for uow in self._all(query):
            if uow.scheduled_at is not None and uow.scheduled_at > due:
                # A delayed task whose message is still on its way, or a freerun fire
                # prepared ahead whose scheduler stopped before its instant: on start, its
                # message goes with the broker's delay (a duplicate is harmless).
                if ahead_too:
                    self.dispatcher.publish(uow)
                continue
            if since is not None and (uow.submitted_at or uow.created_at) < since:
                continue  # published before the outage began
            self._unclaimed(uow, why, report)

    def _all(self, query: UowQuery) -> Iterator[UnitOfWork]:
        cursor = None
        while True:
            page = self.store.find_uows(query, limit=200, cursor=cursor)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def _invalid(
        self, uow: UnitOfWork, entry: ProcessEntry | None, now: datetime, report: RecoveryReport
    ) -> None:
        try:
            if entry is None or not attempts_remain(uow):
                # no attempt left: give up at once, no retry delay to wait out
                why = "retries exhausted" if entry else f"process {uow.process} is not registered"
                change_uow(
                    self.store,
                    uow,
                    "give_up",
                    clock=self.clock,
                    actor=ACTOR,
                    reason=why,
                    announce=self._announce,
                )
                report.canceled.append(uow.id)
                report.processes.add(uow.process)
                return
            if uow.retry_at is None:
                retry_at = retry_time(uow, entry_for(entry, uow).retry_delay)
                self.store.update_uow(
                    uow.id, expected_state=UowState.INVALID, changes={"retry_at": retry_at}
                )
                if retry_at > now:
                    return
            elif uow.retry_at > now:
                return
            retried = change_uow(
                self.store,
                uow,
                "retry",
                clock=self.clock,
                actor=ACTOR,
                reason=f"attempt {uow.attempt + 1} of {uow.retries + 1}",
                changes={
                    "attempt": uow.attempt + 1,
                    "retry_at": None,
                    "submitted_at": now,
                    "worker_id": None,
                    "pid": None,
                    "heartbeat_at": None,
                },
            )
            self.dispatcher.publish(retried)
            report.retried.append(uow.id)
            report.processes.add(uow.process)
        except (StateConflict, TransitionRefused):
            pass  # changed under us (canceled by hand, claimed ...): the next pass sees it

    def _unclaimed(self, uow: UnitOfWork, why: str, report: RecoveryReport) -> None:
        """Publish a unit of work nobody claimed again. Every one is somebody's: a managed unit
        of work exists only as its job's run (created with the job's start, in one store
        write), so there is no orphan to tell apart and nothing here cancels."""
        try:
            reposted = change_uow(
                self.store,
                uow,
                "repost",
                clock=self.clock,
                actor=ACTOR,
                reason=why,
                changes={"submitted_at": self.clock.now()},
            )
            self.dispatcher.publish(reposted)
            report.reposted.append(uow.id)
        except (StateConflict, TransitionRefused):
            pass


def entry_lookup(entries: Mapping[str, ProcessEntry]) -> Callable[[str], ProcessEntry | None]:
    """``entries.get`` as the callable :meth:`Recovery.run` takes."""
    return entries.get
