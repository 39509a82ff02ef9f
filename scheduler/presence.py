"""The scheduler's own heartbeat: a worker record under the process name ``scheduler`` that
``/api/v1/health`` and the workers page read to tell whether a scheduler is alive.

The record's id is ``scheduler@<box_id>``, so a restart on the same box replaces its record
instead of adding one; a graceful stop removes it, a crash leaves it to go silent (and be marked
``lost`` by the reaper, as any worker would be). A beat after a store outage makes a record the
reaper had marked ``lost`` ``alive`` again (``Store.beat_worker``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING

from db.errors import NotFound, StoreUnavailable, TactusError
from db.models import WorkerRecord

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import timedelta

    from db.clock import Clock
    from db.store import Store

log = logging.getLogger(f"tactus.{__name__}")

#: The process name of the scheduler's records (``mx.api.meta`` reads it).
SCHEDULER = "scheduler"


class Presence:
    """Registers the scheduler and beats every ``interval`` on a daemon thread until stopped.

    Its beats are also the scheduler's own proof that it can write to the store as the workers
    must: :meth:`steady_for` tells how long they have gone through without a gap. Liveness
    judges workers only after ``heartbeat_misses`` such intervals (``scheduler/recovery.py``):
    when the scheduler's own beats could not get through (the store away, or stalled behind a
    lock held elsewhere, as a backup or a long transaction holds a SQLite file), the workers'
    could not either, and their silence says nothing about them.
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        box_id: str,
        interval: timedelta,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._clock = clock
        self._interval = interval
        self._monotonic = monotonic
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.worker_id = f"{SCHEDULER}@{box_id}"
        self._box_id = box_id
        #: Monotonic instants of the last beat that went through, and of the first of the run
        #: of beats without a gap that it ends (None: none went through yet).
        self._beaten_at: float | None = None
        self._steady_since: float | None = None

    def steady_for(self) -> float:
        """Seconds this scheduler's beats have reached the store on time, without a gap of more
        than two intervals; 0 while one is overdue (or none went through yet)."""
        beaten_at, since = self._beaten_at, self._steady_since
        if beaten_at is None or since is None:
            return 0.0
        now = self._monotonic()
        if now - beaten_at > self._gap:
            return 0.0
        return now - since

    @property
    def _gap(self) -> float:
        """The longest time between two beats that still counts as on time."""
        return 2 * self._interval.total_seconds()

    def _went_through(self) -> None:
        now = self._monotonic()
        if self._beaten_at is None or now - self._beaten_at > self._gap:
            self._steady_since = now  # the first beat after a gap starts a new run
        self._beaten_at = now

    def start(self) -> None:
        self._register()
        self._thread = threading.Thread(target=self._beat, name="scheduler-presence", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self._interval.total_seconds() + 5)
        try:
            self._store.delete_worker(self.worker_id)
        except TactusError as exc:
            log.warning("scheduler presence: cannot remove %s: %s", self.worker_id, exc)

    def _register(self) -> None:
        now = self._clock.now()
        self._store.save_worker(
            WorkerRecord(
                worker_id=self.worker_id,
                process=SCHEDULER,
                box_id=self._box_id,
                pid=os.getpid(),
                started_at=now,
                heartbeat_at=now,
            )
        )
        self._went_through()

    def _beat(self) -> None:
        while not self._stopping.wait(self._interval.total_seconds()):
            try:
                self._beat_once()
            except StoreUnavailable:
                # The store is away: health shows the scheduler silent, which is the truth. The
                # store's outage tracker logs it (once a minute); the next beat, on time, is
                # also the probe that ends it.
                continue
            except TactusError as exc:
                log.warning("scheduler presence: beat failed: %s", exc)

    def _beat_once(self) -> None:
        try:
            self._store.beat_worker(self.worker_id, self._clock.now())
        except NotFound:
            self._register()  # removed by hand or by a clean-up: register again
        else:
            self._went_through()
