"""Executor benchmark (issue 17): no-op units of work through executors over HTTP, against the
local worker on the same store, in the same run; and the claim latency under load.

    .venv/bin/python bench/executor.py [--n 1000] [--repeat 3] [--quick] [--write docs/benchmarks.md]

Each run is a fresh installation in a temporary folder: an SQLite file store and the embedded
store queue, mx as its own OS process (``launch.py --start mx --console``, the threaded
werkzeug server). The process ``bench_noop`` runs the no-op class
``bench.dispatch_worker:NoopWorker`` (a Python class: a command would time a fork per unit).
The consumers start first and wait: either the local worker (``python -m workers bench_noop
--concurrency C``, on the store and the broker) or 1 or 4 executors (bench/executor_client.py:
``launch.py executor`` as it runs, with each claim timed), with 1 or 8 slots each. After a
warm-up of 10 units per consumer, the benchmark creates N units of work in one store
transaction and publishes them (the scheduler's own ``Dispatcher``), and times from there to
the N-th ``processed`` in the store (polled every 20 ms).

Claim latency: the round trip of each ``POST /executor/claim`` that brought a unit of work and
started after the N units were stored (so no claim that waited idle for work is counted),
p50 and p99 over the executors of the run.

Caveats: 2 cores shared by mx, the SQLite store, the consumers and the benchmark; loopback
HTTP with a new connection per request (urllib; werkzeug closes each); mx writes every claim and outcome itself, so
the executors' store writes are serialised through one process (the local worker writes its
own). No scheduler runs: the status messages pile up in the store queue unread.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from doc_section import replace_section  # noqa: E402
from quiet import Quiet, log  # noqa: E402

from db import open_store  # noqa: E402
from db.clock import SystemClock  # noqa: E402
from db.credentials import Role  # noqa: E402
from db.models import ProcessRecord  # noqa: E402
from db.registration import entry_from_mapping  # noqa: E402
from db.states import ProcessSource, UowKind, UowState  # noqa: E402
from db.uow_factory import UowSpec  # noqa: E402
from mq import open_broker  # noqa: E402
from mx.services.credentials import create_token  # noqa: E402
from scheduler.dispatch import Dispatcher  # noqa: E402

PROCESS = "bench_noop"
BEGIN, END = "## Executors over HTTP (`bench/executor.py`)", "<!-- bench/executor.py end -->"
WARMUP_PER_CONSUMER = 10
#: Seconds in all the runs wait for a quiet machine by default.
QUIET_BUDGET_S = 20 * 60


@dataclass(frozen=True)
class Config:
    kind: str  # "local" or "executor"
    processes: int
    slots: int

    @property
    def label(self) -> str:
        if self.kind == "local":
            return f"local worker, concurrency {self.slots}"
        return f"{self.processes} executor{'s' if self.processes > 1 else ''} × {self.slots} slot{'s' if self.slots > 1 else ''}"


CONFIGS = [
    Config("local", 1, 1),
    Config("local", 1, 8),
    Config("executor", 1, 1),
    Config("executor", 1, 8),
    Config("executor", 4, 1),
    Config("executor", 4, 8),
]


@dataclass
class Result:
    rate: float
    claims: list[float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Installation:
    """A throw-away installation: store, mx, the consumers."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.uri = f"sqlite:///{folder / 'var' / 'tactus.db'}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TACTUS_")}
        self.env.update(
            PYTHONPATH=str(ROOT),
            TACTUS_VAR_DIR=str(folder / "var"),
            TACTUS_STORE_URI=self.uri,
            TACTUS_BROKER_URI="store",
            TACTUS_MX_PORT=str(self.port),
            TACTUS_BOX_ID="bench",
        )
        (folder / "var").mkdir()
        self.procs: list[subprocess.Popen] = []
        self.store = open_store(self.uri)
        self.store.init_schema()
        self.clock = SystemClock()
        self.broker = open_broker("store", self.store)
        entry = entry_from_mapping(
            {
                "name": PROCESS,
                "kind": "freerun",
                "trigger": "every 86400",
                "worker": "bench.dispatch_worker:NoopWorker",
                "retries": 0,
                "max_active": 1_000_000,
            }
        )
        now = self.clock.now()
        self.store.insert_process(
            ProcessRecord(
                entry=entry,
                source=ProcessSource.FILE,
                registered=None,
                created_at=now,
                updated_at=now,
            )
        )
        self.entry = entry
        self.dispatcher = Dispatcher(
            self.store,
            lambda q, b, d: self.broker.publish(q, b, delay=d),
            self.clock,
            "tactus",
            publish_many=self.broker.publish_many,
        )
        self._made = 0

    def spawn(self, argv: list[str], log_name: str) -> subprocess.Popen:
        out = (self.folder / log_name).open("ab")
        proc = subprocess.Popen(
            argv,
            cwd=self.folder,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def start_mx(self) -> None:
        self.spawn(
            [sys.executable, str(ROOT / "launch.py"), "--start", "mx", "--console"], "mx.log"
        )
        import urllib.request

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/api/v1/health", timeout=2
                ):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("mx did not start")

    def create(self, count: int) -> None:
        """``count`` units of work in one transaction, then published."""
        specs = []
        for _ in range(count):
            self._made += 1
            stamp = f"{self._made:014d}"
            specs.append(
                UowSpec(
                    entry=self.entry,
                    kind=UowKind.FREERUN,
                    start=stamp,
                    end=stamp,
                    run_key=f"b{stamp}",
                    reason="bench",
                )
            )
        made = self.dispatcher.create_many(specs)
        self.dispatcher.publish_all(u for u, _ in made)

    def processed(self) -> int:
        counts = self.store.count_uows(PROCESS, states=[UowState.PROCESSED])
        return counts.get((PROCESS, UowState.PROCESSED), 0)

    def wait_processed(self, count: int, deadline: float = 600.0) -> None:
        end = time.monotonic() + deadline
        while self.processed() < count:
            if time.monotonic() > end:
                raise RuntimeError(f"only {self.processed()} of {count} processed")
            time.sleep(0.02)

    def wait_consumers(self, count: int) -> None:
        end = time.monotonic() + 60
        while len([w for w in self.store.list_workers() if w.state == "alive"]) < count:
            if time.monotonic() > end:
                raise RuntimeError("the consumers did not register")
            time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.broker.close()
        self.store.close()


