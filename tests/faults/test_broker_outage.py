"""The broker goes away (issue 12, item 2): RabbitMQ behind the proxy is cut off (every
connection dropped, new ones refused) while real daemons run freerun work, then comes back.

What is proven, by counting (``counting.py``):

- consumers do not give up: no worker exits, whatever the outage's length;
- units of work fired while the broker was away run once it is back, within 20 s (not after the
  5-minute unclaimed re-post), and nothing is lost or run twice;
- each daemon writes at most a handful of log lines a minute while the broker is away;
- ``POST /api/v1/processes/<name>/trigger`` while the broker is away answers 202 with the unit
  of work's id (SPEC 15), and that unit of work runs exactly once when the broker is back; a
  client that met an error instead and retried (as docs/api.md allows) must not get two runs.

The installation: PostgreSQL (private cluster, through its proxy, left alone here) and RabbitMQ
(through the proxy that fails), heartbeats every second, outage back-off capped at 2 s.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from db.states import TERMINAL_UOW_STATES, UowState
from tests.faults.counting import command, processed_after, settled, tally, units_of
from tests.faults.drill import Verdict, Window, hold
from tests.faults.installation import alive_pids, file_lines_between

pytestmark = [pytest.mark.slow, pytest.mark.needs_server]

#: The issue's outage: 25 s outlasts the 18 s after which consumers used to give up, and every
#: bounded retry in a broker call, so only waiting out the outage passes.
BROKER_OUTAGE = 25.0
#: A trigger's outage: long enough that the request surely meets it (it is sent 1 s in) and a
#: retrying broker call inside the request gives up before the broker returns.
TRIGGER_OUTAGE = 10.0
#: Units of work stored while the broker was away run within this long after its return
#: (the unclaimed re-post would take 5 minutes).
RUN_WITHIN = 20.0
#: Each command runs this long: a few are mid-run when the outage starts.
RUN_SECONDS = 1.0


def seconds_after(instant: datetime | None, origin: datetime) -> float | None:
    return None if instant is None else round((instant - origin).total_seconds(), 1)


def test_broker_outage_consumers_wait_and_work_fired_meanwhile_runs(installation, runs):
    inst = installation
    # given freerun work flowing on three workers
    inst.register_processes(
        {
            "name": "flow",
            "kind": "freerun",
            "trigger": "every 1",
            "max_active": 3,
            "workers": 3,
            "retry_delay": 1,
            "command": command(runs.path, RUN_SECONDS),
        }
    )
    inst.start_all()
    workers = inst.wait_workers("flow", 3)
    inst.wait(
        lambda: sum(u.state is UowState.PROCESSED for u in units_of(inst.store, ["flow"])) >= 3,
        60,
        "three units of work processed before the outage",
    )
    pids = {name: d.pid for name, d in inst.daemons.items()}
    # when the broker is away for 25 s
    outage = Window()
    outage.open()
    inst.rabbit.proxy.down()
    hold(BROKER_OUTAGE)
    inst.rabbit.proxy.up()
    outage.close()
    # then what was fired meanwhile (its instant in the outage: a fire is prepared and
    # stored a second before its instant, so its unit of work may predate the outage) runs
    # soon after the broker's return
    fired_meanwhile = [
        u.id
        for u in units_of(inst.store, ["flow"])
        if u.scheduled_at is not None and outage.start_utc <= u.scheduled_at < outage.end_utc
    ]

    def started_meanwhile_fired() -> bool:
        units = [inst.store.get_uow(uow_id) for uow_id in fired_meanwhile]
        return all(u.started_at is not None or u.state in TERMINAL_UOW_STATES for u in units)

    try:
        inst.wait(started_meanwhile_fired, RUN_WITHIN + 5, "the units fired meanwhile to start")
    except AssertionError:
        pass
    waits = [
        seconds_after(inst.store.get_uow(uow_id).started_at, outage.end_utc)
        for uow_id in fired_meanwhile
    ]
    # and work flows on: three units of work created after the outage are processed
    inst.observe(lambda: processed_after(inst.store, ["flow"], outage.end_utc) >= 3, 20)
    # every unit of work made up to now ends (retries included) before it is counted
    cutoff = datetime.now(UTC)
    inst.observe(lambda: settled(inst.store, ["flow"], cutoff), 15)
    counts = tally(inst.store, runs, ["flow"], created_before=cutoff)
    verdict = Verdict()
    verdict.at_least("units of work fired while the broker was away", len(fired_meanwhile), 1)
    verdict.equal("of those, not started yet", [w for w in waits if w is None], [])
    verdict.at_most(
        "seconds from the broker's return to their start (the latest)",
        max((w for w in waits if w is not None), default=None),
        RUN_WITHIN,
    )
    verdict.equal("units of work lost", len(counts.lost), 0)
    verdict.equal("runs that should not have happened (twice)", len(counts.twice), 0)
    verdict.equal("units of work that spent an attempt on the outage", len(counts.retried), 0)
    verdict.equal("workers gone", sorted(set(workers) - set(alive_pids(workers))), [])
    verdict.equal("worker exits recorded", inst.worker_exits("flow", 3, outage.start_utc), [])
    verdict.equal("daemons dead", inst.dead_daemons(), [])
    verdict.equal(
        "daemons with another pid", [n for n, d in inst.daemons.items() if d.pid != pids[n]], []
    )
    limit = outage.handful()
    for name in ("scheduler", "supervisor", "mx"):
        verdict.at_most(
            f"{name} log lines during the {BROKER_OUTAGE:g} s outage",
            len(inst.lines(name, outage.start, outage.end)),
            limit,
        )
    for instance in workers:
        lines = file_lines_between(
            inst.var / "log" / f"{instance}.log", outage.start_local, outage.end_local
        )
        verdict.at_most(f"worker {instance} log lines during the outage", len(lines), limit)
    verdict.check(f"{counts}\nwaits {waits}\n{inst.report()}")


def uow_id_of(body: object) -> str | None:
    """The unit of work's id in a trigger's answer (``{"process", "uow": {"id", ...}}``)."""
    if isinstance(body, dict) and isinstance(body.get("uow"), dict):
        return body["uow"].get("id")
    return None


def test_broker_outage_trigger_is_accepted_and_runs_once(installation, runs):
    inst = installation
    # given a freerun that runs only when triggered, and a trigger that works
    inst.register_processes(
        {
            "name": "manual",
            "kind": "freerun",
            "trigger": "every 24h",
            "max_active": 5,
            "retry_delay": 1,
            "command": command(runs.path),
        }
    )
    inst.start_all()
    workers = inst.wait_workers("manual", 1)
    status, body = inst.api("POST", "/processes/manual/trigger")
    assert status == 201, body
    first = uow_id_of(body)
    inst.wait(
        lambda: inst.store.get_uow(first).state is UowState.PROCESSED,
        30,
        "the trigger before the outage to run",
    )
    # when it is triggered while the broker is away
    outage = Window()
    outage.open()
    inst.rabbit.proxy.down()
    hold(1.0)
    status, body = inst.api("POST", "/processes/manual/trigger")
    answered_during = datetime.now(UTC)
    hold(max(0.0, TRIGGER_OUTAGE - (datetime.now(UTC) - outage.start_utc).total_seconds()))
    inst.rabbit.proxy.up()
    outage.close()
    accepted = uow_id_of(body)
    retried_status = None
    if not 200 <= status < 300:
        # a client that met an error tries again once the broker is back (docs/api.md: an
        # action that answered an error changed nothing, so retrying is safe)
        retried_status, retried_body = inst.api("POST", "/processes/manual/trigger")
        accepted = accepted or uow_id_of(retried_body)
    # then the unit of work runs once the broker is back, once
    others = lambda: [u for u in units_of(inst.store, ["manual"]) if u.id != first]  # noqa: E731
    try:
        inst.wait(
            lambda: others() and all(u.state in TERMINAL_UOW_STATES for u in others()),
            RUN_WITHIN + 5,
            "the unit of work triggered during the outage to end",
        )
    except AssertionError:
        pass
    units = others()
    accepted_uow = next((u for u in units if u.id == accepted), None)
    counts = tally(inst.store, runs, ["manual"])
    verdict = Verdict()
    verdict.equal("status of the trigger while the broker was away", status, 202)
    verdict.equal("it answered with a unit of work's id", uow_id_of(body) is not None, True)
    verdict.equal("it answered while the broker was away", answered_during < outage.end_utc, True)
    verdict.equal("status of a client's retry (None: no retry needed)", retried_status, None)
    verdict.equal("units of work made by the trigger(s) during the outage", len(units), 1)
    verdict.equal(
        "state of the accepted unit of work",
        str(accepted_uow.state) if accepted_uow else None,
        "processed",
    )
    verdict.at_most(
        "seconds from the broker's return to its start",
        seconds_after(accepted_uow.started_at if accepted_uow else None, outage.end_utc),
        RUN_WITHIN,
    )
    verdict.equal(
        "runs of the units made during the outage",
        sum(runs.started(u.id) for u in units),
        1,
    )
    verdict.equal("units of work lost", len(counts.lost), 0)
    verdict.equal("runs that should not have happened (twice)", len(counts.twice), 0)
    verdict.equal("workers gone", sorted(set(workers) - set(alive_pids(workers))), [])
    verdict.equal("worker exits recorded", inst.worker_exits("manual", 1, outage.start_utc), [])
    verdict.equal("daemons dead", inst.dead_daemons(), [])
    verdict.check(f"{counts}\nanswer {body}\n{inst.report()}")
