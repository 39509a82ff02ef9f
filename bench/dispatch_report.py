"""The report of bench/dispatch.py: configurations, the Markdown section and its caveats."""

from __future__ import annotations

import os
import platform
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from dispatch_cpu import others_cores
from doc_section import replace_section

if TYPE_CHECKING:
    from dispatch_tactus import RunResult

MARK_BEGIN = "<!-- bench/dispatch.py begin -->"
MARK_END = "<!-- bench/dispatch.py end -->"
#: The CPU column's parties; "broker" is the configuration's broker server, if it has one.
PARTIES = ("client", "workers", "broker", "postgresql")
BROKER_NAMES = {"rabbitmq": "RabbitMQ", "store": "store queue", "redis": "Redis", "nats": "NATS"}
#: The brokers that issue 15 asks to be at least as fast as RabbitMQ with the same store.
CHALLENGERS = ("redis", "nats")

PROFILE_GUIDE = [
    "Reading the profiles: a worker slot handles one unit of work at a time, so its wall time "
    "per unit is the sum of its steps. Claim and record processed are one SQLite write "
    "transaction each (`BEGIN IMMEDIATE`, compare-and-set `UPDATE`, history `INSERT`, "
    "`COMMIT`: `SqlStore.transition_uow`, db/backends/sql/uows.py); with the default "
    "`synchronous=full` each `COMMIT` waits for an fsync of the write-ahead log. The status "
    "message leaves with the ack (`Consumer.ack(..., notices=...)`: `basic_publish` then "
    "`basic_ack` on the worker's channel, no round trip). Writers of one SQLite file queue for "
    "its single write lock, which a writer holds through its fsync; SQLite's default busy "
    "handler (the `busy_timeout` set in db/backends/sql/engine.py) retries after sleeps of 1, "
    "2, 5, 10, 15, 20, 25 ... ms. On Redis the ack and its status notice are one script call "
    "(`RedisConsumer._run_settle`), whose reply the slot waits for (redis-py `read_response`); "
    "on NATS every call of a worker is carried out by its broker's event loop thread "
    "(`nats-loop`), which the slot thread waits for (`Link.run`): the ack waits for the "
    "server's answer. The profiled runs are separate from the timed ones; py-spy's "
    "sampling adds load.",
]


@dataclass(frozen=True)
class Config:
    system: str  # "tactus" or "celery"
    broker: str  # "rabbitmq", "store" (the embedded store queue), "redis" or "nats"
    store: str  # "sqlite" or "postgresql" (Celery: its result backend)
    workers: int
    nodes: int = 0  # Celery worker nodes (workers // nodes pool processes each)
    #: SQLite store's ``synchronous`` (the store URI's option): "full" (default) or "normal".
    synchronous: str = "full"

    @property
    def parties(self) -> tuple[str, ...]:
        """The CPU parties (bench/dispatch_cpu.py) this configuration uses."""
        return ("client", "workers", self.broker, self.store)

    @property
    def label(self) -> str:
        if self.system == "celery":
            layout = f"{self.nodes} node{'s' if self.nodes > 1 else ''} × concurrency "
            return f"Celery, RabbitMQ, db+sqlite results ({layout}{self.workers // self.nodes})"
        broker = BROKER_NAMES[self.broker]
        store = "SQLite file" if self.store == "sqlite" else "PostgreSQL"
        mode = f" (`synchronous={self.synchronous}`)" if self.synchronous != "full" else ""
        return f"Tactus, {broker}, {store} store{mode}"


