"""Heartbeats of a worker process and of the units of work it runs (Synergy had none: a worker
that died left its unit of work in progress until a one-hour rule noticed).

Every ``heartbeat_interval`` seconds, on its own thread, the :class:`Heartbeat`:

1. records the worker's beat (``store.beat_worker``) with the unit of work it is running;
2. stamps ``heartbeat_at`` on each running unit of work, compare-and-set on ``in_progress``; a
   unit of work that is no longer in progress (canceled by hand, or declared lost by the
   scheduler's :func:`db.liveness.reap_lost_workers` during a long store outage) is reported to
   its owner through :meth:`Running.taken_away`, so a command that nobody waits for any more is
   killed instead of running on;
3. asks for the broker's hold on each running delivery to be extended (``consumer.extend``), so
   the embedded queue does not deliver it again while it runs and a RabbitMQ connection keeps
   answering its heartbeats. A consumer belongs to the thread that opened it (pika is not
   thread-safe), so the beat only marks the extension due (:meth:`Running.request_extend`) and
   the slot thread waiting for the run performs it within :data:`~workers.shell.POLL_INTERVAL`.

A failing step is logged and the others still run; nothing here ever stops the worker.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

from db.errors import NotFound, StateConflict, StoreUnavailable
from db.outage import Outage
from db.states import UowState

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from datetime import datetime

    from db.clock import Clock
    from db.store import Store

log = logging.getLogger(f"tactus.{__name__}")


class Running(Protocol):
    """A unit of work being run, as the heartbeat sees it (the runner owns the real thing)."""

    @property
    def uow_id(self) -> str: ...

    def request_extend(self, visibility: timedelta) -> None:
        """Have the owning thread call ``consumer.extend(delivery, visibility)`` soon."""

    def taken_away(self, reason: str) -> None:
        """The unit of work is no longer this worker's: stop running it."""


class Heartbeat:
    """Beats for one worker on a thread of its own; ``start()``, ``stop()``, ``join()``."""

    def __init__(
        self,
        store: Store,
        worker_id: str,
        *,
        interval: timedelta,
        visibility: timedelta,
        clock: Clock,
        running: Callable[[], Sequence[Running]],
        register: Callable[[], None] | None = None,
        outage: Outage | None = None,
    ) -> None:
        """
        Args:
            store: where beats are recorded.
            worker_id: the registered worker.
            interval: time between beats.
            visibility: how long each beat extends the hold on a running delivery.
            clock: source of the recorded instants.
            running: returns the units of work running right now.
            register: registers the worker again when its record is gone (removed after it
                was declared lost, or by hand).
            outage: the worker's tracker of store outages: a beat that cannot reach the store
                reports to it (one log line per outage, not one per beat), and a beat that
                does ends the outage for every thread of the worker.
        """
        self.store = store
        self.worker_id = worker_id
        self.interval = interval
        self.visibility = visibility
        self.clock = clock
        self.running = running
        self.register = register
        self.outage = outage or Outage("store")
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"heartbeat-{worker_id}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop beating and wait up to ``timeout`` seconds for the thread to end."""
        self._stop.set()
        self.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval.total_seconds()):
            try:
                self.beat()
            except Exception:  # a beat must never end the loop
                log.exception("worker %s: heartbeat failed", self.worker_id)

    def beat(self) -> None:
        """One beat: the worker, then each running unit of work and its delivery."""
        now = self.clock.now()
        tasks = list(self.running())
        reachable = True
        try:
            # A worker declared lost (its beats could not reach the store) is alive again.
            self.store.beat_worker(
                self.worker_id, now, current_uow=tasks[0].uow_id if tasks else None
            )
            self.outage.succeeded()
        except NotFound:
            if self.register is not None:
                log.warning("worker %s: its record was removed; registering again", self.worker_id)
                self.register()
        except StoreUnavailable as exc:
            # Logged once per outage by the tracker; this beat, on time, is also its probe.
            self.outage.failed(exc)
            reachable = False
        except Exception as exc:
            log.warning("worker %s: cannot record heartbeat: %s", self.worker_id, exc)
        for task in tasks:
            if reachable:
                self._beat_uow(task, now)
            else:
                # the deliveries are still held (RabbitMQ's connection keeps answering)
                task.request_extend(self.visibility)

    def _beat_uow(self, task: Running, now: datetime) -> None:
        try:
            self.store.update_uow(
                task.uow_id,
                expected_state=UowState.IN_PROGRESS,
                changes={"heartbeat_at": now},
            )
        except (StateConflict, NotFound) as exc:
            task.taken_away(f"no longer in progress ({exc})")
            return
        except StoreUnavailable as exc:
            self.outage.failed(exc)
        except Exception as exc:
            log.warning("uow %s: cannot record heartbeat: %s", task.uow_id, exc)
        task.request_extend(self.visibility)
