"""Scheduler benchmark (issue 4). Not a timed test: run it by hand.

    .venv/bin/python bench/scheduler.py [--quick] [--write docs/benchmarks.md]
    .venv/bin/python bench/scheduler.py --only pass [--days 0] [--profile pass.prof]
    .venv/bin/python bench/scheduler.py --only freerun|worker-start|catch-up [--no-wait]

``--only pass`` runs part 1 alone and prints its table (``--days 0``: no long history, and
``--no-wait``: no wait for a quiet machine, for quick iterations); ``--only freerun`` runs
part 2 alone, ``--only worker-start`` just its worker-start row (an A/B of the store queue's
latency across processes); ``--profile FILE`` also runs one more pass per store and history under
cProfile and writes its statistics to FILE with the store and history in the name
(``pass-sqlite-0d.prof``; read them with ``python -m pstats``).

1. Pass time and memory against history: 1,000 managed daily processes on a store holding no
   history and on one holding 5 years of it (1,826 processed daily jobs per process, ~1.8M
   jobs, inserted with ``ensure_jobs``). A FakeClock moves one day per pass, so every process
   is due each pass; in steady state a pass materializes today's job, completes one job and
   starts one unit of work per process (simulated workers finish them between passes,
   untimed). Timed: ``run_pass`` alone, in rounds that alternate the two stores, each round in
   a fresh interpreter. Memory: its RSS (psutil) and the tracemalloc peak of one extra pass.
   SQLite file always; PostgreSQL when the test role of tests/servers.py can log in.
2. Freerun fire lateness: 1,000 freerun processes ``every 1`` run by the real scheduler loop
   (SystemClock, ``start()``/``stop()``) over 20 fire instants on a new SQLite file store,
   no-op broker, no workers (``max_active`` 1,000, so in-flight units of work never cause a
   skip). Lateness = publish time - ``scheduled_at`` (and the fire record's ``recorded_at`` -
   ``scheduled_at``). In the same run APScheduler 3 (latest 3.x, in bench/.venv-apscheduler,
   created when missing) runs 1,000 interval jobs every second doing nothing; lateness = the
   function's start - the event's ``scheduled_run_time``. Also: the same 1,000 freeruns
   publishing to RabbitMQ (``TACTUS_BENCH_AMQP``; lateness = when the broker write that carried
   the fire returned), and worker start: 4 freeruns ``every 1``, each with its own worker
   process (``python -m workers``, a no-op Python class) on the store queue; lateness = the
   unit of work's ``started_at`` - ``scheduled_at``.
   2b. Fire cost against history: one freerun ``every 1`` with no processed units of work
   behind it, then with a day of them (86,400), FakeClock; median pass time.
3. Catch-up rate: one hourly process a year behind (8,760 periods), ``max_active`` 100 and 1;
   each round is a pass, then simulated workers finish every published unit of work at once and
   wake the scheduler. FakeClock fixed just after the year. Then the same year with the real
   parts: the scheduler's loop (system clock, status listener) and real worker processes
   (``python -m workers``, the no-op Python class; 4 processes x 4 slots for ``max_active``
   100, 1 x 1 for ``max_active`` 1) on the store queue, timed from the scheduler's start
   until every period is processed.

Caveats: a 2-core machine shared with the database servers (and with other work: the run
waits for a low load and the doc says what it found); one scheduler, loopback. The 5-year
history is jobs only: a real store would also hold their units of work and events, which the
managed pass reads by id or by state, never by process (part 2b shows what a history of units
of work does to the freerun path, which does read them by process). APScheduler keeps no
durable fire identity and does no store write per run (MemoryJobStore); Tactus records the
fire, creates the unit of work with its history event and links the two, for all the fires of
a pass together (3 write transactions a pass), before publishing, which is what makes a fire
exactly-once across restarts. A no-op broker removes broker cost from the freerun and catch-up
figures; simulated workers write to the same store as the scheduler.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import scheduler_catchup  # noqa: E402
import scheduler_freerun  # noqa: E402
import scheduler_pass  # noqa: E402
from quiet import Quiet  # noqa: E402
from scheduler_kit import isolated  # noqa: E402
from scheduler_report import (  # noqa: E402
    ratios,
    render,
    render_catchup,
    render_freerun,
    render_passes,
    render_worker_start,
    write,
)

from tests import servers  # noqa: E402

#: Freeruns in the worker-start measurement, each with its own worker process.
WORKER_START_PROCESSES = 4
#: The RabbitMQ of the published-to-a-broker measurement (skipped when nothing listens).
AMQP_URI = os.environ.get("TACTUS_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/")


@dataclass(frozen=True)
class Sizes:
    processes: int = 1000
    days: int = 1826
    warmup: int = 2
    #: Rounds, each running ``passes`` timed passes on each history size in turn.
    rounds: int = 3
    passes: int = 3
    freeruns: int = 1000
    seconds: int = 20
    hours: int = 8760
    #: Processed units of work behind one freerun (a day of ``every 1``).
    uow_history: int = 86_400


QUICK = Sizes(
    processes=50, days=60, rounds=2, passes=2, freeruns=100, seconds=4, hours=240, uow_history=2000
)


def log(text: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {text}", file=sys.stderr, flush=True)


def backends(tmp: Path):
    """(name, make_uri, cleanup) for SQLite and, when reachable, PostgreSQL."""
    yield "sqlite (file, WAL)", lambda tag: f"sqlite:///{tmp / f'{tag}.db'}", lambda: None
    problem = servers.POSTGRES.available()
    if problem:
        log(f"skipped postgresql: {problem}")
        return
    made: list[str] = []

    def make(tag: str) -> str:
        database, uri = servers.POSTGRES.create_database()
        made.append(database)
        return uri

    def cleanup() -> None:
        for database in made:
            servers.POSTGRES.drop_database(database)

    yield "postgresql", make, cleanup


def _profile_path(profile: str | None, backend: str, days: int) -> str | None:
    """``pass.prof`` -> ``pass-sqlite-0d.prof`` (one file per store and history)."""
    if not profile:
        return None
    path = Path(profile)
    return str(path.with_name(f"{path.stem}-{backend.split()[0]}-{days}d{path.suffix}"))


def bench_passes(tmp: Path, size: Sizes, profile: str | None = None) -> list[dict]:
    """Both history sizes per store, measured in alternate rounds so that a change in the
    machine's load hits both alike. With ``profile``, the last round of each also profiles
    one more pass (:func:`_profile_path` names the file)."""
    rows = []
    histories = sorted({0, size.days})
    for name, make_uri, cleanup in backends(tmp):
        try:
            uris, results, day = {}, {}, {}
            for days in histories:
                uris[days], results[days], day[days] = make_uri(f"pass_{days}"), [], 0
                log(f"{name}: filling {size.processes} processes x {days} days of history")
                built = isolated(scheduler_pass.build, uris[days], size.processes, days)
                log(f"{name}: {built['jobs']:,} jobs in {built['fill_s']:.0f} s")
                rows.append({"backend": name, "days": days, **built})
            for round_ in range(size.rounds):
                warmup = size.warmup if round_ == 0 else 1  # a fresh interpreter warms up
                for days in histories:
                    last = round_ == size.rounds - 1
                    prof = _profile_path(profile, name, days) if last else None
                    args = (uris[days], day[days], warmup, size.passes, prof)
                    results[days].append(isolated(scheduler_pass.measure, *args))
                    day[days] += warmup + size.passes + 1 + (prof is not None)
                    log(f"{name}, {days} days: passes {results[days][-1]['pass_s']}")
                    if prof:
                        log(f"{name}, {days} days: profile of one pass in {prof}")
            for row in rows[-len(histories) :]:
                found = results[row["days"]]
                row["pass_s"] = [t for r in found for t in r["pass_s"]]
                for key in ("rss_first_mib", "rss_growth_mib", "tracemalloc_peak_mib"):
                    row[key] = max(r[key] for r in found)
        finally:
            cleanup()
    return rows


def bench_freerun(tmp: Path, size: Sizes) -> dict:
    uri = f"sqlite:///{tmp / 'freerun.db'}"
    log(f"freerun: Tactus, {size.freeruns} x every 1 for {size.seconds:.0f} s")
    ours = isolated(scheduler_freerun.tactus, uri, size.freeruns, size.seconds)
    log(f"freerun: Tactus {ours}")
    log("freerun: APScheduler 3")
    theirs = scheduler_freerun.apscheduler(size.freeruns, size.seconds)
    log(f"freerun: APScheduler {theirs}")
    rabbit = None
    if servers.port_open("127.0.0.1", 5672):
        log(f"freerun: Tactus publishing to RabbitMQ ({AMQP_URI})")
        rabbit = isolated(
            scheduler_freerun.tactus_broker,
            f"sqlite:///{tmp / 'freerun-rabbit.db'}",
            AMQP_URI,
            size.freeruns,
            size.seconds,
        )
        log(f"freerun: Tactus, RabbitMQ {rabbit}")
    started = bench_worker_start(tmp, size)
    cost = []
    for name, make_uri, cleanup in backends(tmp):
        try:
            error = None
            for history in (0, size.uow_history):
                log(f"freerun fire cost: {name}, {history:,} processed units of work")
                row = {"history": history, "pass_ms": None, "error": error}
                if error is None:  # no point filling a history when firing fails anyway
                    try:
                        uri = make_uri(f"cost_{history}")
                        row = isolated(scheduler_freerun.fire_cost, uri, history)
                    except RuntimeError as exc:
                        error = row["error"] = str(exc)
                cost.append({"backend": name, **row})
                log(f"freerun fire cost: {cost[-1]}")
        finally:
            cleanup()
    return {
        "tactus": ours,
        "apscheduler": theirs,
        "rabbitmq": rabbit,
        "workers": started,
        "cost": cost,
    }


def bench_worker_start(tmp: Path, size: Sizes) -> dict:
    log(f"freerun: worker start, {WORKER_START_PROCESSES} freeruns, store queue")
    started = isolated(
        scheduler_freerun.tactus_workers,
        f"sqlite:///{tmp / 'freerun-workers.db'}",
        WORKER_START_PROCESSES,
        size.seconds,
        tmp,
    )
    log(f"freerun: worker start {started}")
    return started


#: Real worker processes x slots in the catch-up with real parts, by max_active.
CATCHUP_WORKERS = {100: (4, 4), 1: (1, 1)}


def bench_catchup(tmp: Path, size: Sizes) -> dict[str, list[dict]]:
    simulated, real = [], []
    for max_active in (100, 1):
        uri = f"sqlite:///{tmp / f'catchup_{max_active}.db'}"
        log(f"catch-up: {size.hours} hours, max_active {max_active}")
        simulated.append(isolated(scheduler_catchup.run, uri, size.hours, max_active))
        log(f"catch-up: {simulated[-1]}")
    for max_active, (workers, slots) in CATCHUP_WORKERS.items():
        uri = f"sqlite:///{tmp / f'catchup_real_{max_active}.db'}"
        log(f"catch-up, real workers: {size.hours} hours, max_active {max_active}")
        real.append(
            isolated(
                scheduler_catchup.run_workers, uri, size.hours, max_active, workers, slots, tmp
            )
        )
        log(f"catch-up, real workers: {real[-1]}")
    return {"simulated": simulated, "real": real}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--write", help="replace the marked section of this Markdown file")
    parser.add_argument(
        "--only",
        choices=["pass", "freerun", "worker-start", "catch-up"],
        help="run this part alone and print its table (no --write); worker-start: the "
        "freerun part's worker-start row alone",
    )
    parser.add_argument("--days", type=int, help="days of history of the long history (pass)")
    parser.add_argument("--rounds", type=int, help="rounds of timed passes (pass)")
    parser.add_argument("--profile", help="cProfile one more pass per store and history here")
    parser.add_argument(
        "--no-wait", action="store_true", help="do not wait for a quiet machine (iterating)"
    )
    args = parser.parse_args()
    size = QUICK if args.quick else Sizes()
    if args.days is not None:
        size = dataclasses.replace(size, days=args.days)
    if args.rounds is not None:
        size = dataclasses.replace(size, rounds=args.rounds)
    quiet = Quiet(budget_s=1200, enabled=not (args.quick or args.no_wait))
    if args.only:
        if args.write:
            parser.error("--write needs the whole run, not --only")
        with tempfile.TemporaryDirectory(prefix="bench-scheduler-") as tmp:
            quiet.wait(args.only)
            if args.only == "pass":
                passes = bench_passes(Path(tmp), size, args.profile)
                table = [*render_passes(passes, size), "", *ratios(passes, [])]
            elif args.only == "freerun":
                table = render_freerun(bench_freerun(Path(tmp), size), size)
            elif args.only == "catch-up":
                table = render_catchup(bench_catchup(Path(tmp), size))
            else:
                table = render_worker_start(bench_worker_start(Path(tmp), size), size)
        load = f"Load: {'; '.join(quiet.notes)}; {os.getloadavg()[0]:.2f} at the end."
        print("\n".join([load, "", *table]))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-scheduler-") as tmp:
        quiet.wait("pass")
        passes = bench_passes(Path(tmp), size, args.profile)
        quiet.wait("freerun")
        freerun = bench_freerun(Path(tmp), size)
        quiet.wait("catch-up")
        catchup = bench_catchup(Path(tmp), size)
    text = render(passes, freerun, catchup, size, quiet.notes, args.quick)
    print(text)
    if args.write:
        write(Path(args.write), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
