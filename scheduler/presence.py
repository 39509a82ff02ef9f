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
from typing import TYPE_CHECKING

from db.errors import NotFound, StoreUnavailable, TactusError
from db.models import WorkerRecord

if TYPE_CHECKING:
    from datetime import timedelta

    from db.clock import Clock
    from db.store import Store

log = logging.getLogger(f"tactus.{__name__}")

#: The process name of the scheduler's records (``mx.api.meta`` reads it).
SCHEDULER = "scheduler"


class Presence:
    """Registers the scheduler and beats every ``interval`` on a daemon thread until stopped."""

    def __init__(self, store: Store, clock: Clock, *, box_id: str, interval: timedelta) -> None:
        self._store = store
        self._clock = clock
        self._interval = interval
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.worker_id = f"{SCHEDULER}@{box_id}"
        self._box_id = box_id

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