def run_once(config: Config, n: int) -> Result:
    with tempfile.TemporaryDirectory(prefix="tactus-bench-exec-") as tmp:
        folder = Path(tmp)
        inst = Installation(folder)
        try:
            outs: list[Path] = []
            if config.kind == "local":
                inst.spawn(
                    [sys.executable, "-m", "workers", PROCESS, "--concurrency", str(config.slots)],
                    "worker.log",
                )
                consumers = 1
            else:
                inst.start_mx()
                token = create_token(inst.store, "bench", Role.EXECUTOR, created_by="bench")
                token_file = folder / "bench.token"
                token_file.write_text(token)
                for i in range(config.processes):
                    out = folder / f"claims-{i}.json"
                    outs.append(out)
                    inst.spawn(
                        [
                            sys.executable,
                            str(ROOT / "bench" / "executor_client.py"),
                            f"http://127.0.0.1:{inst.port}",
                            str(token_file),
                            f"ex{i}",
                            str(config.slots),
                            str(out),
                        ],
                        f"executor-{i}.log",
                    )
                consumers = config.processes
            inst.wait_consumers(consumers)
            warmup = WARMUP_PER_CONSUMER * consumers * max(1, config.slots // 2)
            inst.create(warmup)
            inst.wait_processed(warmup)
            started = time.perf_counter()
            inst.create(n)
            loaded_at = time.time()
            inst.wait_processed(warmup + n)
            rate = n / (time.perf_counter() - started)
        finally:
            inst.stop()
        claims: list[float] = []
        for out in outs:
            data = json.loads(out.read_text())
            claims += [seconds for at, seconds in data["claims"] if at >= loaded_at]
        return Result(rate, claims)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="units of work per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per configuration")
    parser.add_argument("--quick", action="store_true", help="no waiting for a quiet machine")
    parser.add_argument("--write", type=Path, help="record the result in this file")
    parser.add_argument(
        "--only", type=int, nargs="*", help="run only these configurations (0-based, for tries)"
    )
    parser.add_argument(
        "--quiet-budget",
        type=float,
        default=QUIET_BUDGET_S,
        help="seconds in all to wait for a quiet machine (default %(default)s)",
    )
    args = parser.parse_args()
    quiet = Quiet(args.quiet_budget, enabled=not args.quick)
    chosen = [c for i, c in enumerate(CONFIGS) if args.only is None or i in args.only]
    results: dict[Config, list[Result]] = {c: [] for c in chosen}
    for round_ in range(args.repeat):
        for config in chosen:  # interleaved: each round runs every configuration once
            quiet.wait(f"{config.label}, run {round_ + 1}", every_s=15)
            result = run_once(config, args.n)
            results[config].append(result)
            log(f"{config.label}: {result.rate:.0f} units/s, {len(result.claims)} claims timed")
    text = render(results, args, quiet.notes)
    print(text)
    if args.write:
        replace_section(args.write, text, BEGIN, END)
    return 0


