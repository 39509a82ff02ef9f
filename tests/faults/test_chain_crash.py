"""A SIGKILL drill in the worker's chain window (db.chain), made deterministic.

A worker catching up closed hours with ``max_active`` 1 starts the next hour in its outcome's
commit (the job finished, the next job started, its unit of work inserted) and publishes that
unit of work to RabbitMQ after the commit. The worker reaches the store through a proxy of its
own carrying a :class:`Tripwire`: once it has committed such an insert (``INSERT INTO uows``
then ``COMMIT``), the very next bytes it sends to the store are held back and it is SIGKILLed,
before it publishes. The supervisor starts a new worker.

What is proven, by counting: every closed hour is processed, each ran exactly once, with one
unit of work each, and the unit of work the killed worker never published is run (the
scheduler re-posts the requested units of work of a lost worker's process).
"""

from __future__ import annotations

import os
import signal

import pytest

from db.states import JobState
from tests.faults.counting import each_period_once, hourly_backlog, job_state, units_of
from tests.faults.drill import Verdict
from tests.faults.proxy import TcpProxy
from tests.faults.tripwire import Tripwire

pytestmark = [pytest.mark.slow, pytest.mark.needs_server]

#: Closed hourly periods to process, one at a time.
PERIODS = 4


def test_worker_killed_after_a_chained_start_loses_no_period(installation, runs):
    inst = installation
    # given closed hourly periods processed one at a time, whose worker has a proxy of its own
    periods = hourly_backlog(inst, runs, PERIODS)
    cluster = inst.pg.cluster
    own = TcpProxy("127.0.0.1", cluster.port, name="worker-pg-proxy").start()
    try:
        result = inst.launch("db", "--init")
        assert result.returncode == 0, result.stderr
        inst.start(
            "supervisor", env={"TACTUS_STORE_URI": cluster.uri(inst.pg.database, port=own.port)}
        )
        inst.start("mx")
        (pid,) = inst.wait_workers("ticker", 1).values()
        wire = Tripwire(
            arm=b"INSERT INTO uows",
            then=b"COMMIT",
            count=1,
            action=lambda: os.kill(pid, signal.SIGKILL),
        )
        own.tripwire(wire)
        # when the scheduler starts the first hour, and the worker is killed right after the
        # commit that finishes it and starts the second
        inst.start("scheduler")
        tripped = wire.done.wait(60)
        own.tripwire(None)

        def settled() -> bool:
            states = [job_state(inst.store, "ticker", tp) for tp in periods]
            return all(s in (JobState.PROCESSED, JobState.SKIPPED) for s in states)

        try:
            inst.wait(settled, 60, "every period to be processed (or skipped)")
        except AssertionError:
            pass
        # then every period was processed, once, the second by a unit of work the killed
        # worker started
        second = [u for u in units_of(inst.store, ["ticker"]) if u.timeperiod == periods[1]]
        verdict = Verdict()
        verdict.equal("the worker was killed in the window", tripped, True)
        verdict.equal(
            "the second hour's unit of work was started by the killed worker",
            [inst.store.history("uow", u.id)[0].actor.startswith("worker") for u in second],
            [True],
        )
        counts = each_period_once(verdict, inst.store, runs, "ticker", periods)
        verdict.check(f"{counts}\n{inst.report()}")
    finally:
        own.close()
