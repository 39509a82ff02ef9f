"""A SIGKILL drill in the scheduler's crash window (issue 12, item 4), made deterministic.

The scheduler reaches the store through a proxy of its own carrying a :class:`Tripwire`: once the
scheduler has committed the creation of a managed job's unit of work (``INSERT INTO uows`` then
``COMMIT``) for the second time, the very next bytes it sends are held back, it is SIGKILLed,
and its connections are dropped. The store then holds everything up to that commit and nothing
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
from collections import Counter

import pytest

from db.clock import SystemClock
from db.states import JobState
from db.timeperiod import Timeperiod
from tests.faults.counting import command, tally, units_of
from tests.faults.drill import Verdict
from tests.faults.proxy import TcpProxy
from tests.faults.tripwire import Tripwire

pytestmark = [pytest.mark.slow, pytest.mark.needs_server]

#: Closed hourly periods to process, one at a time.
PERIODS = 4


def test_scheduler_killed_between_unit_and_link_loses_no_period(installation, runs):
    inst = installation
    # given closed hourly periods processed one at a time, and a scheduler on its own proxy
    first = Timeperiod.containing("hourly", SystemClock().now()).previous(PERIODS)
    periods = [str(first.next(i)) for i in range(PERIODS)]
    inst.register_processes(
        {
            "name": "ticker",
            "kind": "managed",
            "time_qualifier": "hourly",
            "start_timeperiod": str(first),
            "lag": 0,
            "max_active": 1,
            "retry_delay": 1,
            "command": command(runs.path, 0.2),
        }
    )
    cluster = inst.pg.cluster
    own = TcpProxy("127.0.0.1", cluster.port, name="scheduler-pg-proxy").start()
    try:
        # (the scheduler in ``inst.daemons`` is the one started last: the first, while armed)
        wire = Tripwire(
            arm=b"INSERT INTO uows",
            then=b"COMMIT",
            count=2,
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
        # when it is killed right after its second unit of work's commit
        tripped = wire.done.wait(60)
        if tripped:
            scheduler.proc.wait(15)
        own.tripwire(None)
        # and a new scheduler starts (on the common proxy)
        if tripped:
            inst.start("scheduler")

        def settled() -> bool:
            states = [_state(inst, tp) for tp in periods]
            return all(s in (JobState.PROCESSED, JobState.SKIPPED) for s in states)

        try:
            inst.wait(settled, 40, "every period to be processed (or skipped)")
        except AssertionError:
            pass
        # then every period was processed, once
        units = units_of(inst.store, ["ticker"])
        period_of = {u.id: u.timeperiod for u in units}
        runs_per_period = Counter(period_of.get(u) for u, _ in runs.starts())
        counts = tally(inst.store, runs, ["ticker"])
        verdict = Verdict()
        verdict.equal("the scheduler was killed in the window", tripped, True)
        verdict.equal(
            "job states",
            [str(_state(inst, tp)) for tp in periods],
            ["processed"] * PERIODS,
        )
        verdict.equal("runs per period", [runs_per_period[tp] for tp in periods], [1] * PERIODS)
        verdict.equal(
            "units of work per period",
            [sum(u.timeperiod == tp for u in units) for tp in periods],
            [1] * PERIODS,
        )
        verdict.equal("units of work lost", len(counts.lost), 0)
        verdict.equal("runs that should not have happened (twice)", len(counts.twice), 0)
        verdict.check(f"{counts}\n{inst.report()}")
    finally:
        own.close()


def _state(inst, timeperiod: str) -> JobState | None:
    try:
        return inst.store.get_job("ticker", timeperiod).state
    except Exception:  # noqa: BLE001 - not materialized yet
        return None
