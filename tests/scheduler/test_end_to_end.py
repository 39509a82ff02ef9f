"""The scheduler with real worker OS processes, on the embedded store and queue (and RabbitMQ).

The scheduler runs in-process with an injected clock where the calendar matters; the crash test
runs it as its own OS process on the real clock and kills it with SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from db import open_store
from db.clock import FakeClock, SystemClock
from db.models import JobQuery, ProcessRecord, UowQuery
from db.registration import entry_from_mapping
from db.states import JobState, ProcessSource
from db.timeperiod import Timeperiod
from mq import open_broker
from scheduler.config import SchedulerConfig
from scheduler.service import Scheduler
from tests import servers
from tests.polling import wait_until

ROOT = Path(__file__).resolve().parents[2]
RABBITMQ = os.environ.get("TACTUS_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/%2F")

pytestmark = pytest.mark.slow


class Installation:
    """A store, a broker and OS processes configured through TACTUS_* variables."""

    def __init__(self, tmp_path: Path, broker_uri: str, store_uri: str | None = None) -> None:
        self.tmp = tmp_path
        self.log = tmp_path / "runs.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TACTUS_")},
            "PYTHONPATH": str(ROOT),
            "TACTUS_STORE_URI": store_uri or f"sqlite:///{tmp_path / 'tactus.db'}",
            "TACTUS_BROKER_URI": broker_uri,
            "TACTUS_VAR_DIR": str(tmp_path / "var"),
            "TACTUS_QUEUE_PREFIX": f"e2e{secrets.token_hex(4)}",
            "TACTUS_HEARTBEAT_INTERVAL": "0.5",
        }
        self.store = open_store(self.env["TACTUS_STORE_URI"])
        self.store.init_schema()
        self.broker = open_broker(broker_uri, self.store)
        self.procs: list[subprocess.Popen] = []

    def register(self, clock, **fields) -> None:
        fields.setdefault(
            "command",
            ["sh", "-c", f"echo $0 $1 >> {self.log}; sleep 0.05", "{process}", "{timeperiod}"],
        )
        entry = entry_from_mapping(fields)
        now = clock.now()
        self.store.insert_process(
            ProcessRecord(
                entry=entry,
                source=ProcessSource.FILE,
                registered=entry.to_dict(),
                created_at=now,
                updated_at=now,
            )
        )

    def spawn(self, *args: str) -> subprocess.Popen:
        out = open(self.tmp / f"{args[1]}-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, *args], env=self.env, stdout=out, stderr=out)
        self.procs.append(proc)
        return proc

    def wait(self, predicate, *, deadline: float, what: str):
        """``wait_until``, failing with the processes' logs and the newest units of work."""
        try:
            return wait_until(predicate, deadline=deadline, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.report()}") from None

    def report(self) -> str:
        parts = [
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.tmp.glob("*-*.log"))
        ]
        uows = self.store.find_uows(UowQuery(), limit=20).items
        parts.append("uows: " + ", ".join(f"{u.process} {u.timeperiod} {u.state}" for u in uows))
        return "\n".join(parts)

    def runs(self) -> Counter:
        if not self.log.exists():
            return Counter()
        return Counter(tuple(line.split()) for line in self.log.read_text().splitlines())

    def state(self, process: str, timeperiod: str) -> JobState | None:
        try:
            return self.store.get_job(process, timeperiod).state
        except Exception:  # noqa: BLE001 - not materialized yet
            return None

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.broker.close()
        self.store.close()


@pytest.fixture(params=["store", "rabbitmq"])
def installation(request, tmp_path):
    uri = "store"
    if request.param == "rabbitmq":
        if not servers.port_open("127.0.0.1", 5672):
            servers.unavailable("RabbitMQ not reachable on 127.0.0.1:5672")
        uri = RABBITMQ
    inst = Installation(tmp_path, uri)
    yield inst
    inst.close()


