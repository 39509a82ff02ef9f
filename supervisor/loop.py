"""The supervisor of one box: keeps each supervised process in the state the store asks for.

One thread runs :meth:`Supervisor.tick` over and over. A tick

1. waits, at most until the next deadline, for a watched process to exit (the host wakes it the
   moment one does: no polling of children);
2. every ``poll``, re-reads the box configuration and the registrations from the store;
3. drives every supervised process one or more edges through the supervised machine
   (:meth:`Supervisor._step`: one branch per edge, each labelled with it);
4. every ``stats_interval``, writes the psutil facts of the live processes to the store.

Every state change goes through :func:`db.state_change.change_supervised`, by way of
:class:`supervisor.actions.Actions`. The store is the truth; what is kept in memory (which pid is
which instance, stop deadlines, exits not yet recorded) is rebuilt from it after a crash
(:meth:`Supervisor.recover`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from db.errors import TactusError
from db.models import SupervisedProcess
from db.placement import place
from db.states import SIGNALLABLE_STATES, SupervisedState
from supervisor.actions import Actions, ArgvFor, ended_changes, secs
from supervisor.host import Exit

if TYPE_CHECKING:
    from db.clock import Clock
    from db.store import Store
    from supervisor.config import SupervisorConfig
    from supervisor.host import ProcessHost

log = logging.getLogger(f"tactus.{__name__}")

STOPPED = SupervisedState.STOPPED
STARTING = SupervisedState.STARTING
RUNNING = SupervisedState.RUNNING
BACKOFF = SupervisedState.BACKOFF
STOPPING = SupervisedState.STOPPING
EXITED = SupervisedState.EXITED
FATAL = SupervisedState.FATAL

#: While a stopped leader's group still has members, look again this often (seconds).
GROUP_POLL = 0.05
#: Shortest wait of a tick, so a deadline that a refused change left in the past cannot spin.
MIN_WAIT = 0.002
#: A shutdown waits ``stopwaitsecs`` plus this for the last processes to end.
SHUTDOWN_MARGIN = 5.0


class Supervisor:
    """Starts, watches, restarts and stops the supervised processes of one box.

    A component (STYLE 2.18): :meth:`start` runs it in its own thread, :meth:`stop` asks it to
    stop every process and end, :meth:`join` waits. Tests drive :meth:`recover` and :meth:`tick`
    directly, on a fake host and a fake clock.
    """

    def __init__(
        self,
        store: Store,
        host: ProcessHost,
        clock: Clock,
        config: SupervisorConfig,
        *,
        argv_for: ArgvFor,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._store = store
        self._host = host
        self._clock = clock
        self._config = config
        self._act = Actions(
            store,
            host,
            clock,
            config,
            argv_for=argv_for,
            environ=os.environ if environ is None else environ,
        )
        self._next_poll: datetime | None = None
        self._next_stats: datetime | None = None
        self._stop_requested = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def records(self) -> dict[str, SupervisedProcess]:
        """This box's supervised records as last stored, by instance name."""
        return self._act.records

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Recover what an earlier supervisor left, then supervise, in a thread."""
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the loop to stop every process (signal, then SIGKILL after ``stopwaitsecs``) and
        end; wait up to ``timeout`` seconds for it."""
        self._stop_requested.set()
        self._host.wake()
        self.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the loop's thread to end."""
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        wait = 0.0
        recovered = False
        while not self._stop_requested.is_set():
            try:
                if not recovered:
                    self.recover()
                    recovered = True
                wait = self.tick(wait)
            except Exception as exc:
                # The store is down, or a bug: exits stay readable on their pidfds, so nothing is
                # lost by waiting a poll before the next try.
                if isinstance(exc, TactusError):
                    log.error("supervisor %s: %s", self._config.box_id, exc.message)
                else:
                    log.exception("supervisor %s: tick failed", self._config.box_id)
                self._stop_requested.wait(self._config.poll.total_seconds())
                wait = 0.0
        self.shutdown()

    def shutdown(self) -> None:
        """Stop every process of the box (the records keep ``desired``), then release the host."""
        self._act.shutting_down = True
        end = time.monotonic() + self._config.stopwaitsecs.total_seconds() + SHUTDOWN_MARGIN
        wait = 0.0
        failures = 0
        while time.monotonic() < end:
            try:
                wait = min(self.tick(wait), 0.1)
            except Exception:
                failures += 1
                if failures == 1:  # the store is away, most likely: once is enough
                    log.exception("supervisor %s: tick failed while stopping", self._config.box_id)
                wait = 0.1
            if not any(r.state in SIGNALLABLE_STATES for r in self.records.values()):
                break
        self._host.close()
        log.info("supervisor %s: stopped", self._config.box_id)

    # -- one pass ---------------------------------------------------------------------------------

    def recover(self) -> None:
        """At start: read the records, re-adopt what an earlier supervisor left running (by pid
        and create time), record what ended meanwhile, start nothing twice."""
        now = self._clock.now()
        self.reconcile(now)
        self._next_poll = now + self._config.poll
        self._act.recover()

    def tick(self, timeout: float = 0.0) -> float:
        """Wait up to ``timeout`` seconds for exits, then drive every process; returns the
        seconds until something is due."""
        for ended in self._host.wait(timeout):
            name = self._act.pids.pop(ended.pid, None)
            if name is not None:
                self._act.exits[name] = ended
        now = self._clock.now()
        # While shutting down nothing is wanted, so the registrations need not be read (and a
        # store that went away does not keep the processes from being stopped).
        due = self._next_poll is None or now >= self._next_poll
        if due and not self._act.shutting_down:
            self.reconcile(now)
            self._next_poll = now + self._config.poll
        for name in sorted(self.records):
            self._drive(name)
        now = self._clock.now()
        if self._next_stats is None or now >= self._next_stats:
            self._refresh_stats(now)
            self._next_stats = now + self._config.stats_interval
        return self._seconds_to_next(now)

    def reconcile(self, now: datetime) -> None:
        """Read the registrations and this box's records; create the records of processes newly
        placed here (desired running)."""
        entries = [record.entry for record in self._store.list_processes()]
        self._act.placed = place(entries, self._config.box_id)
        records = {r.process: r for r in self._store.list_supervised(self._config.box_id)}
        for name in sorted(self._act.placed.keys() - records.keys()):
            new = SupervisedProcess(box_id=self._config.box_id, process=name, updated_at=now)
            records[name] = self._store.ensure_supervised(new)
            log.info("supervised %s: placed on this box", new.key)
        self._act.records = records

    def _drive(self, name: str) -> None:
        # Follow edges while each one leads somewhere new (RUNNING -> EXITED -> STARTING).
        for _ in range(4):
            record = self.records.get(name)
            if record is None:
                return
            moved = self._step(record, self._clock.now())
            if moved is None or moved.state == record.state:
                return

    def _step(self, rec: SupervisedProcess, now: datetime) -> SupervisedProcess | None:
        """Take at most one edge of the supervised machine for ``rec``; None if none was due."""
        act = self._act
        want = act.wanted(rec)
        ended = act.exits.get(rec.process)
        up = now - rec.started_at if rec.started_at else timedelta(0)
        startsecs = self._config.startsecs

        if rec.state == STOPPED:
            if want:
                # STOPPED -> STARTING: a fresh series of starts
                return act.spawn(rec, "start", "desired running", {"start_attempts": 0})
            if rec.process not in act.placed:
                self._store.delete_supervised(rec.box_id, rec.process)
                self.records.pop(rec.process, None)
                log.info("supervised %s: no longer placed on this box, forgotten", rec.key)
            return None

        if rec.state == STARTING:
            if ended is not None and (up < startsecs or rec.pid is None):
                # STARTING -> BACKOFF
                return act.backoff(rec, ended, now, f"exited {secs(up)} after its start")
            if ended is not None or (want and up >= startsecs):
                # STARTING -> RUNNING (an exit that came after startsecs is RUNNING -> EXITED)
                return act.started(rec)
            if not want:
                # STARTING -> STOPPING
                return act.begin_stop(rec, now)
            return None

        if rec.state == RUNNING:
            if ended is not None:
                # RUNNING -> EXITED
                return act.exited(rec, ended, now)
            if not want:
                # RUNNING -> STOPPING
                return act.begin_stop(rec, now)
            return None

        if rec.state == EXITED:
            if want:
                # EXITED -> STARTING: a process that was running is restarted at once; the
                # startsecs gate bounds a crash loop to one start per startsecs.
                return act.spawn(rec, "start", "restart after exit")
            # EXITED -> STOPPED
            return act.change(rec, "stop", reason="desired stopped")

        if rec.state == BACKOFF:
            if not want:
                # BACKOFF -> STOPPED
                return act.change(rec, "stop", reason="desired stopped")
            if rec.start_attempts > self._config.startretries:
                # BACKOFF -> FATAL
                log.error("supervised %s: %s failed starts, giving up", rec.key, rec.start_attempts)
                return act.change(
                    rec,
                    "give_up",
                    reason=f"{rec.start_attempts} failed starts in a row",
                    changes={"backoff_until": None},
                )
            if rec.backoff_until is None or now >= rec.backoff_until:
                # BACKOFF -> STARTING
                return act.spawn(rec, "start", f"retry {rec.start_attempts} after backoff")
            return None

        if rec.state == STOPPING:
            return self._stopping(rec, ended, now)

        if rec.state == FATAL and not want:
            # FATAL -> STOPPED
            return act.change(rec, "stop", reason="desired stopped")
        return None

    def _stopping(
        self, rec: SupervisedProcess, ended: Exit | None, now: datetime
    ) -> SupervisedProcess | None:
        act, name = self._act, rec.process
        deadline = act.stop_deadline.setdefault(name, now + self._config.stopwaitsecs)
        leader_gone = ended is not None or rec.pid is None
        if leader_gone and (rec.pid is None or not self._host.group_alive(rec.pid)):
            # STOPPING -> STOPPED
            stored = act.change(
                rec,
                "stopped",
                reason="stopped" + (" (killed)" if name in act.killed else ""),
                changes=ended_changes(ended, now),
            )
            if stored is not None:
                act.clear(name)
            return stored
        if now >= deadline and name not in act.killed and rec.pid is not None:
            # Still STOPPING: the group outlived stopwaitsecs, so SIGKILL it (no edge).
            log.warning("supervised %s: alive at %s, SIGKILL", rec.key, secs(deadline))
            self._host.signal_group(rec.pid, signal.SIGKILL)
            act.killed.add(name)
        return None

    # -- facts and timing -------------------------------------------------------------------------

    def _refresh_stats(self, now: datetime) -> None:
        for rec in list(self.records.values()):
            if rec.state not in SIGNALLABLE_STATES or rec.pid is None:
                continue
            try:
                facts = self._host.probe(rec.pid, rec.create_time)
            except Exception:
                # Facts are for the page; failing to read them must not stop the supervision.
                log.exception("supervised %s: cannot read the facts of pid %s", rec.key, rec.pid)
                continue
            if facts is None:
                continue
            stats = {
                "rss": facts.rss,
                "cpu_percent": facts.cpu_percent,
                "threads": facts.threads,
                "at": now.isoformat(),
            }
            self._store.update_supervised_stats(rec.box_id, rec.process, stats, now)

    def _seconds_to_next(self, now: datetime) -> float:
        act = self._act
        due = [t for t in (self._next_poll, self._next_stats) if t is not None]
        for name, rec in self.records.items():
            if rec.state == STARTING and rec.started_at is not None:
                due.append(rec.started_at + self._config.startsecs)
            elif rec.state == BACKOFF and rec.backoff_until is not None:
                due.append(rec.backoff_until)
            elif rec.state == STOPPING:
                due.append(act.stop_deadline.get(name, now))
                if name in act.exits or name in act.killed:
                    due.append(now + timedelta(seconds=GROUP_POLL))
        if not due:
            return self._config.poll.total_seconds()
        return max((min(due) - now).total_seconds(), MIN_WAIT)
