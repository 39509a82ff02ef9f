"""Rendering bench/scheduler.py's results as the marked section of docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from pathlib import Path

from doc_section import replace_section

MARK_BEGIN = "<!-- bench/scheduler.py begin -->"
MARK_END = "<!-- bench/scheduler.py end -->"
HEADER = """## Scheduler: pass cost against history, freerun lateness, catch-up (`bench/scheduler.py`)

```sh
.venv/bin/python bench/scheduler.py --write docs/benchmarks.md    # --quick: a smoke run
```

Three measurements, each in a fresh interpreter; the script's docstring says exactly what each
does. Caveats: a 2-core machine shared with the database servers (and with other work unless
the load below says otherwise); one scheduler; simulated workers write to the same store as
the scheduler; a no-op broker takes broker cost out of every figure but the freerun rows that
say RabbitMQ or worker start. The 5-year history is
processed jobs only: a real store would also hold their units of work and events. APScheduler
keeps its jobs in memory, keeps no durable identity of a fire and writes nothing per run;
Tactus records each fire under its unique key, creates its unit of work with its history
event and links the two before publishing: that is what makes each fire exactly-once across
restarts. The fires of one pass go together (3 write transactions a pass whatever the number
of fires, on SQLite with a commit to disk each, and two reads per firing process: its last
fires and its units of work in flight). Freerun fires are prepared a second ahead of their
instant and published at it (docs/scheduler.md), so `recorded_at` (the start of the pass that
prepared the fire) precedes the instant: "published" is the honest Tactus lateness, and
"worker start" (the unit of work's `started_at`, a worker's claim) the end-to-end one."""


def _ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def render_passes(rows: list[dict], size) -> list[str]:
    timed = size.rounds * size.passes
    lines = [
        f"**Pass time and memory against history** ({size.processes:,} managed daily "
        f"processes, every one due each pass; {timed} timed passes per store and history, in "
        f"{size.rounds} rounds that alternate the two histories, each round in a fresh "
        "interpreter after warm-up passes; one job completed and one unit of work started per "
        "process per pass):",
        "",
        "| store | history | jobs stored | pass min | pass median | pass max | per process "
        "(median) | RSS after 1st pass | RSS growth | tracemalloc peak |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        times = sorted(row["pass_s"])
        median = _median(times)
        years = f"{row['days'] / 365.25:.0f} years" if row["days"] >= 365 else f"{row['days']} days"
        lines.append(
            f"| {row['backend']} | {years} | {row['jobs']:,} | {times[0]:.2f} s | "
            f"{median:.2f} s | {times[-1]:.2f} s | {median / size.processes * 1e3:.2f} ms | "
            f"{row['rss_first_mib']:.0f} MiB | {row['rss_growth_mib']:+.1f} MiB | "
            f"{row['tracemalloc_peak_mib']:.1f} MiB |"
        )
    lines += [
        "",
        "Jobs stored: the history inserted before the passes. RSS: of the scheduler's "
        "interpreter after its first timed pass, and its growth to after its last one (the "
        "largest of the rounds); tracemalloc peak: the Python allocations of one pass. Filling "
        "the history with `ensure_jobs` took "
        + ", ".join(
            f"{r['fill_s']:.0f} s ({r['backend']})" for r in rows if r["days"] and r["jobs"]
        )
        + ".",
    ]
    return lines


def _row(name, stats, ran, skip, miss, expected) -> str:
    return (
        f"| {name} | {expected:,} | {ran:,} | {skip:,} | {miss:,} | {_ms(stats['p50'])} | "
        f"{_ms(stats['p99'])} | {_ms(stats['max'])} |"
    )


def _worker_start_row(started: dict, size) -> str:
    return _row(
        f"Tactus, worker start ({started['expected'] // size.seconds} entries, a worker each, "
        "store queue)",
        started["started"],
        started["states"].get("processed", 0),
        0,
        started["expected"] - started["started"]["n"],
        started["expected"],
    )


def render_worker_start(started: dict, size) -> list[str]:
    """The worker-start row of :func:`render_freerun` alone (``--only worker-start``)."""
    return [
        "| scheduler | fires due | fired | skipped | missed | p50 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        _worker_start_row(started, size),
    ]


def render_freerun(result: dict, size) -> list[str]:
    ours, theirs = result["tactus"], result["apscheduler"]
    rabbit, started = result.get("rabbitmq"), result.get("workers")
    fired = ours["outcomes"].get("fired", 0)
    skipped = ours["outcomes"].get("skipped", 0)
    missed = ours["outcomes"].get("missed", 0) + ours["not_recorded"]
    aps_missed = theirs["missed"] + theirs["not_run"]

    row = _row

    lines = [
        f"**Freerun fire lateness** ({size.freeruns:,} entries every second, "
        f"{size.seconds:.0f} s, all firing on the same whole seconds; lateness in ms):",
        "",
        "| scheduler | fires due | fired | skipped | missed | p50 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        row(
            "Tactus, `recorded_at` (SQLite)",
            ours["recorded"],
            fired,
            skipped,
            missed,
            ours["expected"],
        ),
        row(
            "Tactus, published (SQLite)",
            ours["published"],
            fired,
            skipped,
            missed,
            ours["expected"],
        ),
        *(
            [
                row(
                    "Tactus, published to RabbitMQ (SQLite)",
                    rabbit["published"],
                    rabbit["outcomes"].get("fired", 0),
                    rabbit["outcomes"].get("skipped", 0),
                    rabbit["outcomes"].get("missed", 0) + rabbit["not_recorded"],
                    rabbit["expected"],
                )
            ]
            if rabbit
            else []
        ),
        *([_worker_start_row(started, size)] if started else []),
        row(
            f"APScheduler {theirs['version']}",
            theirs["lateness"],
            theirs["ran"],
            theirs["max_instances"],
            aps_missed,
            theirs["expected"],
        ),
        "",
    ]
    for label, key in (("p50", "p50"), ("p99", "p99")):
        ratio = ours["published"][key] / max(theirs["lateness"][key], 1e-3)
        lines.append(
            f"- Tactus / APScheduler, {label} (published vs function start): {ratio:,.2f}x"
        )
    lines.append(
        f"- fires made per second: Tactus {fired / size.seconds:,.0f}, APScheduler "
        f"{theirs['ran'] / size.seconds:,.0f} (of {size.freeruns:,} due)"
    )
    lines += [
        "",
        "Tactus missed = fires never recorded (with `catchup: latest`, the default, a pass "
        "that comes late fires only the newest due instant of each process) plus fires recorded "
        "`missed`. APScheduler missed = `EVENT_JOB_MISSED` (later than its default 1 s "
        "`misfire_grace_time`) plus runs that never happened; its skipped = "
        "`EVENT_JOB_MAX_INSTANCES`.",
        "",
        "**Freerun fire cost against unit-of-work history** (one `every 1` freerun, FakeClock, "
        "one fire per pass, its unit of work finished by a simulated worker before the next; "
        "the history is processed units of work of the same process, 86,400 being one day):",
        "",
        "| store | processed units of work | pass median |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {row['backend']} | {row['history']:,} | "
        + (
            f"{row['pass_ms']:.1f} ms |"
            if row["pass_ms"] is not None
            else f"fails: {row['error']} |"
        )
        for row in result["cost"]
    ]
    return lines


def render_catchup(catchup: dict[str, list[dict]]) -> list[str]:
    rows = catchup["simulated"]
    lines = [
        "**Catch-up rate** (one hourly process, every period missed; simulated workers finish "
        "each unit of work at once):",
        "",
        "| max_active | periods | total | periods per second | rounds | first pass |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {row['max_active']} | {row['processed']:,} | {row['seconds']:.1f} s | "
        f"{row['rate']:,.0f} | {row['rounds']:,} | {row['first_pass_s']:.2f} s |"
        for row in rows
    ]
    lines += [
        "",
        "A round is one pass plus the simulated workers' claim and finish of what it published "
        "(two writes per unit of work, on the same store, inside the total). The first pass "
        "materializes every missed period in one go.",
        "",
        "**Catch-up rate with the real parts** (the scheduler's loop and real worker processes "
        "on the store queue, SQLite file store; timed from the scheduler's start, whose first "
        "pass materializes the year, until every period is processed):",
        "",
        "| max_active | worker processes x slots | periods | total | periods per second |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {row['max_active']} | {row['workers']} x {row['concurrency']} | "
        f"{row['processed']:,} | {row['seconds']:.1f} s | {row['rate']:,.0f} |"
        for row in catchup["real"]
    ]
    lines += [
        "",
        "With `max_active` 1 each outcome's commit starts the next period (db.chain, "
        "[scheduler](scheduler.md#prompt-reactions)); with 100 the scheduler's passes start "
        "the periods, 100 at a time.",
    ]
    return lines


def ratios(passes: list[dict], cost: list[dict]) -> list[str]:
    """Longest history / no history, per store: the figure the benchmark is about."""
    lines = []
    series = [("managed pass, min", row, min(row["pass_s"])) for row in passes]
    series += [("managed pass, median", row, _median(row["pass_s"])) for row in passes]
    series += [("freerun fire pass, median", row, row["pass_ms"]) for row in cost]
    by_key: dict[tuple[str, str], dict[int, float]] = {}
    for label, row, value in series:
        if value is not None:
            history = row.get("days", row.get("history"))
            by_key.setdefault((label, row["backend"]), {})[history] = value
    for (label, backend), values in by_key.items():
        if len(values) == 2:
            none, most = values[min(values)], values[max(values)]
            lines.append(f"- {label}, {backend}: {most / none:.2f}")
    return lines


def render(passes, freerun, catchup, size, quiet: list[str], quick: bool) -> str:
    lines = [
        MARK_BEGIN,
        HEADER,
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {platform.node()} "
        f"({platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores){', --quick sizes' if quick else ''}. 1-minute load average "
        f"before each part (the run waits, up to 20 minutes in all, for it to drop below 1.5): "
        f"{'; '.join(quiet)}; {os.getloadavg()[0]:.2f} at the end.",
        "",
        *render_passes(passes, size),
        "",
        *render_freerun(freerun, size),
        "",
        *render_catchup(catchup),
        "",
        "Longest history / no history (1.00: the cost does not grow with history):",
        "",
        *ratios(passes, freerun["cost"]),
        MARK_END,
    ]
    return "\n".join(lines)


def write(path: Path, text: str) -> None:
    """Replace this benchmark's section of ``path`` (or append it)."""
    replace_section(path, text, MARK_BEGIN, MARK_END)
