"""Flows benchmark (issue 14): step-to-step latency and steps per second of a flow run.

    .venv/bin/python bench/flows.py [--chain 500] [--fan 200] [--runs 3] [--quick]
                                    [--write docs/benchmarks.md]

Two flows of no-op steps (``worker: "bench.dispatch_worker:NoopWorker"``, whose
``process_uow`` returns None), each registered as a freerun process with ``steps``:

- a chain of ``--chain`` steps (a plain list: each depends on the one before), run by one
  worker process with concurrency 1;
- a fan-out 1 -> ``--fan`` -> 1 (``root``, then ``--fan`` steps that depend on it, then ``join``
  that depends on all of them), run by one worker process with concurrency 4.

Each configuration gets a fresh installation: the embedded default (an SQLite file store and
the store queue, ``TACTUS_BROKER_URI=store``) and PostgreSQL + RabbitMQ (a database of its
own, made with the test role of tests/servers.py and dropped after; its queues deleted after).
Worker OS processes (``python -m workers PROCESS --concurrency N --log-level WARNING``) run as
the supervisor would start them. The benchmark creates each flow run with
``db.uow_factory.create_once`` and publishes it as a freerun fire would
(``mq.message.uow_delivery``); no scheduler runs (steps need no pass between them), but a
thread of the benchmark consumes the status queue as the scheduler's status listener does
(bench/dispatch_tactus.py ``StatusCounter``), so the store queue carries its real traffic.
``--runs`` flow runs are made one after the other on the same worker process.

Everything is read afterwards from the store's history (``store.history("uow", id)``):

- step-to-step latency of a step with upstream steps = the ``at`` of its ``claim`` event minus
  the latest ``at`` of its upstream steps' ``succeed`` events (ms precision: both instants are
  stored to the millisecond). A ``succeed`` event's ``at`` is stamped just before the commit
  that stores the outcome together with the requests it releases; a ``claim``'s just before
  the claim's commit;
- steps per second = steps / (the flow run's ``succeed`` ``at`` minus its ``expand`` ``at``).

``--write`` waits (up to 20 min, polling every 30 s) for a 1-minute load average under 1.5
before it starts, and the load is recorded before and after each run (the benchmark's own
processes count in it). A run during which the worker
logged a warning or an error (a RabbitMQ reconnect: other test runs restart the shared server)
is thrown away and run again (3 tries).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The project first: bench/scheduler.py must not hide the scheduler package.
sys.path.insert(0, str(ROOT))

from dispatch_tactus import Installation, spawn_worker, tail_logs, wait_registered  # noqa: E402
from flows_report import Backend, FlowRun, Scenario, render, write_section  # noqa: E402
from quiet import Quiet, log  # noqa: E402

from db import flows  # noqa: E402
from db.models import ProcessEntry, StepEntry  # noqa: E402
from db.states import ProcessKind, UowKind, UowState  # noqa: E402
from db.uow_factory import create_once  # noqa: E402
from mq.message import uow_delivery  # noqa: E402
from tests import servers  # noqa: E402

AMQP = os.environ.get("TACTUS_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")
WORKER_CLASS = "bench.dispatch_worker:NoopWorker"
QUIET_BUDGET_S = 20 * 60
ATTEMPTS = 3
#: A flow run's timeperiod (freerun: any instant; each run has its own run key).
PERIOD = "20261207030000"


class Disturbed(RuntimeError):
    """The worker logged a warning or an error during the run: measure again."""


def chain_steps(n: int) -> tuple[StepEntry, ...]:
    return tuple(StepEntry(name=f"s{i:03d}", worker=WORKER_CLASS) for i in range(n))


def fan_steps(n: int) -> tuple[StepEntry, ...]:
    middle = [
        StepEntry(name=f"f{i:03d}", worker=WORKER_CLASS, depends_on=("root",)) for i in range(n)
    ]
    return (
        StepEntry(name="root", worker=WORKER_CLASS, depends_on=()),
        *middle,
        StepEntry(name="join", worker=WORKER_CLASS, depends_on=tuple(s.name for s in middle)),
    )


def scenarios(chain: int, fan: int, fan_concurrency: tuple[int, ...]) -> list[Scenario]:
    found = [Scenario(f"chain of {chain}", "bench_chain", chain_steps(chain), concurrency=1)]
    for concurrency in fan_concurrency:
        label = f"fan-out 1 → {fan} → 1"
        found.append(Scenario(label, "bench_fan", fan_steps(fan), concurrency=concurrency))
    return found


class FlowInstallation(Installation):
    """An installation with one process with steps and its worker process."""

    def __init__(self, store_uri: str, broker_uri: str, scenario: Scenario, tmp: Path) -> None:
        entry = ProcessEntry(
            name=scenario.process,
            kind=ProcessKind.FREERUN,
            trigger="every 3600",
            timeout=timedelta(seconds=60),
            steps=scenario.steps,
        )
        super().__init__(store_uri, broker_uri, entry, f"bf{secrets.token_hex(4)}", tmp)
        self.scenario = scenario
        self.log_path = tmp / f"worker-{self.prefix}.log"
        self.runs = 0

    def start(self) -> None:
        """The status listener, then the worker process; returns once it has registered."""
        self.counter.start()
        self.counter.ready.wait(30)
        process, concurrency = self.scenario.process, self.scenario.concurrency
        self.procs.append(spawn_worker(process, concurrency, self.env(), self.log_path))
        wait_registered(self.store, process, self.procs, self.tail)

    def tail(self) -> str:
        return tail_logs([self.log_path])

    def complaints(self) -> list[str]:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [line for line in text.splitlines() if " WARNING " in line or " ERROR " in line]

    def run_flow(self, timeout: float) -> FlowRun:
        """One flow run, created and published as a freerun fire would be, waited for until
        its status arrives, then read back from the history."""
        self.runs += 1
        before = len(self.complaints())
        load_before = os.getloadavg()[0]
        run, _ = create_once(
            self.store,
            self.entry,
            clock=self.clock,
            actor="bench",
            reason="bench/flows.py",
            kind=UowKind.FREERUN,
            start=PERIOD,
            end=PERIOD,
            run_key=f"r{self.runs}",
        )
        queue, body, _ = uow_delivery(run, self.prefix, self.clock.now())
        self.broker.publish(queue, body)
        deadline = time.monotonic() + timeout
        while run.id not in self.counter.seen:
            if self.counter.error is not None:
                raise RuntimeError(f"status listener failed: {self.counter.error!r}")
            if any(proc.poll() is not None for proc in self.procs):
                raise RuntimeError(f"the worker exited:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"flow run {run.id} not ended after {timeout:.0f} s")
            time.sleep(0.05)
        complaints = self.complaints()[before:]
        if complaints:
            raise Disturbed(f"{len(complaints)} warning(s), first: {complaints[0][:200]}")
        return read_flow_run(self.store, run.id, load_before, os.getloadavg()[0])


def read_flow_run(store, run_id: str, load_before: float, load_after: float) -> FlowRun:
    """The instants of a finished flow run and its steps, from the store's history."""
    flow_run = store.get_uow(run_id)
    if flow_run.state is not UowState.PROCESSED:
        raise RuntimeError(f"flow run {run_id} ended {flow_run.state}")
    dag = flows.Dag.of(flow_run)
    steps = flows.steps_of(store, run_id)
    run_events = store.history("uow", run_id, limit=4 * len(steps) + 20)
    expanded = [e.at for e in run_events if e.trigger == "expand"]
    ended = [e.at for e in run_events if e.trigger == "succeed"]
    if len(expanded) != 1 or len(ended) != 1:
        raise RuntimeError(f"flow run {run_id}: {len(expanded)} expand, {len(ended)} succeed")
    claimed: dict[str, datetime] = {}
    succeeded: dict[str, datetime] = {}
    for name, step in steps.items():
        events = store.history("uow", step.id)
        claims = [e.at for e in events if e.trigger == "claim"]
        ends = [e.at for e in events if e.trigger == "succeed"]
        if step.state is not UowState.PROCESSED or len(claims) != 1 or len(ends) != 1:
            raise RuntimeError(
                f"step {name}: {step.state}, {len(claims)} claim(s), {len(ends)} succeed(s)"
            )
        claimed[name], succeeded[name] = claims[0], ends[0]
    latency: dict[str, float] = {}
    for name, ups in dag.upstream.items():
        if ups:
            ready = max(succeeded[up] for up in ups)
            latency[name] = (claimed[name] - ready).total_seconds() * 1000
    return FlowRun(
        steps=len(steps),
        seconds=(ended[0] - expanded[0]).total_seconds(),
        latency_ms=latency,
        load_before=load_before,
        load_after=load_after,
    )