def test_tree_hourly_to_daily_with_real_workers(installation):
    # given an hourly -> daily tree (the day waits for its 24 hours) and a clock at 01:00 next day
    clock = FakeClock(datetime(2026, 1, 5, 1, 0, tzinfo=UTC))
    common = {"kind": "managed", "tree": "site", "lag": 0}
    installation.register(
        clock,
        name="site_hourly",
        time_qualifier="hourly",
        start_timeperiod="2026010400",
        max_active=24,
        **common,
    )
    installation.register(
        clock,
        name="site_daily",
        time_qualifier="daily",
        start_timeperiod="2026010400",
        blocking="children",
        **common,
    )
    installation.spawn("-m", "workers", "site_hourly", "--concurrency", "4")
    installation.spawn("-m", "workers", "site_daily")
    scheduler = Scheduler(
        installation.store,
        installation.broker,
        clock,
        SchedulerConfig(queue_prefix=installation.env["TACTUS_QUEUE_PREFIX"]),
    )
    # when the scheduler runs
    scheduler.start()
    try:
        wait_until(
            lambda: installation.state("site_daily", "2026010400") is JobState.PROCESSED,
            deadline=90,
            what="the daily job to be processed",
        )
    finally:
        scheduler.stop()
    # then each hour of the day and the day itself ran exactly once, and the day ran last
    runs = installation.runs()
    hours = {tp for (process, tp) in runs if process == "site_hourly"}
    assert {f"20260104{h:02d}" for h in range(24)} <= hours
    assert all(n == 1 for n in runs.values()), runs
    assert runs[("site_daily", "2026010400")] == 1
    order = [tuple(line.split()) for line in installation.log.read_text().splitlines()]
    assert order.index(("site_daily", "2026010400")) > max(
        order.index(("site_hourly", f"20260104{h:02d}")) for h in range(24)
    )


def test_scheduler_killed_and_restarted_loses_nothing_runs_nothing_twice(tmp_path):
    # given six closed hourly periods processed one at a time by real processes
    inst = Installation(tmp_path, "store")
    clock = SystemClock()
    first = Timeperiod.containing("hourly", clock.now()).previous(6)
    inst.register(
        clock,
        name="ticker",
        kind="managed",
        time_qualifier="hourly",
        lag=0,
        start_timeperiod=str(first),
        command=["sh", "-c", f"echo $0 $1 >> {inst.log}; sleep 0.4", "{process}", "{timeperiod}"],
    )
    try:
        inst.spawn("-m", "workers", "ticker")
        scheduler = inst.spawn("-m", "scheduler")
        closed = [str(first.next(i)) for i in range(6)]
        inst.wait(
            lambda: sum(inst.state("ticker", tp) is JobState.PROCESSED for tp in closed) >= 2,
            deadline=60,
            what="two periods processed",
        )
        # when the scheduler is killed outright mid-run, then started again
        scheduler.send_signal(signal.SIGKILL)
        scheduler.wait(10)
        inst.spawn("-m", "scheduler")
        # then every closed period is processed, each ran once, and no unit of work is doubled
        inst.wait(
            lambda: all(inst.state("ticker", tp) is JobState.PROCESSED for tp in closed),
            deadline=90,
            what="all six periods processed after the restart",
        )
        runs = inst.runs()
        assert all(runs[("ticker", tp)] == 1 for tp in closed), runs
        uows = inst.store.find_uows(UowQuery(process="ticker"), limit=100).items
        per_period = Counter(u.timeperiod for u in uows)
        assert all(per_period[tp] == 1 for tp in closed), per_period
        jobs = inst.store.find_jobs(JobQuery(process="ticker"), limit=100).items
        assert {j.timeperiod for j in jobs} >= set(closed)
    finally:
        inst.close()


