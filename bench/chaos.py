"""Chaos run (issue 12): random faults over a live installation for ``--minutes`` (10), then count
what was lost, what ran twice and which daemons died. Not a timed test: run it by hand.

    .venv/bin/python bench/chaos.py [--minutes 10] [--seed N] [--installation pg|embedded|both]
                                    [--drain 600] [--keep] [--write docs/reliability.md]

On two installations, one after the other (``--installation both``, the default):

- ``pg``: a private PostgreSQL cluster (initdb in a temporary folder) and the shared RabbitMQ, each
  reached by the daemons through a TCP proxy this bench owns (``tests/faults/``);
- ``embedded``: the default, a SQLite file and the store queue (``broker_uri = store``).

Each runs real daemons (``launch.py --start scheduler|supervisor|mx --console``; the supervisor
starts the workers) on this workload, every command the counting command of the fault suite
(``tests/faults/count_run.py``: a line when it starts and one when it ends, in a runs file):

- freerun ``flow`` every 3 s running 2 s (so some runs are mid-way at every fault) and ``tick``
  every 2 s running 0.2 s, 2 workers each, up to 3 units in flight;
- managed ``hourly`` under ``daily`` in a tree, from midnight two days back: a catch-up backlog
  of 48+ hourly periods, 2 at a time, each command long enough that the backlog lasts most of
  the run (80 %, with commands of at most 12 s: 70 % of 10 minutes at 70 periods); a day's
  daily job runs once its 24 hourly children are done; 2 workers each;
- ad-hoc tasks (``POST /api/v1/tasks``, 5 retries) every 8-25 s, run by the built-in ``adhoc``.

Every process retries a failed attempt 5 times (first after 1 s). Faults, one at a time, 10-40 s
apart, drawn from ``--seed`` (printed first; random by default; see ``chaos_faults.py``): SIGKILL
of the scheduler, of a random worker, of the supervisor (an operator's init system starts a
killed scheduler or supervisor again 0.5-5 s later; the supervisor restarts workers itself);
store outages of 1-30 s (pg: the proxy cut, or 30 % of the time the private server crashed with
``pg_ctl stop -m immediate`` and started again; embedded: another connection holding
``BEGIN EXCLUSIVE`` on the SQLite file, the stall a backup tool or a long transaction makes);
broker outages of 1-30 s (pg only: the RabbitMQ proxy cut; on embedded the store is the broker);
poison (deeply nested JSON, invalid UTF-8, an object of wrong types, an unknown unit of work)
published onto a process queue and onto the status queue.

Then no more faults: the run waits (``--drain`` seconds at most) until every unit of work created
before that instant is terminal and every closed managed period is processed, and counts
(``chaos_count.py``). Exit status 1 if a unit or period was lost, a command ran twice outside
docs/faults.md's named at-least-once cases, a daemon is dead at the end or exited on its own,
a worker is missing, poison was not dead-lettered, the drain ran past its deadline, or an
installation could not run here (no PostgreSQL server binaries, no RabbitMQ).

Caveats: a 2-core machine shared with other work; one box; faults never overlap; heartbeats
every second and a worker lost after 3 missed, outage back-off capped at 2 s (the fault suite's
settings, so that a run of minutes sees many recoveries); the seed replays the schedule of
faults and tasks, not the daemons' timing, so a replay hits other units of work.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chaos_count import count, drain, log_lines  # noqa: E402
from chaos_faults import Init, Injector, describe, log, schedule  # noqa: E402
from chaos_report import render, write  # noqa: E402
from chaos_rig import INSTALLATIONS, RETRIES, Rig, problem, rig, task_command  # noqa: E402

from tests.faults.counting import units_of  # noqa: E402

#: Seconds between two ad-hoc tasks (uniform).
TASK_EVERY = (8.0, 25.0)


class Submitter:
    """Submits ad-hoc tasks through the REST API at seeded intervals, in a thread; counts the
    answers (201, 202 while the broker is away, 503 while the store is, no answer)."""

    def __init__(self, rig_: Rig, seed: int) -> None:
        self.rig = rig_
        self.rng = random.Random(f"{seed}/{rig_.name}/tasks")
        self.answers: Counter[str] = Counter()
        self.ids: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tasks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(60)

    def submit(self) -> None:
        body = {"command": task_command(self.rig.runs), "retries": RETRIES}
        try:
            status, answer = self.rig.inst.api("POST", "/tasks", body, timeout=15)
        except Exception as exc:  # noqa: BLE001 - a timeout, a reset: the answer that was not
            self.answers[f"no answer ({type(exc).__name__})"] += 1
            return
        self.answers[str(status)] += 1
        if status in (201, 202) and isinstance(answer, dict):
            self.ids.append(answer.get("task_id") or answer.get("id"))

    def _run(self) -> None:
        while not self._stop.wait(self.rng.uniform(*TASK_EVERY)):
            self.submit()


def run_one(name: str, seed: int, minutes: float, drain_deadline: float, keep: bool) -> dict:
    """One installation: start it, inject, drain, count; the result for the report."""
    faults = schedule(seed, name, minutes * 60)
    log(f"{name}: {len(faults)} faults planned: {Counter(f.kind for f in faults)}")
    with rig(name, minutes, keep=keep) as r:
        log(
            f"{name}: {r.work.hourly_periods} hourly periods behind, "
            f"{r.work.hourly_seconds} s each; folder {r.root}"
        )
        r.inst.register_processes(*r.work.entries)
        r.inst.start_all()
        for process, workers in r.work.workers().items():
            if process != "adhoc":
                r.inst.wait_workers(process, workers, 120)
        submitter = Submitter(r, seed)
        submitter.submit()  # the first task: the adhoc worker runs from then on
        r.inst.wait_workers("adhoc", 1, 120)
        started = datetime.now(UTC)
        init = Init(r)
        injector = Injector(r, faults, init)
        init.start()
        try:
            injector.start()
            submitter.start()
            end = time.monotonic() + minutes * 60
            while time.monotonic() < end:
                time.sleep(min(30.0, max(0.0, end - time.monotonic())))
                runs = len(r.runs.starts())
                log(f"{name}: {len(injector.done)} faults injected, {runs} runs")
        finally:
            # (every outage is undone before the drain, or before the installation stops)
            submitter.stop()
            injector.stop()
        cutoff = datetime.now(UTC)
        log(f"{name}: injection over; draining (at most {drain_deadline:.0f} s)")
        try:
            drained, left = drain(r, cutoff, drain_deadline)
        finally:
            # the init system watches through the drain, and not while the installation stops
            init.stop()
        log(f"{name}: drained in {drained} s" if drained is not None else f"left: {left[:20]}")
        counts = count(r, cutoff, injector.done, started)
        stored = {u.id for u in _adhoc_units(r)}
        not_stored = [i for i in submitter.ids if i not in stored]
        result = {
            "installation": name,
            "seed": seed,
            "minutes": minutes,
            "started": started,
            "faults": injector.done,
            "planned": len(faults),
            "counts": counts,
            "drained": drained,
            "left": left,
            "tasks": dict(submitter.answers),
            "tasks_not_stored": not_stored,
            "unexpected_exits": list(init.unexpected),
            "failed_starts": list(init.failed_starts),
            "log_lines": log_lines(r, injector.done),
            "work": r.work,
            "folder": str(r.root),
        }
        _save(r, result, faults)
        return result


def _adhoc_units(r: Rig) -> list[Any]:
    return units_of(r.inst.store, ["adhoc"])


def _save(r: Rig, result: dict, faults: list) -> None:
    """The evidence (every id behind a count, every fault) beside the installation's logs."""
    counts = result["counts"]
    evidence = {
        "seed": result["seed"],
        "planned": describe(faults),
        "injected": [
            {
                "kind": d.fault.kind,
                "at": d.started,
                "seconds": d.fault.seconds,
                "target": d.target,
                "error": d.error,
            }
            for d in result["faults"]
        ],
        "counts": counts.details,
        "unexpected_exits": result["unexpected_exits"],
        "worker_exits": counts.worker_exits,
        "left": result["left"],
    }
    (r.root / "chaos.json").write_text(json.dumps(evidence, indent=1, default=str))


