"""Every edge of the supervised machine, walked through the supervisor's loop on a fake host.

As supervisor's ``DummyOptions`` tests do: put a process in a state, let the loop take one pass,
assert the new state, what was asked of the OS, and the history written.
"""

from __future__ import annotations

import signal
from datetime import timedelta

import pytest

from db.errors import StoreUnavailable
from db.machines.supervised import SUPERVISED_TRANSITIONS
from db.models import Event
from db.states import SupervisedState as S
from supervisor.fake_host import FakeHost
from supervisor.loop import Supervisor
from tests.supervisor.conftest import BOX, make_config, register


class Rig:
    """A supervisor on a fake host and a fake clock, with helpers to move time and state."""

    def __init__(self, store, clock, tmp_path, **config) -> None:
        self.store, self.clock, self.host = store, clock, FakeHost()
        self.config = make_config(tmp_path, **config)
        self.sup = self.new_supervisor()

    def new_supervisor(self) -> Supervisor:
        return Supervisor(
            self.store,
            self.host,
            self.clock,
            self.config,
            argv_for=lambda placed: ["run", placed.instance],
            environ={"PATH": "/bin"},
        )

    def tick(self, advance: float = 0.0) -> None:
        if advance:
            self.clock.advance(advance)
        self.sup.tick(0.0)

    def poll(self) -> None:
        """One poll interval later: the supervisor re-reads the desired state."""
        self.tick(self.config.poll.total_seconds())

    def record(self, name: str = "p"):
        return self.store.get_supervised(BOX, name)

    def state(self, name: str = "p") -> S:
        return self.record(name).state

    def pid(self, name: str = "p") -> int:
        return self.record(name).pid

    def set_desired(self, desired: bool, name: str = "p") -> None:
        rec = self.record(name)
        event = Event(
            entity="supervised",
            entity_id=rec.key,
            at=self.clock.now(),
            trigger="desire",
            from_state=rec.state,
            to_state=rec.state,
            actor="test",
        )
        self.store.set_desired(BOX, name, desired, event=event)

    def edges(self, name: str = "p") -> list[tuple[str, str, str]]:
        return [
            (e.trigger, e.from_state, e.to_state)
            for e in self.store.history("supervised", f"{BOX}/{name}")
            if e.from_state != e.to_state
        ]

    # -- reaching a state through the loop ----------------------------------------------------------

    def starting(self) -> None:
        self.sup.recover()
        self.tick()
        assert self.state() == S.STARTING

    def running(self) -> None:
        self.starting()
        self.tick(1.0)
        assert self.state() == S.RUNNING

    def backoff(self) -> None:
        self.starting()
        self.host.exit(self.pid(), 1)
        self.tick(0.1)
        assert self.state() == S.BACKOFF

    def exited_then_wanted_off(self) -> None:
        self.running()
        self.set_desired(False)
        self.host.exit(self.pid(), 0)
        self.poll()

    def fatal(self) -> None:
        self.backoff()
        for _ in range(self.config.startretries):
            self.tick(5.0)
            self.host.exit(self.pid(), 1)
            self.tick(0.1)
        self.tick()
        assert self.state() == S.FATAL


@pytest.fixture
def rig(sqlite_store, clock, tmp_path) -> Rig:
    register(sqlite_store, clock, "p")
    return Rig(sqlite_store, clock, tmp_path)


# -- one test per edge ------------------------------------------------------------------------------


def edge_start_stopped(rig: Rig) -> None:
    # given a new process, stopped and desired running
    rig.sup.recover()
    assert rig.state() == S.STOPPED
    # when
    rig.tick()
    # then
    assert rig.state() == S.STARTING
    assert ("spawn", ("run", "p"), "p") in rig.host.calls
    assert rig.record().create_time == rig.host.last_spawned().create_time


def edge_started_starting(rig: Rig) -> None:
    rig.starting()
    rig.tick(0.5)
    assert rig.state() == S.STARTING, "not before startsecs"
    rig.tick(0.5)
    assert rig.state() == S.RUNNING
    assert rig.record().start_attempts == 0