def test_scheduler_shuts_down_gracefully_on_sigterm(tmp_path):
    inst = Installation(tmp_path, "store")
    try:
        proc = inst.spawn("-m", "scheduler")
        wait_until(
            lambda: (tmp_path / "scheduler-0.log").read_text().count("scheduler starting"),
            deadline=30,
            what="the scheduler to start",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert "scheduler stopping" in (tmp_path / "scheduler-0.log").read_text()
    finally:
        inst.close()


def _scheduler(inst: Installation, clock, **config) -> Scheduler:
    return Scheduler(
        inst.store,
        inst.broker,
        clock,
        SchedulerConfig(queue_prefix=inst.env["TACTUS_QUEUE_PREFIX"], **config),
    )


def test_retries_to_success_with_a_real_worker(tmp_path):
    # given a command that fails twice, then succeeds, with 2 retries 1 s apart (doubling)
    inst = Installation(tmp_path, "store")
    clock = SystemClock()
    period = Timeperiod.containing("hourly", clock.now()).previous()
    counter = tmp_path / "attempts"
    script = (
        f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; [ $n -ge 3 ]"
    )
    inst.register(
        clock,
        name="flaky",
        kind="managed",
        time_qualifier="hourly",
        lag=0,
        start_timeperiod=str(period),
        retries=2,
        retry_delay=1,
        command=["sh", "-c", script],
    )
    inst.spawn("-m", "workers", "flaky")
    scheduler = _scheduler(inst, clock, recovery_interval=timedelta(milliseconds=300))
    # when the scheduler runs
    scheduler.start()
    try:
        wait_until(
            lambda: inst.state("flaky", str(period)) is JobState.PROCESSED,
            deadline=60,
            what="the flaky job to succeed on its third attempt",
        )
    finally:
        scheduler.stop()
    # then one unit of work took three attempts, two of them failed with exit code 1
    (uow,) = inst.store.find_uows(UowQuery(process="flaky"), limit=10).items
    assert uow.attempt == 3 and uow.exit_code == 0
    failures = [e for e in inst.store.history("uow", uow.id) if e.trigger == "fail"]
    assert len(failures) == 2
    assert counter.read_text().strip() == "3"
    inst.close()


def test_dependency_skipped_skips_the_dependent_with_real_workers(tmp_path):
    # given site_daily failing for good and client_daily depending on it
    inst = Installation(tmp_path, "store")
    clock = FakeClock(datetime(2026, 1, 5, 1, 0, tzinfo=UTC))
    inst.register(
        clock,
        name="site_daily",
        kind="managed",
        time_qualifier="daily",
        lag=0,
        start_timeperiod="2026010400",
        retries=0,
        command=["false"],
    )
    inst.register(
        clock,
        name="client_daily",
        kind="managed",
        time_qualifier="daily",
        lag=0,
        start_timeperiod="2026010400",
        depends_on=["site_daily"],
        blocking="dependencies",
    )
    inst.spawn("-m", "workers", "site_daily")
    inst.spawn("-m", "workers", "client_daily")
    scheduler = _scheduler(inst, clock)
    scheduler.start()
    try:
        wait_until(
            lambda: inst.state("client_daily", "2026010400") is JobState.SKIPPED,
            deadline=60,
            what="the dependent job to be skipped",
        )
    finally:
        scheduler.stop()
    # then the dependency was skipped after its one attempt, and the dependent never ran
    assert inst.state("site_daily", "2026010400") is JobState.SKIPPED
    assert inst.store.find_uows(UowQuery(process="client_daily"), limit=10).items == []
    inst.close()


def test_worker_killed_mid_uow_is_retried_by_the_scheduler(tmp_path):
    # given a command that hangs on its first attempt and succeeds on the second
    inst = Installation(tmp_path, "store")
    inst.env["TACTUS_HEARTBEAT_INTERVAL"] = "0.3"
    clock = SystemClock()
    period = Timeperiod.containing("hourly", clock.now()).previous()
    marker, orphan = tmp_path / "attempts", tmp_path / "orphan.pid"
    script = (
        f"n=$(cat {marker} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {marker}; "
        f"if [ $n -eq 1 ]; then echo $$ > {orphan}; sleep 60; fi"
    )
    inst.register(
        clock,
        name="victim",
        kind="managed",
        time_qualifier="hourly",
        lag=0,
        start_timeperiod=str(period),
        retries=2,
        retry_delay=1,
        command=["sh", "-c", script],
    )
    first = inst.spawn("-m", "workers", "victim")
    scheduler = _scheduler(
        inst,
        clock,
        recovery_interval=timedelta(milliseconds=300),
        heartbeat_interval=timedelta(seconds=0.3),
        heartbeat_misses=3,
    )
    scheduler.start()
    try:
        wait_until(orphan.exists, deadline=30, what="the first attempt to start")
        # when its worker is killed outright mid-run and another worker is started
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        inst.spawn("-m", "workers", "victim")
        # then the scheduler declares the worker lost, retries, and the job is processed
        wait_until(
            lambda: inst.state("victim", str(period)) is JobState.PROCESSED,
            deadline=60,
            what="the job to be processed by the second worker",
        )
    finally:
        scheduler.stop()
        if orphan.exists():  # the killed worker's command lives on in its own session
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(orphan.read_text()), signal.SIGKILL)
        inst.close()
    (uow,) = inst.store.find_uows(UowQuery(process="victim"), limit=10).items
    assert uow.attempt == 2 and uow.exit_code == 0
    history = inst.store.history("uow", uow.id)
    assert any("lost" in e.reason for e in history if e.trigger == "fail")
