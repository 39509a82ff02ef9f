"""Flows end to end (SPEC section 10): real worker OS processes running the steps of a flow run,
with and without the scheduler, and SIGKILL of either in the middle of a flow.

Every step command appends ``<event> <step> <attempt> <uow id>`` to a file: what ran, and how
many times, is counted from it rather than read from logs.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from db import flows
from db.clock import SystemClock
from db.models import ProcessEntry, ProcessRecord, StepEntry
from db.states import JobState, ProcessKind, ProcessSource, Qualifier, RunIf, UowKind, UowState
from db.timeperiod import Timeperiod
from db.uow_factory import create_once
from mq.message import uow_delivery
from mq.nats import NatsBroker
from scheduler.config import SchedulerConfig
from scheduler.service import Scheduler
from tests import servers
from tests.conftest import (
    NATS_URI,
    REDIS_URI,
    drop_redis_queues,
    fresh_store_uri,
    nats_problem,
    redis_problem,
)
from tests.scheduler.test_end_to_end import RABBITMQ, ROOT, Installation

pytestmark = pytest.mark.slow


def step_command(log: Path, *, seconds: float = 0.0, fail_unless: Path | None = None) -> str:
    """A step's shell command: logs its start and end (with step, attempt, unit id), sleeps,
    and fails while ``fail_unless`` does not exist."""
    who = "$TACTUS_STEP $TACTUS_ATTEMPT $TACTUS_UOW_ID"
    script = f'echo "start {who}" >> {log}; sleep {seconds}; '
    if fail_unless is not None:
        # (no braces: a command's braces are placeholders)
        script += f'[ -e {fail_unless} ] || (echo "fail {who}" >> {log}; exit 1) || exit 1; '
    script += f'echo "end {who}" >> {log}'
    return script


def step(name: str, log: Path, *ups: str, **kw) -> StepEntry:
    seconds = kw.pop("seconds", 0.0)
    fail_unless = kw.pop("fail_unless", None)
    return StepEntry(
        name=name,
        command=step_command(log, seconds=seconds, fail_unless=fail_unless),
        shell=True,
        depends_on=tuple(ups),
        **kw,
    )


def insert(inst: Installation, entry: ProcessEntry) -> None:
    now = SystemClock().now()
    inst.store.insert_process(
        ProcessRecord(entry=entry, source=ProcessSource.API, created_at=now, updated_at=now)
    )


def events(log: Path) -> list[tuple[str, str, int, str]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        event, name, attempt, uow_id = line.split()
        out.append((event, name, int(attempt), uow_id))
    return out


def ends(log: Path) -> Counter:
    return Counter(name for event, name, _, _ in events(log) if event == "end")


@pytest.fixture(
    params=[
        "sqlite-store",
        "sqlite-rabbitmq",
        "postgresql-rabbitmq",
        "sqlite-redis",
        "sqlite-nats",
        "mariadb-store",
        "mongodb-store",
    ]
)
def installation(request, tmp_path, nx_server):
    store_kind, broker = request.param.split("-")
    uri = "store"
    if broker == "rabbitmq":
        if not servers.port_open("127.0.0.1", 5672):
            servers.unavailable("RabbitMQ not reachable on 127.0.0.1:5672")
        uri = RABBITMQ
    if broker == "redis":
        if redis_problem():
            servers.unavailable(redis_problem())
        uri = REDIS_URI
    if broker == "nats":
        problem = nats_problem()
        if problem:
            servers.unavailable(problem)
        uri = NATS_URI
    with contextlib.ExitStack() as stack:
        store_uri = None
        if store_kind != "sqlite":
            # a database of its own, dropped afterwards (MongoDB: the nx-27017 test server,
            # whose store has no multi-document transactions: flows are reconciled there)
            store_uri = stack.enter_context(fresh_store_uri(store_kind, tmp_path, nx_server))
        inst = Installation(tmp_path, uri, store_uri)
        yield inst
        inst.close()
        if broker == "redis":
            drop_redis_queues(inst.env["TACTUS_QUEUE_PREFIX"])
        if broker == "nats":
            with NatsBroker(NATS_URI) as nats_broker:
                nats_broker.delete_installation(inst.env["TACTUS_QUEUE_PREFIX"])


def start_flow(inst: Installation, entry: ProcessEntry):
    """A flow run created and published as a freerun fire would be (no scheduler needed)."""
    clock = SystemClock()
    run, _ = create_once(
        inst.store,
        entry,
        clock=clock,
        actor="test",
        reason="test",
        kind=UowKind.FREERUN,
        start="20261207030000",
        end="20261207030000",
        run_key="r1",
    )
    queue, body, _ = uow_delivery(run, inst.env["TACTUS_QUEUE_PREFIX"], clock.now())
    inst.broker.declare(queue)
    inst.broker.publish(queue, body)
    return run


def test_one_three_one_runs_in_order_with_the_three_in_parallel(installation):
    # given extract -> (t1, t2, t3) -> load, each transform 1.5 s, three slots of one worker
    inst = installation
    log = inst.tmp / "steps.log"
    entry = ProcessEntry(
        name="etl",
        kind=ProcessKind.FREERUN,
        trigger="every 3600",
        steps=(
            step("extract", log),
            step("t1", log, "extract", seconds=1.5),
            step("t2", log, "extract", seconds=1.5),
            step("t3", log, "extract", seconds=1.5),
            step("load", log, "t1", "t2", "t3"),
        ),
    )
    insert(inst, entry)
    inst.spawn("-m", "workers", "etl", "--concurrency", "3")
    # when a flow run is published (no scheduler runs: steps need no pass between them)
    run = start_flow(inst, entry)
    inst.wait(
        lambda: inst.store.get_uow(run.id).state is UowState.PROCESSED,
        deadline=60,
        what="the flow run to be processed",
    )
    # then every step ran once, in dependency order, the three transforms overlapping
    assert ends(log) == {"extract": 1, "t1": 1, "t2": 1, "t3": 1, "load": 1}
    steps = flows.steps_of(inst.store, run.id)
    assert {s.state for s in steps.values()} == {UowState.PROCESSED}
    transforms = [steps[n] for n in ("t1", "t2", "t3")]
    assert all(t.started_at >= steps["extract"].finished_at for t in transforms)
    assert steps["load"].started_at >= max(t.finished_at for t in transforms)
    # parallel: the latest start is before the earliest end
    assert max(t.started_at for t in transforms) < min(t.finished_at for t in transforms)


def test_failing_step_retried_then_dependents_upstream_failed_then_retry_failed(tmp_path):
    # given a managed hourly flow whose t2 fails until a flag file exists (retries 1)
    inst = Installation(tmp_path, "store")
    log = tmp_path / "steps.log"
    fixed = tmp_path / "t2-fixed"
    clock = SystemClock()
    period = Timeperiod.containing("hourly", clock.now()).previous()
    entry = ProcessEntry(
        name="etl",
        kind=ProcessKind.MANAGED,
        time_qualifier=Qualifier.HOURLY,
        lag=timedelta(0),
        start_timeperiod=str(period),
        retries=0,
        steps=(
            step("extract", log),
            step("t1", log, "extract"),
            step("t2", log, "extract", fail_unless=fixed, retries=1, retry_delay=timedelta(0)),
            step("t3", log, "extract"),
            step("load", log, "t1", "t2", "t3"),
            step("cleanup", log, "load", run_if=RunIf.ALL_DONE),
        ),
    )
    insert(inst, entry)
    try:
        inst.spawn("-m", "workers", "etl", "--concurrency", "2")
        scheduler = Scheduler(
            inst.store,
            inst.broker,
            clock,
            SchedulerConfig(
                queue_prefix=inst.env["TACTUS_QUEUE_PREFIX"],
                recovery_interval=timedelta(milliseconds=300),
            ),
        )
        scheduler.start()
        try:
            # when t2 fails twice
            inst.wait(
                lambda: inst.state("etl", str(period)) is JobState.SKIPPED,
                deadline=60,
                what="the job to be skipped",
            )
            job = inst.store.get_job("etl", str(period))
            flow_run = inst.store.get_uow(job.uow_id)
            steps = flows.steps_of(inst.store, flow_run.id)
            # then t2 was retried once, load is upstream_failed, cleanup (all_done) still ran,
            # the flow run is canceled and the job skipped
            assert flow_run.state is UowState.CANCELED
            assert [(e, n, a) for e, n, a, _ in events(log) if n == "t2" and e == "fail"] == [
                ("fail", "t2", 1),
                ("fail", "t2", 2),
            ]
            assert steps["t2"].state is UowState.CANCELED
            assert steps["load"].state is UowState.UPSTREAM_FAILED
            assert steps["cleanup"].state is UowState.PROCESSED
            assert ends(log) == {"extract": 1, "t1": 1, "t3": 1, "cleanup": 1}
            # when t2 is fixed and the operator runs retry-failed from the command line
            fixed.touch()
            cli = subprocess.run(
                [sys.executable, str(ROOT / "launch.py"), "retry-failed", flow_run.id],
                env=inst.env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert cli.returncode == 0, cli.stderr
            assert "load" in cli.stdout and "t2" in cli.stdout
            # then only the failed branch runs again and the job ends processed
            inst.wait(
                lambda: inst.state("etl", str(period)) is JobState.PROCESSED,
                deadline=60,
                what="the job to be processed after retry-failed",
            )
        finally:
            scheduler.stop()
        assert inst.store.get_uow(flow_run.id).state is UowState.PROCESSED
        assert ends(log) == {"extract": 1, "t1": 1, "t2": 1, "t3": 1, "load": 1, "cleanup": 1}
        t2 = flows.steps_of(inst.store, flow_run.id)["t2"]
        assert t2.attempt == 3 and t2.state is UowState.PROCESSED
    finally:
        inst.close()


def test_sigkill_of_scheduler_and_worker_mid_flow_runs_each_step_once_per_attempt(tmp_path):
    # given a managed flow of a 12-step chain with a fan-out, two workers, a scheduler process
    inst = Installation(tmp_path, "store")
    inst.env["TACTUS_HEARTBEAT_INTERVAL"] = "0.3"
    inst.env["TACTUS_HEARTBEAT_MISSES"] = "3"
    log = tmp_path / "steps.log"
    clock = SystemClock()
    period = Timeperiod.containing("hourly", clock.now()).previous()
    names = [f"s{i:02d}" for i in range(12)]
    chain = [step(names[0], log, seconds=0.4)]
    for i in range(1, 12):
        ups = (names[i - 1],) if i % 4 else (names[i - 1], names[max(0, i - 3)])
        chain.append(step(names[i], log, *dict.fromkeys(ups), seconds=0.4, retries=3))
    entry = ProcessEntry(
        name="chain",
        kind=ProcessKind.MANAGED,
        time_qualifier=Qualifier.HOURLY,
        lag=timedelta(0),
        start_timeperiod=str(period),
        retry_delay=timedelta(0),
        steps=tuple(chain),
    )
    insert(inst, entry)
    try:
        workers = {p.pid: p for p in (inst.spawn("-m", "workers", "chain") for _ in range(2))}
        scheduler = inst.spawn("-m", "scheduler")
        # when the scheduler is SIGKILLed after 3 steps ended, and restarted
        inst.wait(lambda: sum(ends(log).values()) >= 3, deadline=60, what="3 steps ended")
        scheduler.send_signal(signal.SIGKILL)
        scheduler.wait(10)
        inst.spawn("-m", "scheduler")
        # and the worker running a step is SIGKILLed in the middle of it after 6 steps ended
        inst.wait(lambda: sum(ends(log).values()) >= 6, deadline=60, what="6 steps ended")
        busy = inst.wait(
            lambda: _running_on(inst, set(workers)),
            deadline=30,
            what="a worker to be running a step",
        )
        workers[busy].send_signal(signal.SIGKILL)
        workers[busy].wait(10)
        inst.spawn("-m", "workers", "chain")
        # then the job is processed
        inst.wait(
            lambda: inst.state("chain", str(period)) is JobState.PROCESSED,
            deadline=120,
            what="the job to be processed",
        )
        # and every step completed, no (step, attempt) started or ended twice, and only the
        # step whose worker was killed ran a second attempt (the killed attempt's command may
        # still have finished on its own, orphaned, before the next worker reaped it)
        runs = events(log)
        assert set(ends(log)) == set(names)
        attempts = Counter(n for e, n, _, _ in runs if e == "start")
        assert sum(attempts.values()) - len(names) <= 1, attempts
        for event in ("start", "end"):
            per_attempt = Counter((n, a) for e, n, a, _ in runs if e == event)
            assert all(count == 1 for count in per_attempt.values()), (event, per_attempt)
        steps = flows.steps_of(inst.store, inst.store.get_job("chain", str(period)).uow_id)
        assert {s.state for s in steps.values()} == {UowState.PROCESSED}
    finally:
        inst.close()


def _running_on(inst: Installation, pids: set[int]) -> int | None:
    """The pid of one of ``pids`` that is running a step now, if any."""
    from db.models import UowQuery

    running = inst.store.find_uows(
        UowQuery(process="chain", states=frozenset({UowState.IN_PROGRESS})), limit=50
    ).items
    return next((u.pid for u in running if u.pid in pids and u.step is not None), None)
