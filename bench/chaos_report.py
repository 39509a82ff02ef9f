"""Rendering bench/chaos.py's results as the marked section of docs/reliability.md."""

from __future__ import annotations

import os
import platform
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chaos_faults import KINDS
from chaos_rig import DESCRIPTIONS
from doc_section import replace_section

MARK_BEGIN = "<!-- bench/chaos.py begin -->"
MARK_END = "<!-- bench/chaos.py end -->"
KIND_ORDER = ("freerun", "managed", "ad-hoc")


def machine() -> str:
    cpus = os.cpu_count()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        system = platform.freedesktop_os_release()["PRETTY_NAME"]
    except (OSError, KeyError):
        system = platform.system()
    return (
        f"{system} {platform.machine()}, Python {platform.python_version()}, {cpus} cores, "
        f"load average {load} at the end"
    )


def render_one(result: dict[str, Any]) -> list[str]:
    counts = result["counts"]
    name = result["installation"]
    done = result["faults"]
    verdict = (
        "**passed**" if not result["failures"] else "**FAILED**: " + ", ".join(result["failures"])
    )
    lines = [
        f"### {DESCRIPTIONS[name]} (`--installation {name}`)",
        "",
        f"Started {result['started']:%Y-%m-%d %H:%M} UTC, {result['minutes']:g} minutes of faults, "
        f"seed {result['seed']}: {verdict}.",
        "",
    ]
    by_kind = Counter(d.fault.kind for d in done)
    targets = Counter(
        f"{d.fault.kind}: {d.target}"
        for d in done
        if d.fault.kind == "store outage" or d.fault.kind == "broker outage"
    )
    errors = [f"{d.fault.kind} at {d.started} s: {d.error}" for d in done if d.error]
    lines += ["| fault | injected | detail |", "|---|---:|---|"]
    for kind in KINDS[name]:
        lengths = [d.fault.seconds for d in done if d.fault.kind == kind]
        detail = ""
        if kind.endswith("outage") and lengths:
            detail = (
                f"{min(lengths):.0f}-{max(lengths):.0f} s, {sum(lengths):.0f} s in all; "
                + ", ".join(
                    f"{n} {t.split(': ', 1)[1]}" for t, n in targets.items() if t.startswith(kind)
                )
            )
        elif kind == "worker SIGKILL":
            detail = ", ".join(sorted({d.target.split()[0] for d in done if d.fault.kind == kind}))
        elif kind == "poison" and counts.poison_injected:
            detail = f"{sum(counts.poison_injected.values())} messages"
        lines.append(f"| {kind} | {by_kind.get(kind, 0)} | {detail} |")
    lines.append(f"| **all** | **{len(done)}** | of {result['planned']} planned |")
    if errors:
        lines += ["", "Faults that could not be injected: " + "; ".join(errors) + "."]
    lines += [
        "",
        "| work | units of work | runs | retried | lost | ran twice |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    twice_by_kind, lost_by_kind = counts.twice_by_kind, counts.lost_by_kind
    for kind in KIND_ORDER:
        lines.append(
            f"| {kind} | {counts.units.get(kind, 0)} | {counts.runs.get(kind, 0)} | "
            f"{counts.retried.get(kind, 0)} | {lost_by_kind.get(kind, 0)} | "
            f"{twice_by_kind.get(kind, 0)} |"
        )
    total = sum(counts.units.values())
    lines.append(
        f"| **all** | **{total}** | **{sum(counts.runs.values())}** | "
        f"**{sum(counts.retried.values())}** | **{len(counts.lost)}** | **{len(counts.twice)}** |"
    )
    case2 = [t for t in counts.twice if t.case == "case 2"]
    orphan = [t for t in counts.twice if t.case == "case 2 (orphan)"]
    dead = sum(counts.dead_lettered.values())
    injected = sum(counts.poison_injected.values())
    exits = len(counts.worker_exits)
    kills = sum(1 for d in done if d.fault.kind == "worker SIGKILL" and not d.error)
    daemons_alive = "all" if not counts.dead_daemons else "dead: " + ", ".join(counts.dead_daemons)
    lines += [
        "",
        f"- **Lost: {len(counts.lost)} units of work, {len(counts.periods_unprocessed)} of "
        f"{counts.periods_closed} closed managed periods not processed**"
        + (f" ({'; '.join(counts.periods_unprocessed[:5])})" if counts.periods_unprocessed else "")
        + (
            f"; tasks answered but not stored: {result['tasks_not_stored']}"
            if result["tasks_not_stored"]
            else ""
        )
        + ".",
        f"- **Ran twice: {len(counts.twice)}**, of which {len(case2)} at-least-once case 2 "
        "(a worker SIGKILLed after its command ended, before the outcome was stored), "
        f"{len(orphan)} case 2 with the command ending after its worker's SIGKILL (an orphan "
        "that ran to its end before the next worker ended it), and "
        f"**{len(counts.unnamed_twice)} outside the named cases**.",
        f"- Attempts spent on faults: {sum(counts.retried.values())} units of work retried; "
        "failed attempts by reason: "
        + (
            "; ".join(f"{n} × {reason}" for reason, n in counts.retry_reasons.most_common(6))
            or "none"
        )
        + ".",
        f"- Daemons alive at the end: {daemons_alive} (scheduler, supervisor, mx); exits nobody "
        f"caused: {len(result['unexpected_exits'])}; workers running: "
        f"{counts.workers_expected - _missing(counts, result)} of {counts.workers_expected}; "
        f"worker exits seen by the supervisor: {exits} (worker SIGKILLs: {kills}).",
        f"- Poison: {injected} messages published, {dead} in the dead-letter queues.",
        "- Ad-hoc submissions answered: "
        + ", ".join(f"{n} × {status}" for status, n in sorted(result["tasks"].items()))
        + ".",
        f"- Drain: {_drain(result)}.",
    ]
    if result["log_lines"]:
        lines.append(
            "- Log lines during an outage, the most in one outage (its length): "
            + ", ".join(
                f"{name} {n} ({seconds:.0f} s)"
                for name, (n, seconds) in sorted(result["log_lines"].items())
            )
            + "."
        )
    if counts.twice:
        shown = "" if len(counts.twice) <= 20 else f" (the first 20 of {len(counts.twice)})"
        lines += ["", f"Runs that should not have happened{shown}:", ""]
        lines += [
            f"- `{t.uow}` ({t.process}): {t.detail}; {t.case}"
            + (f", worker {t.worker} SIGKILLed" if t.worker else "")
            + (f"; {t.failed}" if t.failed else "")
            for t in counts.twice[:20]
        ]
    if counts.lost:
        shown = "" if len(counts.lost) <= 20 else f" (the first 20 of {len(counts.lost)})"
        lines += ["", f"Lost{shown}:", ""] + [f"- `{line[:160]}`" for line in counts.lost[:20]]
    if result["unexpected_exits"]:
        lines += ["", "Exits nobody caused:", ""]
        lines += ["```", *(e for e in result["unexpected_exits"][:5]), "```"]
    lines.append("")
    return lines


def _missing(counts: Any, result: dict) -> int:
    workers = result["work"].workers()
    return sum(workers[p] for p in counts.workers_missing)


def _drain(result: dict) -> str:
    if result["drained"] is None:
        return "NOT drained in time; left: " + "; ".join(result["left"][:10])
    return f"{result['drained']:.0f} s until every unit of work was terminal and every closed period processed"


def render(results: list[dict], skipped: dict[str, str], seed: int, minutes: float) -> str:
    lines = [
        MARK_BEGIN,
        "## Results",
        "",
        "```sh",
        f".venv/bin/python bench/chaos.py --seed {seed} --minutes {minutes:g} "
        "--write docs/reliability.md",
        "```",
        "",
        f"Run on {datetime.now(UTC):%Y-%m-%d}, {machine()}.",
        "",
    ]
    for result in results:
        lines += render_one(result)
    for name, reason in skipped.items():
        lines += [f"### {DESCRIPTIONS[name]}", "", f"Skipped: {reason}.", ""]
    lines.append(MARK_END)
    return "\n".join(lines)


def write(path: Path, text: str) -> None:
    replace_section(path, text, MARK_BEGIN, MARK_END)
