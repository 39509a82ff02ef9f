"""The report of bench/flows.py: what a configuration is, what a run measured, the Markdown."""

from __future__ import annotations

import os
import platform
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from doc_section import replace_section

if TYPE_CHECKING:
    from db.models import StepEntry

MARK_BEGIN = "<!-- bench/flows.py begin -->"
MARK_END = "<!-- bench/flows.py end -->"
#: The target on the embedded default (SQLite file + store queue): p99 under this.
TARGET_P99_MS = 100.0
#: Airflow's published task-to-task lag (ms): the 15 gaps "next task's start minus the end of
#: the task before it" in the sequential DAG whose task instances Ash Berlin-Taylor (Airflow
#: committer, profiling the scheduler for AIP-15) posted on 2020-10-26, Airflow 2.0 in development:
#: https://github.com/puckel/docker-airflow/issues/233 (see AIRFLOW_NOTE).
AIRFLOW_GAPS_MS = (1110, 1065, 1076, 1122, 1072, 1129, 1064, 1114, 1113, 1070, 1056, 1106, 1065)
AIRFLOW_GAPS_MS += (1097, 1109)
AIRFLOW_NOTE = (
    "Airflow's figure (not run here): in "
    "[puckel/docker-airflow#233](https://github.com/puckel/docker-airflow/issues/233) "
    "Ash Berlin-Taylor (Airflow committer, then profiling the scheduler for AIP-15) posted, "
    "on 2020-10-26, the start and end instants of the task instances of a sequential DAG run "
    "by Airflow 2.0 in development (the executor is not named in the comment). The next "
    "task's start minus the end of the task before it is 1,056 to 1,129 ms over its 15 gaps "
    "(median 1,097 ms): the same measure as ours (upstream end to dependent start), though "
    "Airflow's start is when the task process begins running, later than our claim. For "
    "context, his [apache/airflow#11327](https://github.com/apache/airflow/pull/11327) "
    "(2020-10-07) cut the LocalExecutor's queued-to-start delay alone from 1.3–1.5 s to "
    "0.08–0.11 s on a 10-task sequential DAG. No Airflow document publishes a task-to-task "
    'figure that we found; Astronomer\'s "The Airflow 2.0 Scheduler" post describes a task '
    "latency benchmark, but its figures were not in the copy we could read."
)


@dataclass(frozen=True)
class Backend:
    label: str
    store: str  # "sqlite" or "postgresql"
    broker_uri: str  # "store" or an amqp:// URI


@dataclass(frozen=True, eq=False)
class Scenario:
    label: str
    process: str
    steps: tuple[StepEntry, ...]
    concurrency: int


@dataclass(frozen=True, kw_only=True)
class FlowRun:
    """What one flow run measured (from the store's history)."""

    steps: int
    #: From the flow run's expand to its end (the ``at`` of its two events).
    seconds: float
    #: Step name -> claim of the step minus the latest outcome of its upstream steps (ms).
    latency_ms: dict[str, float]
    load_before: float
    load_after: float

    @property
    def rate(self) -> float:
        return self.steps / self.seconds

    def percentile(self, q: float) -> float:
        return percentile(list(self.latency_ms.values()), q)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def _ms(value: float) -> str:
    return f"{value:,.0f}"


def pooled(runs: list[FlowRun], names: set[str] | None = None) -> list[float]:
    """The latencies of every run (of the steps named, or of every step with upstream)."""
    return [
        ms for run in runs for name, ms in run.latency_ms.items() if names is None or name in names
    ]