def failures(result: dict) -> list[str]:
    """What makes the run fail (exit status 1)."""
    counts = result["counts"]
    found = []
    if counts.lost or counts.periods_unprocessed or result["tasks_not_stored"]:
        found.append("lost")
    if counts.unnamed_twice:
        found.append("ran twice outside the named cases")
    if counts.dead_daemons or result["unexpected_exits"] or result["failed_starts"]:
        found.append("a daemon died")
    if counts.workers_missing:
        found.append("workers missing")
    if any(counts.dead_lettered.get(q, 0) < n for q, n in counts.poison_injected.items()):
        found.append("poison not dead-lettered")
    if result["drained"] is None:
        found.append("did not drain")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="of faults (default 10)")
    parser.add_argument("--seed", type=int, help="replays a run's faults (default: random)")
    parser.add_argument("--installation", choices=[*INSTALLATIONS, "both"], default="both")
    parser.add_argument(
        "--drain", type=float, default=600.0, help="seconds to wait for the work to settle"
    )
    parser.add_argument("--keep", action="store_true", help="keep the installation folders")
    parser.add_argument("--write", help="replace the results section of this Markdown file")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else secrets.randbelow(1_000_000)
    print(f"chaos seed {seed}", flush=True)
    names = INSTALLATIONS if args.installation == "both" else (args.installation,)
    results, skipped = [], {}
    for name in names:
        reason = problem(name)
        if reason:
            skipped[name] = reason
            log(f"{name}: skipped: {reason}")
            continue
        results.append(run_one(name, seed, args.minutes, args.drain, args.keep))
    for result in results:
        result["failures"] = failures(result)
    text = render(results, skipped, seed, args.minutes)
    print(text)
    if args.write:
        write(Path(args.write), text)
    return 1 if any(r["failures"] for r in results) or skipped else 0


if __name__ == "__main__":
    sys.exit(main())
