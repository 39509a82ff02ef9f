"""The supervisor as operators run it: a daemon started by ``launch.py``, killed with SIGKILL,
started again, and steered with ``launch.py super``."""

from __future__ import annotations

import os
import signal
from datetime import datetime

import pytest

from db.clock import SystemClock
from db.states import SupervisedState as S
from tests.polling import wait_until
from tests.supervisor.installation import Installation, gone

pytestmark = pytest.mark.slow

TWO_DAEMONS = """
processes:
  - name: alpha
    kind: daemon
    command: [sleep, "2001"]
  - name: beta
    kind: daemon
    command: [sh, -c, "exec sleep 2002"]
"""


@pytest.fixture
def inst(tmp_path):
    installation = Installation(tmp_path)
    yield installation
    installation.launch("--stop", "supervisor")
    installation.cleanup()


def test_sigkilled_supervisor_restarts_and_readopts_without_duplicates(inst):
    # given a supervisor running two processes
    inst.register(TWO_DAEMONS)
    assert inst.launch("--start", "supervisor").returncode == 0
    alpha, beta = inst.wait_state("alpha", S.RUNNING), inst.wait_state("beta", S.RUNNING)
    first = inst.pid("supervisor")
    # when it is killed with SIGKILL, and started again
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: gone(first), 5, what="the supervisor's death")
    restarted_at = SystemClock().now()
    result = inst.launch("--start", "supervisor")
    assert result.returncode == 0, result.stderr
    assert inst.pid("supervisor") != first

    # then, once the new supervisor has made a full pass (fresh facts of both) ...
    def refreshed(name: str) -> bool:
        stats = inst.record(name).stats
        return "at" in stats and datetime.fromisoformat(stats["at"]) > restarted_at

    wait_until(lambda: refreshed("alpha") and refreshed("beta"), 10, what="a full pass")
    # ... the same processes run, each once
    assert (inst.record("alpha").pid, inst.record("beta").pid) == (alpha.pid, beta.pid)
    assert len(inst.running("sleep", "2001")) == 1
    assert len(inst.running("sleep", "2002")) == 1
    # and the new supervisor watches them: a killed one comes back, once
    os.kill(alpha.pid, signal.SIGKILL)
    back = wait_until(
        lambda: (r := inst.record("alpha")).state == S.RUNNING and r.pid != alpha.pid and r, 10
    )
    assert [p.pid for p in inst.running("sleep", "2001")] == [back.pid]
    # finally, a graceful stop of the supervisor stops what it runs
    assert inst.launch("--stop", "supervisor").returncode == 0
    assert inst.running("sleep", "2001") == [] and inst.running("sleep", "2002") == []
    assert {inst.record("alpha").state, inst.record("beta").state} == {S.STOPPED}


def test_super_cli_changes_take_effect(inst):
    # given
    inst.register(TWO_DAEMONS)
    assert inst.launch("--start", "supervisor").returncode == 0
    alpha = inst.wait_state("alpha", S.RUNNING)
    # when the operator stops one process on this box
    result = inst.launch("super", "--stop", "alpha")
    # then
    assert result.returncode == 0, result.stderr
    assert "alpha" in result.stdout and "stopped" in result.stdout
    inst.wait_state("alpha", S.STOPPED)
    assert gone(alpha.pid)
    assert inst.record("beta").state == S.RUNNING
    query = inst.launch("super", "--query")
    assert query.returncode == 0
    line = next(row for row in query.stdout.splitlines() if row.startswith("alpha"))
    assert line.split()[:3] == ["alpha", "stopped", "stopped"]
    # when started again
    assert inst.launch("super", "--start", "alpha").returncode == 0
    again = inst.wait_state("alpha", S.RUNNING)
    assert again.pid != alpha.pid and again.desired


def test_super_cli_bad_input_and_unknown_process(inst):
    inst.register(TWO_DAEMONS)
    unknown = inst.launch("super", "--stop", "nope")
    assert unknown.returncode == 1
    assert "box1/nope not found" in unknown.stderr
    bad_box = inst.launch("super", "--query", "--boxid", "bad box!")
    assert bad_box.returncode == 2 and "'box_id'" in bad_box.stderr
    other = inst.launch("super", "--query", "--boxid", "box2")
    assert other.returncode == 0 and "(none)" in other.stdout
