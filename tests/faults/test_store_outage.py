"""The store goes away (issue 12, item 1): PostgreSQL behind the proxy is cut off (every
connection dropped, new ones refused) while real daemons run freerun work on it, then comes back.

What is proven, by counting (``counting.py``) rather than by reading logs:

- no unit of work is lost and none runs twice; none spends an attempt on the outage (no worker
  is declared lost because the store was away);
- no daemon dies: the scheduler, the supervisor and mx keep their processes, no worker exits;
- each daemon writes at most a handful of log lines a minute while the store is away;
- ``/api/v1/health`` says the scheduler is alive within 10 s of the store's return, and mx
  answers 503 ``store_unavailable`` at once while the store is away;
- a worker whose command finished while the store was away stores that outcome once the store is
  back: the command ran once (SPEC 15: the outcome is kept in a journal, never run again); this
  drill runs twice, with the proxy cutting the store off and with the private cluster itself
  stopped as in a crash (``pg_ctl stop -m immediate``) and started again.

The installation: PostgreSQL (private cluster, through its proxy) and RabbitMQ (through its own
proxy, left alone here), heartbeats every second and lost after three missed, outage back-off
capped at 2 s so that the daemons notice the return within seconds.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from db.states import TERMINAL_UOW_STATES, UowState
from tests.faults.counting import command, processed_after, settled, tally, units_of
from tests.faults.drill import Verdict, Window, hold
from tests.faults.installation import alive_pids, file_lines_between

pytestmark = [pytest.mark.slow, pytest.mark.needs_server]

#: The issue's outage: 30 s is ten heartbeat windows (3 s each), so every worker is silent far
#: longer than liveness allows, and well past a daemon's first back-off steps.
STORE_OUTAGE = 30.0
#: Long enough (over three heartbeat windows of 3 s) that every heartbeat looks stale when the
#: store returns, short enough to keep the test under a minute.
SHORT_STORE_OUTAGE = 10.0
#: Each command runs this long, so that with a fire a second some are always mid-run.
RUN_SECONDS = 2.5
#: The issue's bound on the health route after the store's return.
HEALTH_WITHIN = 10.0


def flow(runs_path) -> dict:
    """A freerun firing every second, three at a time on three workers; a failed attempt is
    retried after 1 s (so that a fault's retries happen, and are counted, within the test)."""
    return {
        "name": "flow",
        "kind": "freerun",
        "trigger": "every 1",
        "max_active": 3,
        "workers": 3,
        "retry_delay": 1,
        "command": command(runs_path, RUN_SECONDS),
    }


def test_store_outage_loses_nothing_runs_nothing_twice_kills_no_daemon(installation, runs):
    inst = installation
    # given freerun work flowing on three workers, some of it mid-run
    inst.register_processes(flow(runs.path))
    inst.start_all()
    workers = inst.wait_workers("flow", 3)
    inst.wait(
        lambda: sum(u.state is UowState.PROCESSED for u in units_of(inst.store, ["flow"])) >= 3,
        60,
        "three units of work processed before the outage",
    )
    inst.wait(
        lambda: any(runs.started(u.id) > runs.ended(u.id) for u in units_of(inst.store, ["flow"])),
        15,
        "a command mid-run",
    )
    pids = {name: d.pid for name, d in inst.daemons.items()}
    # when the store is away for 30 s
    outage = Window()
    outage.open()
    inst.pg.proxy.down()
    hold(5.0)
    # (mx answers at once meanwhile, with 503 store_unavailable: SPEC 15)
    asked = time.monotonic()
    api_status, api_body = inst.api("GET", "/uows?limit=1", timeout=30)
    api_seconds = round(time.monotonic() - asked, 1)
    hold(STORE_OUTAGE - (time.monotonic() - outage.start))
    inst.pg.proxy.up()
    outage.close()
    # then the scheduler is seen alive again soon after
    health_after = None
    try:
        # (waits twice the bound, to tell "late" from "never" in the verdict)
        inst.wait(inst.scheduler_alive, 2 * HEALTH_WITHIN, "health to say the scheduler is alive")
        health_after = round((datetime.now(UTC) - outage.end_utc).total_seconds(), 1)
    except AssertionError:
        pass
    # and work flows again: three units of work created after the outage are processed
    inst.observe(lambda: processed_after(inst.store, ["flow"], outage.end_utc) >= 3, 30)
    after = [u for u in units_of(inst.store, ["flow"]) if u.created_at > outage.end_utc]
    # every unit of work made up to now ends (retries included) before it is counted
    cutoff = datetime.now(UTC)
    inst.observe(lambda: settled(inst.store, ["flow"], cutoff), 20)
    counts = tally(inst.store, runs, ["flow"], created_before=cutoff)
    verdict = Verdict()
    verdict.at_least("units of work counted", counts.units, 6)
    verdict.equal("units of work lost", len(counts.lost), 0)
    verdict.equal("runs that should not have happened (twice)", len(counts.twice), 0)
    verdict.equal("units of work that spent an attempt on the outage", len(counts.retried), 0)
    verdict.equal("failures as 'worker lost'", len(counts.lost_worker_failures), 0)
    verdict.at_least(
        "units of work processed after the outage",
        sum(u.state is UowState.PROCESSED for u in after),
        3,
    )
    verdict.equal("daemons dead", inst.dead_daemons(), [])
    verdict.equal(
        "daemons with another pid", [n for n, d in inst.daemons.items() if d.pid != pids[n]], []
    )
    verdict.equal("workers gone", sorted(set(workers) - set(alive_pids(workers))), [])
    verdict.equal("worker exits recorded", inst.worker_exits("flow", 3, outage.start_utc), [])
    verdict.equal(
        "mx during the outage: status and code",
        (
            api_status,
            (api_body.get("error") or {}).get("code") if isinstance(api_body, dict) else api_body,
        ),
        (503, "store_unavailable"),
    )
    verdict.at_most("mx during the outage: seconds to answer", api_seconds, 5.0)
    verdict.at_most("health: seconds until the scheduler is alive", health_after, HEALTH_WITHIN)
    limit = outage.handful()
    for name in ("scheduler", "supervisor", "mx"):
        verdict.at_most(
            f"{name} log lines during the {STORE_OUTAGE:g} s outage",
            len(inst.lines(name, outage.start, outage.end)),
            limit,
        )
    for instance in workers:
        lines = file_lines_between(
            inst.var / "log" / f"{instance}.log", outage.start_local, outage.end_local
        )
        verdict.at_most(f"worker {instance} log lines during the outage", len(lines), limit)
    verdict.check(f"{counts}\n{inst.report()}")


def store_away(inst, kind: str) -> None:
    """Take the store away: ``proxy`` drops and refuses every connection (the network or the
    server's machine is gone); ``crash`` stops the private cluster itself as in a crash
    (``pg_ctl stop -m immediate``)."""
    if kind == "proxy":
        inst.pg.proxy.down()
    else:
        inst.pg.cluster.stop("immediate")


def store_back(inst, kind: str) -> None:
    if kind == "proxy":
        inst.pg.proxy.up()
    else:
        inst.pg.cluster.start()
        inst.reopen_store()


@pytest.mark.parametrize("kind", ["proxy", "crash"])
def test_store_outage_busy_worker_stores_its_outcome_afterwards(installation, runs, kind):
    inst = installation
    # given one long command running on one worker
    inst.register_processes(
        {
            "name": "busy",
            "kind": "freerun",
            "trigger": "every 24h",
            "max_active": 1,
            "retry_delay": 1,
            "command": command(runs.path, 4.0),
        }
    )
    inst.start_all()
    workers = inst.wait_workers("busy", 1)
    status, body = inst.api("POST", "/processes/busy/trigger")
    assert status == 201, body
    uow_id = body["uow"]["id"]
    inst.wait(lambda: runs.started(uow_id) == 1, 30, "the command to start")
    # when the store goes away while it runs, the command finishes during the outage, and the
    # store comes back 10 s later
    outage = Window()
    outage.open()
    store_away(inst, kind)
    finished_during = True
    try:
        inst.wait(lambda: runs.ended(uow_id) == 1, 15, "the command to end during the outage")
    except AssertionError:
        finished_during = False
    hold(SHORT_STORE_OUTAGE)
    store_back(inst, kind)
    outage.close()
    # then the unit of work is processed with its one run, and the worker stayed up
    state = None
    try:
        state = inst.wait(
            lambda: (s := inst.store.get_uow(uow_id).state) in TERMINAL_UOW_STATES and s,
            45,
            "the unit of work to end",
        )
    except AssertionError:
        pass
    # let a wrong retry, if any, show itself before counting
    try:
        inst.wait(lambda: runs.started(uow_id) > 1, 5, "a second run (there must be none)")
    except AssertionError:
        pass
    uow = inst.store.get_uow(uow_id)
    verdict = Verdict()
    verdict.equal("the command ended during the outage", finished_during, True)
    verdict.equal("state of the unit of work", str(state or uow.state), "processed")
    verdict.equal("its attempt", uow.attempt, 1)
    verdict.equal(
        "runs of its command (attempt, in order)", [a for u, a in runs.starts() if u == uow_id], [1]
    )
    verdict.equal("workers gone", sorted(set(workers) - set(alive_pids(workers))), [])
    verdict.equal("worker exits recorded", inst.worker_exits("busy", 1, outage.start_utc), [])
    verdict.equal("daemons dead", inst.dead_daemons(), [])
    verdict.check(f"{uow}\n{inst.report()}")