def edge_exit_starting(rig: Rig) -> None:
    rig.starting()
    rig.host.exit(rig.pid(), 3)
    rig.tick(0.2)
    rec = rig.record()
    assert rec.state == S.BACKOFF
    assert (rec.exit_code, rec.start_attempts, rec.pid) == (3, 1, None)
    assert rec.backoff_until == rig.clock.now() + timedelta(seconds=1)


def edge_stop_starting(rig: Rig) -> None:
    rig.starting()
    pid = rig.pid()
    rig.host.processes[pid].obey = frozenset()
    rig.set_desired(False)
    rig.poll()
    assert rig.state() == S.STOPPING
    assert rig.host.signals(pid) == [signal.SIGTERM]


def edge_exit_running(rig: Rig) -> None:
    rig.running()
    pid = rig.pid()
    rig.host.exit(pid, -9)
    rig.tick()
    assert ("exit", "running", "exited") in rig.edges()
    assert rig.record().pid != pid, "restarted at once"


def edge_stop_running(rig: Rig) -> None:
    rig.running()
    pid = rig.pid()
    rig.host.processes[pid].obey = frozenset()
    rig.set_desired(False)
    rig.poll()
    assert rig.state() == S.STOPPING
    assert rig.host.signals(pid) == [signal.SIGTERM]


def edge_start_backoff(rig: Rig) -> None:
    rig.backoff()
    rig.tick(0.5)
    assert rig.state() == S.BACKOFF, "not before backoff_until"
    rig.tick(0.5)
    assert rig.state() == S.STARTING
    assert rig.record().start_attempts == 1


def edge_give_up_backoff(rig: Rig) -> None:
    rig.fatal()
    starts = [c for c in rig.host.calls if c[0] == "spawn"]
    assert len(starts) == 1 + rig.config.startretries
    assert rig.record().start_attempts == rig.config.startretries + 1


def edge_stop_backoff(rig: Rig) -> None:
    rig.backoff()
    rig.set_desired(False)
    rig.poll()
    assert rig.state() == S.STOPPED


def edge_stopped_stopping(rig: Rig) -> None:
    rig.running()
    pid = rig.pid()
    rig.set_desired(False)
    rig.poll()  # SIGTERM is obeyed: the exit is heard on the next pass
    rig.tick()
    rec = rig.record()
    assert rec.state == S.STOPPED
    assert (rec.pid, rec.exit_code) == (None, -signal.SIGTERM)
    assert not rig.host.processes[pid].alive


def edge_start_exited(rig: Rig) -> None:
    rig.running()
    rig.host.exit(rig.pid(), 0)
    rig.tick()
    assert rig.edges()[-2:] == [("exit", "running", "exited"), ("start", "exited", "starting")]


def edge_stop_exited(rig: Rig) -> None:
    rig.exited_then_wanted_off()
    assert rig.edges()[-2:] == [("exit", "running", "exited"), ("stop", "exited", "stopped")]
    assert rig.state() == S.STOPPED


def edge_start_fatal(rig: Rig) -> None:
    rig.fatal()
    # when a new supervisor starts (after a restart of the daemon)
    rig.sup = rig.new_supervisor()
    rig.sup.recover()
    # then the fatal process gets a new series of starts
    rec = rig.record()
    assert (rec.state, rec.start_attempts) == (S.STARTING, 0)


def edge_stop_fatal(rig: Rig) -> None:
    rig.fatal()
    rig.set_desired(False)
    rig.poll()
    assert rig.state() == S.STOPPED


EDGES = {
    ("start", S.STOPPED): edge_start_stopped,
    ("started", S.STARTING): edge_started_starting,
    ("exit", S.STARTING): edge_exit_starting,
    ("stop", S.STARTING): edge_stop_starting,
    ("exit", S.RUNNING): edge_exit_running,
    ("stop", S.RUNNING): edge_stop_running,
    ("start", S.BACKOFF): edge_start_backoff,
    ("give_up", S.BACKOFF): edge_give_up_backoff,
    ("stop", S.BACKOFF): edge_stop_backoff,
    ("stopped", S.STOPPING): edge_stopped_stopping,
    ("start", S.EXITED): edge_start_exited,
    ("stop", S.EXITED): edge_stop_exited,
    ("start", S.FATAL): edge_start_fatal,
    ("stop", S.FATAL): edge_stop_fatal,
}


