"""Store and trigger benchmark (issue: foundation). Not a timed test: run it by hand.

    .venv/bin/python bench/store.py [--n 2000] [--write docs/benchmarks.md]

For every backend reachable here (SQLite file always; PostgreSQL and MariaDB on 127.0.0.1 with
the test role of scripts/test-services; MongoDB-wire through a private nx-27017 server), one
client measures:

- create UOW: ``create_uow`` of N distinct units of work;
- claim (CAS): ``transition_uow`` requested -> in_progress with the history row, N times;
- job update (CAS): ``transition_job`` embryo -> in_progress with the history row, N times;
- ensure jobs: ``ensure_jobs`` of N hourly jobs in one call (the ledger's catch-up path).

and, with no store, the cost of parsing and evaluating 10,000 triggers of mixed kinds and zones.

Caveats: single client, loopback, 2-core machine shared with the servers; each database is new
and small. nx-27017 is a pure-Python stand-in for MongoDB, far slower than mongod: its figures
show the backend works, not how fast MongoDB is.
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from doc_section import replace_section  # noqa: E402

from db import open_store  # noqa: E402
from db.ids import new_id  # noqa: E402
from db.models import Event, Job, UnitOfWork  # noqa: E402
from db.states import JobState, Qualifier, UowKind, UowState  # noqa: E402
from db.triggers import parse_trigger  # noqa: E402
from tests import servers  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MARK_BEGIN = "<!-- bench/store.py begin -->"
MARK_END = "<!-- bench/store.py end -->"


def _rate(n: int, fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def _event(entity: str, key: str, trigger: str, src: str, dst: str) -> Event:
    return Event(
        entity=entity,
        entity_id=key,
        at=T0,
        trigger=trigger,
        from_state=src,
        to_state=dst,
        actor="bench",
    )


def bench_backend(uri: str, n: int) -> dict[str, float]:
    store = open_store(uri)
    store.init_schema()
    try:
        uows = [
            UnitOfWork(
                id=new_id(),
                process="bench",
                kind=UowKind.MANAGED,
                start_timeperiod=(T0 + timedelta(hours=i)).strftime("%Y%m%d%H"),
                end_timeperiod=(T0 + timedelta(hours=i + 1)).strftime("%Y%m%d%H"),
                run_key="0",
                created_at=T0,
                updated_at=T0,
            )
            for i in range(n)
        ]
        jobs = [
            Job(
                id=new_id(),
                process="bench",
                qualifier=Qualifier.HOURLY,
                timeperiod=u.start_timeperiod,
                created_at=T0,
                updated_at=T0,
            )
            for u in uows
        ]
        result = {
            "create UOW": _rate(n, lambda: [store.create_uow(u) for u in uows]),
            "claim (CAS)": _rate(
                n,
                lambda: [
                    store.transition_uow(
                        u.id,
                        expected_state=UowState.REQUESTED,
                        new_state=UowState.IN_PROGRESS,
                        changes={"worker_id": "w1", "started_at": T0},
                        event=_event("uow", u.id, "claim", "requested", "in_progress"),
                    )
                    for u in uows
                ],
            ),
            "ensure jobs (bulk)": _rate(n, lambda: store.ensure_jobs(jobs)),
            "job update (CAS)": _rate(
                n,
                lambda: [
                    store.transition_job(
                        j.process,
                        j.timeperiod,
                        expected_state=JobState.EMBRYO,
                        new_state=JobState.IN_PROGRESS,
                        changes={"uow_id": "x"},
                        event=_event("job", j.key, "start", "embryo", "in_progress"),
                    )
                    for j in jobs
                ],
            ),
        }
        return result
    finally:
        store.close()


def trigger_texts(n: int, seed: int = 7) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    zones = ["UTC", "America/New_York", "Europe/Berlin", "Asia/Kolkata", "Australia/Lord_Howe"]
    kinds = [
        lambda: f"{rng.randrange(60)} {rng.randrange(24)} * * *",
        lambda: f"*/{rng.choice([1, 5, 10, 15, 30])} * * * *",
        lambda: f"0 {rng.randrange(24)} * * {rng.choice(['1-5', '0,6', '*'])}",
        lambda: f"{rng.randrange(60)} */2 {rng.randrange(1, 28)} * *",
        lambda: f"every {rng.choice([30, 60, 300, 3600, 5400])}",
        lambda: f"at {rng.randrange(24):02d}:{rng.randrange(60):02d}",
        lambda: f"at Mon-Fri {rng.randrange(24):02d}:30",
    ]
    return [(rng.choice(kinds)(), rng.choice(zones)) for _ in range(n)]


def bench_triggers(n: int = 10_000) -> dict[str, float]:
    texts = trigger_texts(n)
    start = time.perf_counter()
    triggers = [parse_trigger(text, zone) for text, zone in texts]
    parse_s = time.perf_counter() - start
    after = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)
    start = time.perf_counter()
    for trigger in triggers:
        trigger.next_fire(after)
    next_s = time.perf_counter() - start
    return {
        "parse, total s": parse_s,
        "next_fire, total s": next_s,
        "next_fire, µs each": next_s / n * 1e6,
    }


def reachable_backends(tmp: Path) -> list[tuple[str, str, Callable[[], None]]]:
    """(name, uri, cleanup) for each backend this machine can serve now."""
    found = [("sqlite (file, WAL)", f"sqlite:///{tmp / 'bench.db'}", lambda: None)]
    for server in (servers.POSTGRES, servers.MARIADB):
        problem = server.available()
        if problem:
            print(f"skipped {server.name}: {problem}", file=sys.stderr)
            continue
        database, uri = server.create_database()
        found.append((server.name, uri, lambda s=server, d=database: s.drop_database(d)))
    nx = servers.NxServer()
    nx.start()
    if nx.problem:
        print(f"skipped mongodb: {nx.problem}", file=sys.stderr)
    else:
        found.append(("mongodb (nx-27017)", f"{nx.uri}bench_{new_id()[-8:]}", nx.stop))
    return found


def render(store_rows: dict[str, dict[str, float]], trig: dict[str, float], n: int) -> str:
    cols = ["create UOW", "claim (CAS)", "job update (CAS)", "ensure jobs (bulk)"]
    lines = [
        MARK_BEGIN,
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {platform.node()} "
        f"({platform.python_implementation()} {platform.python_version()}), N = {n}, "
        "one client, operations per second (nx-27017 rows: N = 500):",
        "",
        "| backend | " + " | ".join(cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for name, row in store_rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[c]:,.0f}" for c in cols) + " |")
    lines += [
        "",
        f"Triggers: parsing 10,000 mixed triggers took {trig['parse, total s']:.2f} s; "
        f"one `next_fire` each took {trig['next_fire, total s']:.2f} s in all "
        f"({trig['next_fire, µs each']:.0f} µs per trigger).",
        MARK_END,
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="operations per measurement")
    parser.add_argument("--write", help="replace the marked section of this Markdown file")
    args = parser.parse_args()
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, uri, cleanup in reachable_backends(Path(tmp)):
            n = args.n if "nx-27017" not in name else min(args.n, 500)
            try:
                rows[name] = bench_backend(uri, n)
                print(f"{name}: {rows[name]}", file=sys.stderr)
            finally:
                cleanup()
    trig = bench_triggers()
    text = render(rows, trig, args.n)
    print(text)
    if args.write:
        replace_section(Path(args.write), text, MARK_BEGIN, MARK_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
