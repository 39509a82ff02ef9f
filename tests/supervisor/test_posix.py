"""The supervisor with real OS processes, real signals and the real clock (the slower suite)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import replace
from datetime import timedelta

import psutil
import pytest

from db.clock import SystemClock
from db.errors import NotFound
from db.models import SupervisedProcess
from db.placement import Placement
from db.states import SupervisedState as S
from mx.services import boxes
from supervisor.host import PosixHost
from supervisor.loop import Supervisor
from tests.polling import wait_until
from tests.supervisor.conftest import BOX, make_config, register

pytestmark = pytest.mark.slow


def gone(pid: int) -> bool:
    """Dead, or a zombie nobody reaped yet (init in a container may be slow to)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def argv(placed: Placement) -> list[str]:
    return list(placed.entry.command)


class Live:
    """A supervisor thread on the real host, over a SQLite store."""

    def __init__(self, store, tmp_path, **config) -> None:
        self.store = store
        self.clock = SystemClock()
        config.setdefault("startsecs", timedelta(seconds=0.3))
        config.setdefault("poll", timedelta(seconds=0.1))
        config.setdefault("stopwaitsecs", timedelta(seconds=2))
        config.setdefault("backoff_base", timedelta(seconds=0.1))
        config.setdefault("log_dir", str(tmp_path))
        self.config = make_config(tmp_path, **config)
        self.supervisor: Supervisor | None = None

    def configure(self, **changes) -> None:
        self.config = replace(self.config, **changes)

    def start(self) -> Supervisor:
        self.supervisor = Supervisor(
            self.store, PosixHost(), self.clock, self.config, argv_for=argv
        )
        self.supervisor.start()
        return self.supervisor

    def record(self, name: str = "p") -> SupervisedProcess | None:
        """The stored record, None until the supervisor created it."""
        try:
            return self.store.get_supervised(BOX, name)
        except NotFound:
            return None

    def restarted(self, old_pid: int, name: str = "p") -> SupervisedProcess | None:
        """The record once it names a process other than ``old_pid``."""
        rec = self.record(name)
        return rec if rec is not None and rec.pid not in (None, old_pid) else None

    def wait_state(self, state: S, name: str = "p", deadline: float = 10.0) -> SupervisedProcess:
        return wait_until(
            lambda: (r := self.record(name)) is not None and r.state == state and r,
            deadline,
            what=f"{name} {state}",
        )

    def edges(self, name: str = "p") -> list[tuple[str, str, str]]:
        return [
            (e.trigger, e.from_state, e.to_state)
            for e in self.store.history("supervised", f"{BOX}/{name}")
            if e.from_state != e.to_state
        ]

    def close(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop(timeout=10)
            assert not self.supervisor.alive


@pytest.fixture
def live(sqlite_store, tmp_path):
    rig = Live(sqlite_store, tmp_path)
    yield rig
    rig.close()


def test_exits_at_once_backs_off_with_growing_delays_then_fatal(live, clock):
    # given a process that exits at once, startretries 3 and a base delay of 0.1 s
    register(live.store, clock, "p", command=("sh", "-c", "exit 3"))
    live.configure(startsecs=timedelta(seconds=0.5), startretries=3)
    # when
    live.start()
    rec = live.wait_state(S.FATAL)
    # then: four starts, each failure backing off, then fatal
    assert (rec.exit_code, rec.start_attempts) == (3, 4)
    assert live.edges() == [
        ("start", "stopped", "starting"),
        ("exit", "starting", "backoff"),
        ("start", "backoff", "starting"),
        ("exit", "starting", "backoff"),
        ("start", "backoff", "starting"),
        ("exit", "starting", "backoff"),
        ("start", "backoff", "starting"),
        ("exit", "starting", "backoff"),
        ("give_up", "backoff", "fatal"),
    ]
    events = [
        e
        for e in live.store.history("supervised", f"{BOX}/p")
        if e.trigger in ("exit", "start") and e.from_state != e.to_state
    ]
    waits = [
        (later.at - earlier.at).total_seconds()
        for earlier, later in zip(events[1::2], events[2::2], strict=False)
    ]
    # (instants are stored in milliseconds, hence the 1 ms of slack below the delay; above it,
    # room for a loaded machine)
    for waited, delay in zip(waits, [0.1, 0.2, 0.4], strict=True):
        assert delay - 0.001 <= waited < delay + 0.3
    assert waits[0] < waits[1] < waits[2]


def test_dies_after_running_is_restarted_at_once(live, clock):
    # given a running process, and a poll so slow that only exit events can explain a quick restart
    register(live.store, clock, "p", command=("sleep", "1000"))
    live.configure(
        startsecs=timedelta(seconds=0.2),
        poll=timedelta(seconds=30),
        stats_interval=timedelta(seconds=30),
    )
    live.start()
    first = live.wait_state(S.RUNNING)
    # when it is killed
    killed_at = time.monotonic()
    os.kill(first.pid, signal.SIGKILL)
    # then a new one starts within moments
    second = wait_until(lambda: live.restarted(first.pid), 5, what="a restart")
    assert time.monotonic() - killed_at < 1.0
    assert psutil.Process(second.pid).create_time() == pytest.approx(second.create_time)
    assert ("exit", "running", "exited") in live.edges()
    assert ("start", "exited", "starting") in live.edges()
    assert live.wait_state(S.RUNNING).exit_code is None
    assert any(
        e.details.get("pid") == second.pid for e in live.store.history("supervised", f"{BOX}/p")
    )


def test_stop_reaches_grandchildren(live, clock):
    # given a shell that runs two grandchildren in its process group
    register(live.store, clock, "p", command=("sh", "-c", "sleep 1001 & sleep 1002 & wait"))
    live.start()
    rec = live.wait_state(S.RUNNING)
    family = wait_until(
        lambda: len(kids := psutil.Process(rec.pid).children(recursive=True)) == 2 and kids,
        5,
        what="two grandchildren",
    )
    # when the operator stops it
    boxes.stop_process(live.store, BOX, "p", clock=live.clock, actor="test")
    # then the leader and every grandchild are gone
    stopped = live.wait_state(S.STOPPED)
    assert stopped.exit_code is not None and stopped.pid is None
    assert gone(rec.pid)
    assert all(gone(kid.pid) for kid in family)


def test_stop_kills_a_group_that_ignores_sigterm(live, clock):
    # given a group that ignores SIGTERM (sh passes the ignored disposition to its children)
    register(live.store, clock, "p", command=("sh", "-c", "trap '' TERM; sleep 1003 & wait"))
    live.configure(stopwaitsecs=timedelta(seconds=0.5))
    live.start()
    rec = live.wait_state(S.RUNNING)
    kids = wait_until(lambda: psutil.Process(rec.pid).children(), 5, what="the grandchild")
    # when
    asked = time.monotonic()
    boxes.stop_process(live.store, BOX, "p", clock=live.clock, actor="test")
    stopped = live.wait_state(S.STOPPED)
    # then SIGKILL came after stopwaitsecs
    assert time.monotonic() - asked >= 0.5
    assert stopped.exit_code == -signal.SIGKILL
    assert gone(rec.pid) and all(gone(k.pid) for k in kids)


def test_reused_pid_is_not_taken_for_the_child(live, clock):
    # given a record naming the pid of an innocent live process, with another create time
    register(live.store, clock, "p", command=("sleep", "1000"))
    innocent = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    try:
        real = psutil.Process(innocent.pid).create_time()
        live.store.ensure_supervised(
            SupervisedProcess(
                box_id=BOX,
                process="p",
                state=S.RUNNING,
                pid=innocent.pid,
                create_time=real - 50.0,
                started_at=live.clock.now(),
                updated_at=live.clock.now(),
            )
        )
        # when a supervisor starts
        live.start()
        rec = wait_until(lambda: live.restarted(innocent.pid), 5, what="a start")
        # then it recorded the loss, started its own process, and left the innocent alone
        assert live.edges()[:2] == [("exit", "running", "exited"), ("start", "exited", "starting")]
        assert rec.pid != innocent.pid
        live.wait_state(S.RUNNING)
        assert innocent.poll() is None
    finally:
        innocent.kill()
        innocent.wait()
