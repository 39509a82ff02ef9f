"""A SIGKILL drill in the scheduler's crash window (issue 12, item 4), made deterministic.

The scheduler reaches the store through a proxy of its own carrying a :class:`Tripwire`: once the
scheduler has committed the creation of a managed job's unit of work (``INSERT INTO uows`` then
``COMMIT``), the very next bytes it sends are held back, it is SIGKILLed, and its connections
are dropped. (The first creation: the later periods are started by the worker's outcome
commits, db.chain, which ``tests/faults/test_chain_crash.py`` drills.) The store then holds everything up to that commit and nothing
after it: on main, a unit of work not yet linked to its job. A new scheduler is started.

What is proven, by counting: every closed period is processed, each ran exactly once, and no
unit of work is left over (the issue saw the job end ``skipped`` when recovery canceled the
unlinked unit as an orphan and the start revived it by its key). In a design where creating the
unit of work and starting the job are one transaction, the kill lands right after that commit
(before the unit of work is published), which the new scheduler must also repair.
"""

from __future__ import annotations

import os
import signal

import pytest

from db.states import JobState
from tests.faults.counting import each_period_once, hourly_backlog, job_state
from tests.faults.drill import Verdict
from tests.faults.proxy import TcpProxy
from tests.faults.tripwire import Tripwire

pytestmark = [pytest.mark.slow, pytest.mark.needs_server]

#: Closed hourly periods to process, one at a time.
PERIODS = 4


def test_scheduler_killed_between_unit_and_link_loses_no_period(installation, runs):
    inst = installation
    # given closed hourly periods processed one at a time, and a scheduler on its own proxy
    periods = hourly_backlog(inst, runs, PERIODS)
    cluster = inst.pg.cluster
    own = TcpProxy("127.0.0.1", cluster.port, name="scheduler-pg-proxy").start()
    try:
        # (the scheduler in ``inst.daemons`` is the one started last: the first, while armed)
        wire = Tripwire(
            arm=b"INSERT INTO uows",
            then=b"COMMIT",
            count=1,
            action=lambda: os.kill(inst.daemons["scheduler"].pid, signal.SIGKILL),
        )
        own.tripwire(wire)
        result = inst.launch("db", "--init")
        assert result.returncode == 0, result.stderr
        inst.start("supervisor")
        inst.start("mx")
        inst.wait_workers("ticker", 1)
        scheduler = inst.start(
            "scheduler", env={"TACTUS_STORE_URI": cluster.uri(inst.pg.database, port=own.port)}
        )
        # when it is killed right after its first unit of work's commit
        tripped = wire.done.wait(60)
        if tripped:
            scheduler.proc.wait(15)
        own.tripwire(None)
        # and a new scheduler starts (on the common proxy)
        if tripped:
            inst.start("scheduler")

        def settled() -> bool:
            states = [job_state(inst.store, "ticker", tp) for tp in periods]
            return all(s in (JobState.PROCESSED, JobState.SKIPPED) for s in states)

        try:
            inst.wait(settled, 40, "every period to be processed (or skipped)")
        except AssertionError:
            pass
        # then every period was processed, once
        verdict = Verdict()
        verdict.equal("the scheduler was killed in the window", tripped, True)
        counts = each_period_once(verdict, inst.store, runs, "ticker", periods)
        verdict.check(f"{counts}\n{inst.report()}")
    finally:
        own.close()