def table(results: dict[tuple[Backend, Scenario], list[FlowRun]]) -> list[str]:
    lines = [
        "| flow | store + broker | worker | latency measured on | p50 ms | p99 ms | max ms "
        "| steps/s (median) | steps/s range | wall s (median) | load before → after |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for (backend, scenario), runs in results.items():
        rows: list[tuple[str, set[str] | None]] = [("every step but the first", None)]
        if scenario.process == "bench_fan":
            fan = {s.name for s in scenario.steps if s.name.startswith("f")}
            rows = [(f"the {len(fan)} middle steps", fan), ("`join`", {"join"})]
        worker = f"1 process × concurrency {scenario.concurrency}"
        rates = [run.rate for run in runs]
        loads = ", ".join(f"{r.load_before:.2f} → {r.load_after:.2f}" for r in runs)
        for i, (what, names) in enumerate(rows):
            values = pooled(runs, names)
            count = f"{len(values):,} latencies"
            first = i == 0
            lines.append(
                f"| {scenario.label if first else ''} | {backend.label if first else ''} "
                f"| {worker if first else ''} | {what} ({count}) "
                f"| {_ms(percentile(values, 50))} | {_ms(percentile(values, 99))} "
                f"| {_ms(max(values))} "
                f"| {f'{statistics.median(rates):,.0f}' if first else ''} "
                f"| {f'{min(rates):,.0f}–{max(rates):,.0f}' if first else ''} "
                f"| {f'{statistics.median(r.seconds for r in runs):.2f}' if first else ''} "
                f"| {loads if first else ''} |"
            )
    return lines


def verdict(results: dict[tuple[Backend, Scenario], list[FlowRun]]) -> list[str]:
    lines = []
    for (backend, scenario), runs in results.items():
        if backend.store != "sqlite":
            continue
        if scenario.process == "bench_fan":
            names: set[str] | None = {"join"}
            what = f"{scenario.label} (concurrency {scenario.concurrency}), `join`"
        else:
            names, what = None, scenario.label
        values = pooled(runs, names)
        p50, p99 = percentile(values, 50), percentile(values, 99)
        met = "met" if p99 < TARGET_P99_MS else "**not met**"
        fastest = min(AIRFLOW_GAPS_MS) / max(p99, 1.0)
        typical = statistics.median(AIRFLOW_GAPS_MS) / max(p50, 1.0)
        ten = "met" if fastest >= 10 else "**not met**"
        lines.append(
            f"- {what}: p99 {p99:,.0f} ms: p99 under {TARGET_P99_MS:.0f} ms {met}; Airflow's "
            f"fastest gap ({min(AIRFLOW_GAPS_MS):,} ms) is {fastest:,.1f}× this p99 (10× "
            f"{ten}), its median gap {typical:,.0f}× this p50 ({p50:,.0f} ms)"
        )
    return lines


def render(
    results: dict[tuple[Backend, Scenario], list[FlowRun]],
    runs: int,
    notes: list[str],
    *,
    command: str,
) -> str:
    lines = [
        MARK_BEGIN,
        "## Flows: step-to-step latency (`bench/flows.py`)",
        "",
        "```sh",
        command,
        "```",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} "
        f"({platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores); {runs} flow run{'s' if runs > 1 else ''} per "
        f"configuration, one after the other on the same worker process; 1-minute load "
        f"average {'; '.join(notes)}; before → after each run in the last column.",
        "",
        *table(results),
        "",
        "Targets on the embedded default:",
        "",
        *verdict(results),
        "",
        *CAVEATS,
    ]
    if AIRFLOW_NOTE:
        lines += ["", AIRFLOW_NOTE]
    lines.append(MARK_END)
    return "\n".join(lines)


CAVEATS = [
    "What each row includes: the latency of a step is the `at` of its `claim` event minus "
    "the latest `at` of its upstream steps' `succeed` events, both read from the store's "
    "history and stored to the millisecond. Between the two: the commit that stores the "
    "upstream step's outcome together with the requests of the steps it releases (and, on "
    "the store queue, the ack, the status message and the claim of the next messages), the "
    "publish of the released steps to the process's queue after that commit, the delivery to "
    "a slot, reading the step and stamping the claim. Left out: the claim's own commit "
    "(stamped before it) and the run of the step itself (a no-op Python call). "
    "Steps per second: steps / (the flow run's end minus its expansion), expansion "
    "(creating the steps) included. Latencies are pooled over the runs; steps/s is per run.",
    "",
    "- The fan-out's middle steps wait for one of the worker's slots (4, or 1): their "
    "latency is mostly queueing behind the others (the n-th of them waits for about n / "
    "concurrency step runs), so their p99 measures throughput, not dispatch. `join` is the step-to-step figure of "
    "the fan-out: the last of the middle steps to end releases it.",
    "- Each configuration is a fresh installation (a new SQLite file, or a new PostgreSQL "
    "database, queues with their own prefix); no scheduler runs (steps need no pass between "
    "them), a thread of the benchmark consumes the status queue as the scheduler's listener "
    "does. The worker logs at WARNING. Two cores serve the worker, the benchmark, and "
    "PostgreSQL and RabbitMQ (and whatever else runs: see the load).",
]


def write_section(path: Path, text: str) -> None:
    """Replace this benchmark's section of ``path`` (or append it)."""
    replace_section(path, text, MARK_BEGIN, MARK_END)
