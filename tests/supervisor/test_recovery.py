"""A new supervisor after a crash: re-adopt by (pid, create_time), record what ended, start nothing
twice, and never signal a pid that now belongs to another process. On the fake host."""

from __future__ import annotations

import signal

import pytest

from db.models import SupervisedProcess
from db.states import SupervisedState as S
from supervisor.host import SUPERVISED_ENV, SUPERVISOR_ENV
from tests.supervisor.conftest import BOX, MARKER, register
from tests.supervisor.test_loop_edges import Rig


@pytest.fixture
def rig(sqlite_store, clock, tmp_path) -> Rig:
    register(sqlite_store, clock, "p")
    return Rig(sqlite_store, clock, tmp_path)


def seed(rig: Rig, state: S, *, pid=None, create_time=None, name="p") -> None:
    rig.store.ensure_supervised(
        SupervisedProcess(
            box_id=BOX,
            process=name,
            state=state,
            pid=pid,
            create_time=create_time,
            started_at=rig.clock.now(),
            updated_at=rig.clock.now(),
        )
    )


def spawns(rig: Rig) -> int:
    return sum(1 for c in rig.host.calls if c[0] == "spawn")


@pytest.mark.parametrize("state", [S.STARTING, S.RUNNING])
def test_recover_readopts_live_process_by_pid_and_create_time(rig, state):
    # given a process a crashed supervisor left running
    proc = rig.host.add()
    seed(rig, state, pid=proc.pid, create_time=proc.create_time)
    # when a new supervisor starts
    rig.sup.recover()
    rig.tick()
    # then it watches that process and starts no second one
    assert (rig.state(), rig.pid()) == (state, proc.pid)
    assert spawns(rig) == 0
    # and hears its exit at once
    rig.host.exit(proc.pid)
    rig.tick(2.0)
    assert rig.record().pid != proc.pid
    assert spawns(rig) == 1


def test_recover_reused_pid_is_not_adopted_nor_signalled(rig):
    # given the recorded pid now belongs to another process (a different create time)
    stranger = rig.host.add()
    seed(rig, S.RUNNING, pid=stranger.pid, create_time=stranger.create_time - 100.0)
    # when
    rig.sup.recover()
    rig.tick()
    # then the record shows the loss and a fresh start; the stranger is untouched
    assert rig.edges()[:2] == [("exit", "running", "exited"), ("start", "exited", "starting")]
    assert rig.pid() != stranger.pid
    assert stranger.alive and rig.host.signals(stranger.pid) == []


def test_recover_starting_process_that_died_backs_off(rig):
    seed(rig, S.STARTING, pid=4242, create_time=1.0)
    rig.sup.recover()
    rec = rig.record()
    assert (rec.state, rec.start_attempts) == (S.BACKOFF, 1)
    assert rig.host.signals(4242) == []


def test_recover_stopping_process_gets_the_signal_again(rig):
    # given a stop in progress when the supervisor died
    proc = rig.host.add()
    seed(rig, S.STOPPING, pid=proc.pid, create_time=proc.create_time)
    rig.set_desired(False)
    # when
    rig.sup.recover()
    rig.tick()
    # then the stop goes on to its end
    assert rig.host.signals(proc.pid) == [signal.SIGTERM]
    rig.tick()
    assert rig.state() == S.STOPPED


def test_recover_stopping_process_that_died_is_stopped(rig):
    seed(rig, S.STOPPING, pid=4242, create_time=1.0)
    rig.set_desired(False)
    rig.sup.recover()
    assert rig.state() == S.STOPPED


def test_recover_adopts_an_unrecorded_orphan_instead_of_starting_a_twin(rig):
    # given a process started just before a crash, before its start was recorded
    seed(rig, S.STOPPED)
    orphan = rig.host.add(env={SUPERVISOR_ENV: MARKER, SUPERVISED_ENV: "p"})
    # when
    rig.sup.recover()
    rig.tick()
    # then it is adopted, not duplicated
    assert (rig.state(), rig.pid()) == (S.STARTING, orphan.pid)
    assert spawns(rig) == 0


def test_recover_kills_an_orphan_when_the_record_has_a_live_process(rig):
    proc = rig.host.add()
    seed(rig, S.RUNNING, pid=proc.pid, create_time=proc.create_time)
    twin = rig.host.add(env={SUPERVISOR_ENV: MARKER, SUPERVISED_ENV: "p"})
    other = rig.host.add(env={SUPERVISOR_ENV: "another-box", SUPERVISED_ENV: "p"})
    rig.sup.recover()
    assert rig.pid() == proc.pid
    assert rig.host.signals(twin.pid) == [signal.SIGKILL]
    assert rig.host.signals(other.pid) == []


def test_recover_twice_starts_nothing_twice(rig):
    rig.fatal()
    rig.sup = rig.new_supervisor()
    rig.sup.recover()
    rig.sup.recover()  # a second recovery pass adopts, it does not start again
    assert spawns(rig) == 1 + rig.config.startretries + 1