def render(results: dict[Config, list[Result]], args: argparse.Namespace, notes: list[str]) -> str:
    local = statistics.median(r.rate for r in results.get(CONFIGS[0]) or [Result(1.0, [])])
    lines = [
        BEGIN,
        "",
        "```sh",
        f".venv/bin/python bench/executor.py --n {args.n} --repeat {args.repeat} --write docs/benchmarks.md",
        "```",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {socket.gethostname()} (CPython "
        f"{sys.version.split()[0]}, {os.cpu_count()} cores), N = {args.n} no-op units of work per "
        f"run, {args.repeat} runs per configuration (interleaved), SQLite file store, embedded "
        "store queue.",
        "",
        "| consumers | units/s (median) | range | / local worker (concurrency 1) | claim p50 | claim p99 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for config, runs in results.items():
        rates = [r.rate for r in runs]
        median = statistics.median(rates)
        claims = [c for r in runs for c in r.claims]
        p50 = f"{percentile(claims, 0.5) * 1000:.1f} ms" if claims else "–"
        p99 = f"{percentile(claims, 0.99) * 1000:.1f} ms" if claims else "–"
        lines.append(
            f"| {config.label} | {median:.0f} | {min(rates):.0f}–{max(rates):.0f} | "
            f"{median / local:.2f} | {p50} | {p99} |"
        )
    lines += [
        "",
        "Target: executors at least 0.5× the local worker's rate, claim p99 under 100 ms.",
        "",
        "Timed from the N units of work stored (one transaction) and published to the N-th "
        "`processed` in the store. Claim latency: the round trip of each claim that brought a "
        "unit of work and started once the N were stored, over every executor of the runs. "
        "Caveats: the two cores serve mx, the SQLite store, every consumer and the benchmark, "
        "and other sessions' work (the load noted below). Every executor request is a new "
        "loopback HTTP connection (urllib) to the threaded werkzeug server, which closes every "
        "connection (no keep-alive). While work flows, a slot's outcome brings its next claim "
        "in one commit (with the status message); the outcomes of an executor's slots that end "
        "while its previous request is on the way go in one request and one commit "
        "(`POST /executor/outcomes`, with a claim of as many units). mx keeps executor tokens "
        "5 s, process entries 1 s, a page of candidates 0.25 s and each unit of work it claimed "
        "until its outcome in memory; the claims and outcomes of requests that come at once "
        "are written in one commit (at most three request threads at work). The local worker "
        "reads its units from the store queue; the executors' copies of those messages stay "
        "in the queue unread. No scheduler runs.",
        "",
        "Machine: " + "; ".join(notes[:3]) + ("; …" if len(notes) > 3 else ""),
        END,
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
