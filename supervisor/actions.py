"""The effects behind the edges of the supervised machine, for :class:`supervisor.loop.Supervisor`.

Each action pairs an OS effect (through the :class:`~supervisor.host.ProcessHost`) with its
recorded change (through :func:`db.state_change.change_supervised`), in the order that survives a
crash of the supervisor between the two:

- start: spawn, then record ``starting`` with the pid and create time; if the record fails, the
  new process is killed at once (never a process no record names); a crash in between leaves a
  process the next supervisor finds by the marker in its environment;
- stop: record ``stopping``, then signal; a crash in between leaves ``stopping`` with a live pid,
  and the next supervisor signals again;
- exit: record the end, then kill whatever is left of the process group.

The state the loop keeps in memory lives here too: which pid is which instance, exits heard but
not yet recorded, stop deadlines.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from db.backoff import backoff
from db.errors import NotFound, StateConflict, TransitionRefused
from db.models import SupervisedProcess
from db.placement import Placement
from db.state_change import change_supervised
from db.states import SIGNALLABLE_STATES, SupervisedState
from supervisor.host import SUPERVISED_ENV, SUPERVISOR_ENV, Exit

if TYPE_CHECKING:
    from db.clock import Clock
    from db.store import Store
    from supervisor.config import SupervisorConfig
    from supervisor.host import ProcessHost

log = logging.getLogger(f"tactus.{__name__}")

STARTING = SupervisedState.STARTING
RUNNING = SupervisedState.RUNNING
STOPPING = SupervisedState.STOPPING
FATAL = SupervisedState.FATAL

#: The signal that asks a process group to stop; SIGKILL follows after ``stopwaitsecs``.
STOP_SIGNAL = signal.SIGTERM

#: Builds the argv of an instance (``process_starter.py NAME --supervised``, or a daemon's own
#: ``command``).
ArgvFor = Callable[[Placement], Sequence[str]]


class Actions:
    """Starts, stops and records the supervised processes of one box."""

    def __init__(
        self,
        store: Store,
        host: ProcessHost,
        clock: Clock,
        config: SupervisorConfig,
        *,
        argv_for: ArgvFor,
        environ: Mapping[str, str],
    ) -> None:
        self.store = store
        self.host = host
        self.clock = clock
        self.config = config
        self.argv_for = argv_for
        self.environ = dict(environ)
        self.actor = f"supervisor {config.box_id}"
        #: The box's supervised records as last stored, by instance name.
        self.records: dict[str, SupervisedProcess] = {}
        #: What the registrations put on this box.
        self.placed: dict[str, Placement] = {}
        #: Watched pid -> instance.
        self.pids: dict[int, str] = {}
        #: Exits heard but not yet recorded, by instance.
        self.exits: dict[str, Exit] = {}
        #: When SIGKILL follows the stop signal, by instance; in ``killed`` once sent.
        self.stop_deadline: dict[str, datetime] = {}
        self.killed: set[str] = set()
        #: Set by the loop when it stops: nothing is wanted any more.
        self.shutting_down = False

    def spawn(
        self,
        rec: SupervisedProcess,
        trigger: str,
        reason: str,
        changes: Mapping[str, Any] | None = None,
    ) -> SupervisedProcess | None:
        """Start the instance and record ``trigger`` (an edge into ``starting``) with its pid and
        create time; a start that cannot even spawn is recorded, then backs off."""
        name = rec.process
        placed = self.placed[name]
        now = self.clock.now()
        fresh = {"started_at": now, "stopped_at": None, "exit_code": None, "stats": {}}
        fresh.update(changes or {})
        env = {**self.environ, SUPERVISOR_ENV: self.config.marker, SUPERVISED_ENV: name}
        log_dir = self.config.log_dir
        try:
            facts = self.host.spawn(
                self.argv_for(placed),
                env=env,
                cwd=self.config.cwd,
                output=os.path.join(log_dir, f"{name}.out") if log_dir else None,
            )
        except OSError as exc:
            # Nothing started: record the attempt, then the failure, so it backs off like a
            # process that died at once.
            started = self.change(
                rec, trigger, reason=reason, changes={**fresh, "pid": None, "create_time": None}
            )
            if started is None:
                return None
            return self.backoff(started, None, now, f"cannot start: {exc}")
        stored = None
        try:
            stored = self.change(
                rec,
                trigger,
                reason=reason,
                changes={**fresh, "pid": facts.pid, "create_time": facts.create_time},
                details={"pid": facts.pid},
            )
        finally:
            if stored is None:
                # Not recorded, so nobody would ever stop it: kill it now rather than risk a
                # second copy after the next start (start nothing twice).
                log.error("supervised %s: start not recorded, killing pid %s", rec.key, facts.pid)
                self.host.signal_group(facts.pid, signal.SIGKILL)
        if stored is None:
            return None
        self.pids[facts.pid] = name
        self.exits.pop(name, None)
        return stored

    def started(self, rec: SupervisedProcess) -> SupervisedProcess | None:
        """Record ``starting -> running``: it stayed up ``startsecs``; the failures count resets."""
        return self.change(
            rec,
            "started",
            reason=f"up for {secs(self.config.startsecs)}",
            facts={"startsecs_elapsed": True},
            changes={"start_attempts": 0, "backoff_until": None},
        )

    def backoff(
        self, rec: SupervisedProcess, ended: Exit | None, now: datetime, reason: str
    ) -> SupervisedProcess | None:
        """Record a failed start (``starting -> backoff``) and when the next one is due."""
        attempts = rec.start_attempts + 1
        delay = backoff(
            self.config.backoff_base,
            attempts,
            cap=self.config.backoff_cap,
            jitter=self.config.backoff_jitter,
        )
        log.warning("supervised %s: failed start %s, %s", rec.key, attempts, reason)
        stored = self.change(
            rec,
            "exit",
            reason=f"{reason}; next start in {secs(delay)}",
            changes={
                **ended_changes(ended, now),
                "start_attempts": attempts,
                "backoff_until": now + delay,
            },
            details={"delay": delay.total_seconds(), "attempt": attempts},
        )
        if stored is not None:
            self.after_exit(rec, ended)
        return stored

    def exited(
        self, rec: SupervisedProcess, ended: Exit, now: datetime
    ) -> SupervisedProcess | None:
        """Record ``running -> exited``."""
        log.warning("supervised %s: pid %s exited (%s)", rec.key, rec.pid, ended.exit_code)
        stored = self.change(
            rec,
            "exit",
            reason=f"pid {rec.pid} exited with {ended.exit_code}",
            changes=ended_changes(ended, now),
        )
        if stored is not None:
            self.after_exit(rec, ended)
        return stored

    def after_exit(self, rec: SupervisedProcess, ended: Exit | None) -> None:
        """Forget the ended process, and kill what is left of its group."""
        self.clear(rec.process)
        # The leader is gone; whatever is left of its group would be orphaned (and might hold
        # what the next start needs), so it goes too. Only for an exit we saw (pid > 0): a
        # process lost while no supervisor watched may have left its pid to a stranger. The
        # group id cannot be reused while a member lives, and the leader was reaped a moment
        # ago, so this signal reaches only the leftovers.
        if ended is not None and ended.pid > 0 and self.host.group_alive(ended.pid):
            log.warning("supervised %s: killing what is left of group %s", rec.key, ended.pid)
            self.host.signal_group(ended.pid, signal.SIGKILL)

    def begin_stop(self, rec: SupervisedProcess, now: datetime) -> SupervisedProcess | None:
        """Record ``-> stopping``, then send the stop signal to the group."""
        # Record first, then signal: a crash in between leaves STOPPING with a live pid, and the
        # next supervisor sends the signal again.
        stored = self.change(rec, "stop", reason="desired stopped")
        if stored is not None and rec.pid is not None:
            self.stop_deadline[rec.process] = now + self.config.stopwaitsecs
            self.host.signal_group(rec.pid, STOP_SIGNAL)
        return stored

    def clear(self, name: str) -> None:
        """Drop what is kept in memory about an instance's last process."""
        self.exits.pop(name, None)
        self.stop_deadline.pop(name, None)
        self.killed.discard(name)

    def change(
        self,
        rec: SupervisedProcess,
        trigger: str,
        *,
        reason: str,
        facts: Mapping[str, Any] | None = None,
        changes: Mapping[str, Any] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> SupervisedProcess | None:
        """Move ``rec`` by ``trigger``; None (with the record re-read) if another actor changed
        it first, e.g. an operator's start of a fatal process."""
        try:
            stored = change_supervised(
                self.store,
                rec,
                trigger,
                clock=self.clock,
                actor=self.actor,
                reason=reason,
                facts=facts,
                changes=changes,
                details=details,
            )
        except (StateConflict, TransitionRefused, NotFound) as exc:
            log.warning("supervised %s: %s", rec.key, exc.message)
            self.reread(rec)
            return None
        self.records[rec.process] = stored
        return stored

    def reread(self, rec: SupervisedProcess) -> None:
        """Refresh one record from the store (it is gone if deleted)."""
        try:
            self.records[rec.process] = self.store.get_supervised(rec.box_id, rec.process)
        except NotFound:
            self.records.pop(rec.process, None)

    def wanted(self, rec: SupervisedProcess) -> bool:
        """Whether ``rec`` should run: desired, placed here, enabled, and no shutdown going on."""
        placed = self.placed.get(rec.process)
        return not self.shutting_down and rec.desired and placed is not None and placed.runnable

    # -- after a crash ------------------------------------------------------------------------------

    def recover(self) -> None:
        """At start, after the records are read: re-adopt the processes an earlier supervisor
        left running, record the ones that ended meanwhile, and deal with any it started without
        recording."""
        now = self.clock.now()
        adopted: set[int] = set()
        for name, rec in sorted(self.records.items()):
            if rec.state in SIGNALLABLE_STATES:
                if rec.pid and rec.create_time and self.host.adopt(rec.pid, rec.create_time):
                    adopted.add(rec.pid)
                    self.pids[rec.pid] = name
                    log.info("supervised %s: re-adopted pid %s (%s)", rec.key, rec.pid, rec.state)
                    if rec.state == STOPPING:
                        self.stop_deadline[name] = now + self.config.stopwaitsecs
                        self.host.signal_group(rec.pid, STOP_SIGNAL)
                    continue
                # Gone while no supervisor watched, or the pid now names another process: record
                # the end, and never signal that pid.
                lost = Exit(pid=0, exit_code=None)  # pid 0: nothing of it may be signalled
                if rec.state == STARTING:
                    # STARTING -> BACKOFF
                    self.backoff(rec, lost, now, "ended while the supervisor was down")
                elif rec.state == RUNNING:
                    # RUNNING -> EXITED
                    self.exited(rec, lost, now)
                else:
                    # STOPPING -> STOPPED
                    self.change(rec, "stopped", reason="ended while the supervisor was down")
            elif rec.state == FATAL and self.wanted(rec):
                # FATAL -> STARTING: a new supervisor gives a fatal process a new series of starts
                self.spawn(rec, "start", "supervisor restarted", {"start_attempts": 0})
        self.sweep_orphans(adopted)

    def sweep_orphans(self, adopted: set[int]) -> None:
        """Adopt or kill the processes this box's marker names but no record does."""
        # A supervisor that crashed between a spawn and its record left a process no record
        # names; find it by the marker in its environment.
        for facts, name in self.host.scan(SUPERVISOR_ENV, self.config.marker):
            if facts.pid in adopted or facts.pid in self.pids:
                continue
            rec = self.records.get(name)
            free = rec is not None and rec.state not in SIGNALLABLE_STATES
            if free and self.wanted(rec) and self.host.adopt(facts.pid, facts.create_time):
                # <stopped|exited|backoff|fatal> -> STARTING: adopt it instead of starting a twin
                stored = self.change(
                    rec,
                    "start",
                    reason=f"adopted unrecorded pid {facts.pid}",
                    changes={
                        "pid": facts.pid,
                        "create_time": facts.create_time,
                        "started_at": self.clock.now(),
                        "stopped_at": None,
                        "exit_code": None,
                    },
                )
                if stored is not None:
                    self.pids[facts.pid] = name
                    continue
                self.host.forget(facts.pid)
            log.warning("supervisor: killing unrecorded process %s (%s)", facts.pid, name)
            self.host.signal_group(facts.pid, signal.SIGKILL)


def ended_changes(ended: Exit | None, now: datetime) -> dict[str, Any]:
    """The fields a record takes when its process ended (``ended`` None: it never started)."""
    return {
        "pid": None,
        "create_time": None,
        "exit_code": ended.exit_code if ended is not None else None,
        "stopped_at": now,
        "stats": {},
    }


def secs(value: timedelta | datetime) -> str:
    """A duration or an instant, for log lines and reasons."""
    if isinstance(value, datetime):
        return value.isoformat()
    return f"{value.total_seconds():.3f}s"