def measure(backend: Backend, scenario: Scenario, runs: int, tmp: Path) -> list[FlowRun]:
    """``runs`` flow runs of ``scenario`` on a fresh installation of ``backend``."""
    database = None
    if backend.store == "sqlite":
        store_uri = f"sqlite:///{tmp / f'flows-{secrets.token_hex(4)}.db'}"
    else:
        database, store_uri = servers.POSTGRES.create_database()
    inst = FlowInstallation(store_uri, backend.broker_uri, scenario, tmp)
    try:
        inst.start()
        found = []
        for i in range(runs):
            found.append(inst.run_flow(timeout=max(120.0, len(scenario.steps) / 2)))
            got = found[-1]
            log(
                f"{backend.label}, {scenario.label}, run {i + 1}/{runs}: "
                f"{got.steps / got.seconds:,.0f} steps/s, latency p50 "
                f"{got.percentile(50):.0f} p99 {got.percentile(99):.0f} "
                f"max {max(got.latency_ms.values()):.0f} ms"
            )
        return found
    finally:
        inst.close()
        if database is not None:
            servers.POSTGRES.drop_database(database)


def measure_with_retries(
    backend: Backend, scenario: Scenario, runs: int, tmp: Path, failures: list[str]
) -> list[FlowRun]:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return measure(backend, scenario, runs, tmp)
        except Exception as exc:
            last = (str(exc).strip().splitlines() or [repr(exc)])[-1][:160]
            failures.append(f"{backend.label}, {scenario.label}: {last}")
            log(f"{backend.label}, {scenario.label} failed (attempt {attempt}): {exc}")
            if attempt == ATTEMPTS:
                raise
            time.sleep(10)
    raise AssertionError("unreachable")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chain", type=int, default=500, help="steps of the chain")
    parser.add_argument("--fan", type=int, default=200, help="steps between root and join")
    parser.add_argument(
        "--fan-concurrency",
        default="4,1",
        help="the fan-out worker's concurrency, comma-separated to run several (default 4,1)",
    )
    parser.add_argument("--runs", type=int, default=3, help="flow runs per configuration")
    parser.add_argument(
        "--quick", action="store_true", help="chain 50, fan-out 20, one run, embedded only"
    )
    parser.add_argument(
        "--backends",
        default="embedded,postgresql",
        help="comma-separated: embedded (SQLite + store queue), postgresql (+ RabbitMQ)",
    )
    parser.add_argument("--flows", default="chain,fan", help="comma-separated: chain, fan")
    parser.add_argument("--write", help="replace the marked section of this Markdown file")
    args = parser.parse_args()
    shapes = {f.strip() for f in args.flows.split(",") if f.strip()}
    try:
        fan_concurrency = tuple(int(c) for c in args.fan_concurrency.split(",") if c.strip())
    except ValueError:
        fan_concurrency = ()
    if not fan_concurrency or min(fan_concurrency) < 1:
        parser.error("--fan-concurrency takes whole numbers of 1 or more, comma-separated")
    if not shapes or shapes - {"chain", "fan"}:
        parser.error("--flows takes chain, fan or both")
    wanted = {b.strip() for b in args.backends.split(",") if b.strip()}
    if not wanted or wanted - {"embedded", "postgresql"}:
        parser.error("--backends takes embedded, postgresql or both")
    # Clean up (worker processes, queues, databases) on SIGTERM and on Ctrl-C, even when a
    # shell started us in the background with SIGINT ignored.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    chain, fan, runs = (50, 20, 1) if args.quick else (args.chain, args.fan, args.runs)
    backends = []
    if "embedded" in wanted:
        backends.append(Backend("embedded: SQLite file + store queue", "sqlite", "store"))
    problem = "--quick" if args.quick else servers.POSTGRES.available()
    if not problem and not servers.port_open("127.0.0.1", 5672):
        problem = "RabbitMQ not reachable on 127.0.0.1:5672"
    if "postgresql" not in wanted:
        pass
    elif problem:
        log(f"skipped PostgreSQL + RabbitMQ: {problem}")
    else:
        backends.append(Backend("PostgreSQL + RabbitMQ", "postgresql", AMQP))
    quiet = Quiet(budget_s=QUIET_BUDGET_S, enabled=bool(args.write) and not args.quick)
    results: dict[tuple[Backend, Scenario], list[FlowRun]] = {}
    failures: list[str] = []
    quiet.wait("at the start")
    with tempfile.TemporaryDirectory(prefix="tactus-flows-") as tmp:
        for scenario in scenarios(chain, fan, fan_concurrency):
            if scenario.process.removeprefix("bench_") not in shapes:
                continue
            for backend in backends:
                results[(backend, scenario)] = measure_with_retries(
                    backend, scenario, runs, Path(tmp), failures
                )
    notes = list(quiet.notes)
    if failures:
        notes.append(f"{len(failures)} attempt(s) repeated ({'; '.join(failures)})")
    command = ".venv/bin/python bench/flows.py --write docs/benchmarks.md"
    if wanted != {"embedded", "postgresql"}:
        command += f" --backends {args.backends}"
    if shapes != {"chain", "fan"}:
        command += f" --flows {args.flows}"
    if fan_concurrency != (4, 1):
        command += f" --fan-concurrency {args.fan_concurrency}"
    if args.quick:
        command = ".venv/bin/python bench/flows.py --quick"
    text = render(results, runs, notes, command=command)
    print(text)
    if args.write:
        write_section(Path(args.write), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