def test_edges_cover_the_whole_table():
    assert set(EDGES) == {(row.trigger, row.source) for row in SUPERVISED_TRANSITIONS}


@pytest.mark.parametrize(
    ("row"), SUPERVISED_TRANSITIONS, ids=lambda r: f"{r.source}-{r.trigger}-{r.dest}"
)
def test_supervisor_walks_edge(rig, row):
    EDGES[(row.trigger, row.source)](rig)
    assert (row.trigger, str(row.source), str(row.dest)) in rig.edges()


# -- around the edges -----------------------------------------------------------------------------


def test_supervisor_backoff_delays_grow_to_the_cap(sqlite_store, clock, tmp_path):
    # given a process that always dies at once, and a cap of 4 s
    register(sqlite_store, clock, "p")
    rig = Rig(sqlite_store, clock, tmp_path, startretries=5)
    rig.starting()
    delays = []
    # when it fails again and again
    for _ in range(5):
        rig.host.exit(rig.pid(), 1)
        rig.tick(0.1)
        rec = rig.record()
        delays.append((rec.backoff_until - clock.now()).total_seconds())
        clock.set(rec.backoff_until)
        rig.tick()
    # then the delays double up to the cap
    assert delays == [1.0, 2.0, 4.0, 4.0, 4.0]


def test_supervisor_stop_escalates_to_sigkill_after_stopwaitsecs(rig):
    # given a running process that ignores SIGTERM
    rig.running()
    pid = rig.pid()
    rig.host.processes[pid].obey = frozenset()
    rig.set_desired(False)
    rig.poll()
    # when stopwaitsecs pass
    rig.tick(4.9)
    assert rig.host.signals(pid) == [signal.SIGTERM]
    rig.tick(0.1)
    # then the group gets SIGKILL, and the exit ends the stop
    assert rig.host.signals(pid) == [signal.SIGTERM, signal.SIGKILL]
    rig.tick()
    assert rig.state() == S.STOPPED
    assert rig.record().exit_code == -signal.SIGKILL


def test_supervisor_stop_waits_for_group_members(rig):
    # given a leader that obeys SIGTERM but leaves two group members that do not
    rig.running()
    pid = rig.pid()
    rig.host.processes[pid].stragglers = 2
    rig.set_desired(False)
    rig.poll()
    rig.tick()
    # then it stays stopping until the deadline kills the group
    assert rig.state() == S.STOPPING
    rig.tick(5.0)
    assert signal.SIGKILL in rig.host.signals(pid)
    rig.tick()
    assert rig.state() == S.STOPPED


def test_supervisor_unexpected_exit_kills_the_rest_of_the_group(rig):
    rig.running()
    pid = rig.pid()
    rig.host.processes[pid].stragglers = 1
    rig.host.exit(pid, 1)
    rig.tick()
    assert rig.host.signals(pid) == [signal.SIGKILL]
    assert rig.state() == S.STARTING


def test_supervisor_spawn_failure_backs_off(rig):
    rig.sup.recover()
    rig.host.spawn_error = FileNotFoundError(2, "No such file or directory", "run")
    rig.tick()
    rec = rig.record()
    assert (rec.state, rec.start_attempts, rec.pid) == (S.BACKOFF, 1, None)
    assert rig.edges() == [("start", "stopped", "starting"), ("exit", "starting", "backoff")]


def test_supervisor_start_not_recorded_kills_the_child(rig, monkeypatch):
    # given a store that fails the write that records the start
    rig.sup.recover()

    def refuse(*args, **kwargs):
        raise StoreUnavailable("store gone")

    monkeypatch.setattr(rig.store, "transition_supervised", refuse)
    # when
    with pytest.raises(Exception, match="gone"):
        rig.tick()
    # then the unrecorded child was killed
    spawned = rig.host.last_spawned()
    assert rig.host.signals(spawned.pid) == [signal.SIGKILL]
    monkeypatch.undo()
    assert rig.state() == S.STOPPED


def test_supervisor_shutdown_stops_everything_and_keeps_desired(rig):
    rig.running()
    pid = rig.pid()
    rig.sup.shutdown()
    rec = rig.record()
    assert (rec.state, rec.desired) == (S.STOPPED, True)
    assert rig.host.signals(pid) == [signal.SIGTERM]
    assert ("close",) in rig.host.calls