def median_run(runs: list[RunResult]) -> RunResult:
    return sorted(runs, key=lambda r: r.rate)[len(runs) // 2]


def cpu_cell(config: Config, run: RunResult) -> str:
    """CPU ms per unit: client / workers / broker server / PostgreSQL ("–": not a party)."""
    names = {"broker": config.broker, "postgresql": config.store}
    cells = []
    for party in PARTIES:
        name = names.get(party, party)
        used = name in config.parties and name in run.cpu
        cells.append(f"{1000 * run.cpu[name] / run.n:.1f}" if used else "–")
    return " / ".join(cells)


def render(
    results: dict[Config, list[RunResult]],
    n: int,
    notes: list[str],
    profile: list[str],
    *,
    others_limit: float,
    attempts: int,
    command: str = ".venv/bin/python bench/dispatch.py --write docs/benchmarks.md",
) -> str:
    celery_rate = {
        c.workers: median_run(r).rate
        for c, r in results.items()
        if c.system == "celery" and c.nodes == c.workers
    }
    lines = [
        MARK_BEGIN,
        "## Dispatch end to end (`bench/dispatch.py`)",
        "",
        "```sh",
        command,
        "```",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} "
        f"({platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores), N = {n} units of work (tasks) per run; "
        f"{'; '.join(notes)}.",
        "",
        "| configuration | worker processes | units/s (median) | range | Tactus / Celery "
        "| CPU ms per unit: client / workers / broker server / PostgreSQL "
        "| other work, cores |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    order = sorted(results.items(), key=lambda kv: (kv[0].workers, kv[0].system == "celery"))
    for config, runs in order:
        mid = median_run(runs)
        rates = [r.rate for r in runs]
        ratio = "—"
        if config.system == "tactus" and config.workers in celery_rate:
            ratio = f"{mid.rate / celery_rate[config.workers]:.2f}"
        cpu = cpu_cell(config, mid)
        others = statistics.median(others_cores(r.cpu, config.parties, r.seconds) for r in runs)
        lines.append(
            f"| {config.label} | {config.workers} | {mid.rate:,.0f} "
            f"| {min(rates):,.0f}–{max(rates):,.0f} | {ratio} | {cpu} | {others:.2f} |"
        )
    lines += ["", verdict(results, celery_rate)]
    if challenge := versus_rabbitmq(results):
        lines += ["", challenge]
    lines += ["", *caveats(others_limit, attempts)]
    if profile:
        lines += ["", *PROFILE_GUIDE, "", *profile]
    lines.append(MARK_END)
    return "\n".join(lines)


def verdict(results: dict[Config, list[RunResult]], celery_rate: dict[int, float]) -> str:
    ratios = {
        config: median_run(runs).rate / celery_rate[config.workers]
        for config, runs in results.items()
        if config.system == "tactus" and config.workers in celery_rate
    }
    if not ratios:
        return "No Celery figures to compare with."
    met = [c for c, r in ratios.items() if r >= 1.0]
    best = max(ratios, key=ratios.__getitem__)
    return (
        f"Target (at least Celery's rate): met in {len(met)} of {len(ratios)} Tactus "
        f"configurations; Tactus / Celery ranges from {min(ratios.values()):.2f} to "
        f"{max(ratios.values()):.2f} (best: {best.label}, {best.workers} worker "
        f"process{'es' if best.workers > 1 else ''})."
    )


def versus_rabbitmq(results: dict[Config, list[RunResult]]) -> str:
    """Issue 15's target: each Redis and NATS row at least as fast as the RabbitMQ row with
    the same store, store mode and worker processes (medians)."""
    rabbit = {
        (c.store, c.synchronous, c.workers): median_run(r).rate
        for c, r in results.items()
        if c.system == "tactus" and c.broker == "rabbitmq"
    }
    parts = []
    met = total = 0
    for config, runs in results.items():
        key = (config.store, config.synchronous, config.workers)
        if config.system != "tactus" or config.broker not in CHALLENGERS or key not in rabbit:
            continue
        ratio = median_run(runs).rate / rabbit[key]
        total += 1
        met += ratio >= 1.0
        store = "SQLite" if config.store == "sqlite" else "PostgreSQL"
        if config.synchronous != "full":
            store += f" `synchronous={config.synchronous}`"
        parts.append(f"{BROKER_NAMES[config.broker]}, {store}, ×{config.workers}: {ratio:.2f}")
    if not total:
        return ""
    return (
        f"Target of issue 15 (Redis and NATS at least as fast as RabbitMQ with the same store "
        f"and worker processes, medians): met in {met} of {total} configurations; rate / "
        f"RabbitMQ's: {'; '.join(parts)}."
    )


def caveats(others_limit: float, attempts: int) -> list[str]:
    return [
        "Timed from the first fire (publish, for Celery) to the N-th distinct status consumed "
        "(result collected). Tactus / Celery compares with Celery's row of the same number of "
        'worker processes, k nodes of concurrency 1. "Other work" is the CPU the rest of '
        "the machine used during the timed window (median over the runs, in cores of the 2): "
        f"a run with more than {others_limit} was run again ({attempts} tries at most) and "
        "the least disturbed kept; a run during which anything logged a warning (a reconnect: "
        "other test runs restart the shared RabbitMQ) was repeated. Caveats:",
        "",
        "- Two cores serve everything: RabbitMQ, Redis, NATS, PostgreSQL, the worker processes "
        "and the benchmark process (which plays the scheduler, or Celery's client); CPU "
        "columns show who spends them. The broker server column is the process listening on "
        "the configuration's broker port (beam.smp for RabbitMQ, redis-server, nats-server; – "
        "for the store queue, whose work is the store's); it and the PostgreSQL column count "
        "the whole server, other clients included.",
        "- The benchmark process plays the scheduler: it fires 100 fires at a time through "
        "the scheduler's own freerun pass (the fires recorded in one store transaction, their "
        "units of work created in one, linked in one, published together), as when 100 "
        "entries fire on the same minute, and takes the statuses as the scheduler's listener "
        "does (acked with its next claim, a trickle left to gather for 20 ms).",
        "- Durable writes waited for per unit of work: Tactus 1 store commit and a share (the "
        "outcome, written with the claim of the next unit of work when its message is already "
        "in hand; the three commits of a pass of 100 fires; on RabbitMQ the unit of work "
        "messages share one RabbitMQ transaction per 100; on the store queue the message ack, "
        "the status message and the claim of the next message are written in the outcome's "
        "commit, and status claims and acks are shared by the statuses claimed together), "
        "Celery 1 (its result row). Celery's publisher does not wait for a confirm, and its "
        "worker acks a task when it receives it (`acks_late` off, prefetch 4 per process), so "
        "a worker that dies loses the tasks it holds. Tactus claims each unit of work by "
        "compare-and-set before running it, acks only after the outcome is stored (a "
        "compare-and-set with a history event), and sends the status message with the ack, "
        "on the worker's channel and like Celery's task messages without a confirm: the store "
        "is the truth, a lost status message delays the scheduler's next look, and a message "
        "not acked is delivered again and its status re-sent. Tactus workers run with the "
        "default `worker_prefetch` of 2 (the message behind a run that lasts over a second is "
        "handed back). `synchronous=normal` rows: the SQLite store's commits do not wait for "
        "the disk (a documented opt-in, see docs/settings.md), durable against process "
        "crashes but not against an OS crash or power loss.",
        "- Redis rows: a batch's publish is one script call, an acknowledged write, as durable "
        "as the server's persistence (its settings are in the notes above: with `appendonly "
        "no` and no snapshots the messages live in Redis's memory only, and a Redis restart "
        "loses them; the store stays the truth); the status notice and the ack are one more "
        "script call (one round trip). NATS rows: a batch's publish waits for every "
        "JetStream publish ack (the message is in the stream's files, synced to disk every 2 "
        "minutes by default); the status notice is a plain publish into the stream, not "
        "waited for, followed by the delivery's ack sent as ack-next (+NXT: the ack and the "
        "request for the next message in one), which the worker does not wait for. Neither "
        "exercises redelivery, reconnects or delayed messages. Each run deletes its Redis "
        "keys and its NATS stream.",
        "- The Tactus workers log at WARNING (the per-change INFO line is off), like Celery's "
        "`--loglevel WARNING`. Celery results are collected with `GroupResult.get` "
        "(interval 10 ms), one SELECT per task, in the client.",
        "- Worker processes start and run a warm-up of 5 units per process before the clock "
        "starts.",
    ]


def write_section(path: Path, text: str) -> None:
    """Replace this benchmark's section of ``path`` (or append it)."""
    replace_section(path, text, MARK_BEGIN, MARK_END)
