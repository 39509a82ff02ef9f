"""mx latency on a big history (issue: bench/mx). Not a timed test: run it by hand.

    .venv/bin/python bench/mx.py [--backend sqlite|postgresql|all] [--n 200]
                                 [--write docs/benchmarks.md] [--keep] [--quick]

1. A store holding 1,000 registered processes and 1,000,000 units of work with their jobs and
   recent history (``bench/mx_shape.py`` and ``bench/mx_history.py`` say exactly what;
   ``bench/mx_data.py`` bulk-inserts it). The SQLite file is built once and
   cached in ``bench/.cache/`` under the generator's parameters; PostgreSQL gets the same rows,
   copied from that file into a database ``tactus_test_benchmx`` that is dropped at the end
   (``--keep`` keeps it, and a later ``--keep`` run reuses it).
2. The real mx application (``mx.app.create_app`` on the real store and the embedded queue,
   clock fixed at the end of the history) served by werkzeug's threaded server on 127.0.0.1, as
   ``launch.py --start mx`` serves it, and one keep-alive HTTP client with a viewer's bearer
   token. After a warm-up, ``--n`` rounds; each round requests every route once, in turn, so
   that a change in the machine's load hits all routes alike. Routes with a parameter rotate
   over a few targets (processes, jobs with several units of work and events, units of work).
   A page route that answers 404 (not built yet) is skipped with a note.
3. p50, p95 and max per route and backend, against the target p95 < 300 ms.

Caveats: a 2-core machine shared with the database servers (and other work: the load average
is printed); client and server in one interpreter (the client waits in ``recv`` while the
server works, so they hardly compete); one client, so no concurrency; the operating system's
file cache holds the whole store, as it would on a server with enough memory.
"""

from __future__ import annotations

import argparse
import http.client
import logging
import os
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mx_data  # noqa: E402
import mx_shape  # noqa: E402
from mx_report import Route, render, table, write  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from db import open_store  # noqa: E402
from db.backends.base import encode_cursor  # noqa: E402
from db.backends.sql.schema import events, jobs, uows  # noqa: E402
from db.clock import FakeClock  # noqa: E402
from db.credentials import CredentialKind, Role  # noqa: E402
from mq import open_broker  # noqa: E402
from mx.app import create_app  # noqa: E402
from mx.services.credentials import create_token  # noqa: E402
from settings import load_settings  # noqa: E402
from tests import servers  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache"
PG_DATABASE = "tactus_test_benchmx"
TOKEN_NAME = "bench_mx"


#: 1-minute load average under which the machine counts as quiet.
QUIET_LOAD = 1.5


def log(text: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {text}", file=sys.stderr, flush=True)


def wait_for_quiet(budget: list[float], what: str) -> str:
    """Wait (within what is left of ``budget[0]`` seconds) for a 1-minute load average under
    QUIET_LOAD; say what was found."""
    waited = 0
    while os.getloadavg()[0] >= QUIET_LOAD and budget[0] > 0:
        log(f"load {os.getloadavg()[0]:.2f}: waiting for a quieter machine before {what}")
        time.sleep(15)
        waited += 15
        budget[0] -= 15
    return f"{what}: load {os.getloadavg()[0]:.2f} after waiting {waited} s"


# -- the stores ------------------------------------------------------------------------------------


def sqlite_file(shape: mx_shape.Shape, rebuild: bool) -> Path:
    """The cached SQLite store of ``shape``, built when missing (or asked to)."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"mx-{shape.key()}.db"
    if path.exists() and not rebuild:
        log(f"sqlite: using the cached store {path}")
        return path
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    engine = sa.create_engine(f"sqlite:///{partial}")

    @sa.event.listens_for(engine, "connect")
    def _fast(dbapi_connection, _record) -> None:
        # A throw-away file until it is renamed: no journal, no fsync.
        dbapi_connection.execute("PRAGMA journal_mode = OFF")
        dbapi_connection.execute("PRAGMA synchronous = OFF")

    log(f"sqlite: building {path.name} ({shape})")
    start = time.perf_counter()
    counts = mx_data.load(engine, shape, log)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode = WAL")
    engine.dispose()
    partial.rename(path)
    log(f"sqlite: {counts} in {time.perf_counter() - start:.0f} s")
    return path


def _pg_key(conn: sa.Connection) -> str | None:
    return conn.execute(
        sa.text("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = :d"),
        {"d": PG_DATABASE},
    ).scalar()


def postgres_database(shape: mx_shape.Shape, source: Path, keep: bool) -> str:
    """The URI of ``tactus_test_benchmx`` holding the rows of ``source``: reused when a kept
    copy of the same shape exists, else created and filled."""
    server = servers.POSTGRES
    uri = servers._with_database(server.admin_uri, PG_DATABASE)
    key = f"bench/mx {shape.key()}"
    admin = server._engine()
    try:
        with admin.connect() as conn:
            if keep and _pg_key(conn) == key:
                log(f"postgresql: reusing the kept database {PG_DATABASE}")
                return uri
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")
            conn.exec_driver_sql(f"CREATE DATABASE {PG_DATABASE}")
        store = open_store(uri)
        try:
            log(f"postgresql: copying {source.name} into {PG_DATABASE}")
            start = time.perf_counter()
            source_engine = sa.create_engine(f"sqlite:///{source}")
            try:
                counts = mx_data.copy(source_engine, store.engine, log)
            finally:
                source_engine.dispose()
            log(f"postgresql: {counts} in {time.perf_counter() - start:.0f} s")
        finally:
            store.close()
        with admin.connect() as conn:
            conn.exec_driver_sql(f"COMMENT ON DATABASE {PG_DATABASE} IS '{key}'")
    finally:
        admin.dispose()
    return uri


def drop_postgres() -> None:
    servers.POSTGRES._execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")


# -- what to request ---------------------------------------------------------------------------


def targets(store) -> dict[str, list[str]]:
    """Processes, jobs and units of work to request, found in the store."""
    since = (mx_shape.NOW - timedelta(days=mx_shape.Shape().event_days - 5)).strftime("%Y%m%d%H")
    engine = store.engine
    with engine.connect() as conn:
        # Jobs run twice (reprocessed) of continuous processes: four units of work and a long
        # history each.
        found = conn.execute(
            sa.select(jobs.c.process, jobs.c.timeperiod, jobs.c.uow_id)
            .where(
                jobs.c.process.like("t%_hourly"),
                jobs.c.run == 1,
                jobs.c.timeperiod >= since,
            )
            .order_by(jobs.c.timeperiod.desc(), jobs.c.process)
            .limit(8)
        ).all()
        if not found:  # a small shape: any job with a unit of work
            found = conn.execute(
                sa.select(jobs.c.process, jobs.c.timeperiod, jobs.c.uow_id)
                .where(jobs.c.uow_id.is_not(None))
                .order_by(jobs.c.timeperiod.desc())
                .limit(8)
            ).all()
        freerun_uows = conn.execute(
            sa.select(uows.c.id).where(uows.c.process == "f000").order_by(uows.c.id.desc()).limit(4)
        ).all()
        counted = conn.execute(
            sa.select(sa.func.count())
            .select_from(uows)
            .where(uows.c.id.in_([r.uow_id for r in found]))
        ).scalar()
        histories = conn.execute(
            sa.select(sa.func.count())
            .select_from(events)
            .where(
                events.c.entity == "job",
                events.c.entity_id.in_([f"{r.process}/{r.timeperiod}" for r in found]),
            )
        ).scalar()
    # The page of the process list that starts at the first freerun process: 100 unit-of-work
    # counts, where the first page (daily processes) has job counts.
    names = sorted(r.name for r in store.list_processes())
    first = next((i for i, name in enumerate(names) if name.startswith("f")), 0)
    freerun_page = quote(encode_cursor(names[first - 1])) if first else None
    log(
        f"targets: {len(found)} jobs ({counted} of their units of work found, {histories} job events)"
    )
    return {
        "jobs": [f"{r.process}/{r.timeperiod}" for r in found],
        "uows": [r.uow_id for r in found[:4]] + [r.id for r in freerun_uows],
        "processes": ["t000_hourly", "d000", "t001_daily", "t002_monthly"],
        "freeruns": ["f000", "f001"],
        "freerun_page": [f"?cursor={freerun_page}"] if freerun_page else [],
    }


def routes(found: dict[str, list[str]]) -> list[Route]:
    return [
        Route("GET /api/v1/processes", ["/api/v1/processes"]),
        *(
            Route("GET /api/v1/processes?cursor=C (freerun page)", [f"/api/v1/processes{c}"])
            for c in found["freerun_page"]
        ),
        Route("GET /api/v1/jobs?limit=100", ["/api/v1/jobs?limit=100"]),
        Route(
            "GET /api/v1/jobs?process=P&limit=100",
            [f"/api/v1/jobs?process={p}&limit=100" for p in found["processes"]],
        ),
        Route(
            "GET /api/v1/jobs?state=skipped,final_run",
            ["/api/v1/jobs?state=skipped,final_run&limit=100"],
        ),
        Route("GET /api/v1/jobs/P/T", [f"/api/v1/jobs/{j}" for j in found["jobs"]]),
        Route("GET /api/v1/uows?limit=100", ["/api/v1/uows?limit=100"]),
        Route(
            "GET /api/v1/uows?process=F&state=processed",
            [f"/api/v1/uows?process={f}&state=processed" for f in found["freeruns"]],
        ),
        Route(
            "GET /api/v1/uows?state=requested,invalid",
            ["/api/v1/uows?state=requested,invalid&limit=100"],
        ),
        Route("GET /api/v1/uows/ID", [f"/api/v1/uows/{u}" for u in found["uows"]]),
        Route("GET / (dashboard)", ["/"], page=True),
        Route("GET /jobs (page)", ["/jobs"], page=True),
        Route("GET /jobs/P/T (page)", [f"/jobs/{j}" for j in found["jobs"]], page=True),
        Route("GET /metrics", ["/metrics"], target=False),
    ]


# -- serving and measuring ---------------------------------------------------------------------


class Client:
    """One keep-alive HTTP/1.1 connection with a bearer token."""

    def __init__(self, port: int, token: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.token = token

    def get(self, path: str, page: bool) -> tuple[int, int, float]:
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Accept": "text/html" if page else "application/json",
        }
        start = time.perf_counter()
        self.conn.request("GET", path, headers=headers)
        response = self.conn.getresponse()
        body = response.read()
        return response.status, len(body), (time.perf_counter() - start) * 1e3

    def close(self) -> None:
        self.conn.close()


def measure(uri: str, rounds: int, warmup: int) -> list[Route]:
    """Serve mx on ``uri`` and time every route; the routes carry their timings."""
    store = open_store(uri)
    broker = None
    server = None
    with tempfile.TemporaryDirectory(prefix="bench-mx-") as tmp:
        try:
            settings = load_settings(environ={"TACTUS_STORE_URI": uri}, cwd=tmp)
            broker = open_broker("store", store)
            app = create_app(settings, store=store, broker=broker, clock=FakeClock(mx_shape.NOW))
            if store.find_credential(CredentialKind.TOKEN, TOKEN_NAME) is not None:
                store.delete_credential(CredentialKind.TOKEN, TOKEN_NAME)
            token = create_token(store, TOKEN_NAME, Role.VIEWER, created_by="bench")
            server = make_server("127.0.0.1", 0, app, threaded=True)
            threading.Thread(target=server.serve_forever, name="mx-http", daemon=True).start()
            found = routes(targets(store))
            client = Client(server.server_port, token)
            try:
                for route in found:
                    for i in range(max(warmup, len(route.paths))):
                        status, _, ms = client.get(route.paths[i % len(route.paths)], route.page)
                        if status == 404 and route.page:
                            route.skipped = "answers 404 (page not built yet)"
                            log(f"skipped {route.label}: {route.skipped}")
                            break
                        if status != 200:
                            raise RuntimeError(f"{route.label}: HTTP {status}")
                    else:
                        log(f"warm: {route.label} ({ms:.0f} ms)")
                live = [r for r in found if r.skipped is None]
                for i in range(rounds):
                    for route in live:
                        if not route.target and i % 10:
                            continue  # slow and not a target: every tenth round
                        status, size, ms = client.get(route.paths[i % len(route.paths)], route.page)
                        if status != 200:
                            raise RuntimeError(f"{route.label}: HTTP {status}")
                        route.times_ms.append(ms)
                        route.sizes.append(size)
                    if (i + 1) % 50 == 0:
                        log(f"round {i + 1} of {rounds}")
            finally:
                client.close()
            return found
        finally:
            if server is not None:
                server.shutdown()
            if broker is not None:
                broker.close()
            store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "all"), default="all")
    parser.add_argument("--n", type=int, default=200, help="timed requests per route")
    parser.add_argument("--warmup", type=int, default=5, help="untimed requests per route first")
    parser.add_argument(
        "--keep", action="store_true", help="keep (and reuse) the PostgreSQL database"
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached SQLite store")
    parser.add_argument("--quick", action="store_true", help="a small store: a smoke run")
    parser.add_argument("--write", help="replace the marked section of this Markdown file")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=600,
        help=f"seconds in all to wait for a 1-minute load under {QUIET_LOAD} before measuring",
    )
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    shape = mx_shape.QUICK if args.quick else mx_shape.Shape()
    budget = [args.quiet_wait]
    notes = []
    source = sqlite_file(shape, args.rebuild)
    counting = sa.create_engine(f"sqlite:///{source}")
    with counting.connect() as conn:
        counts = {
            t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar()
            for t in mx_data.TABLES
        }
    counting.dispose()
    results: dict[str, list[Route]] = {}
    if args.backend in ("sqlite", "all"):
        notes.append(wait_for_quiet(budget, "sqlite"))
        results["sqlite"] = measure(f"sqlite:///{source}", args.n, args.warmup)
        print("\n".join(table({"sqlite": results["sqlite"]})))
    if args.backend in ("postgresql", "all"):
        problem = servers.POSTGRES.available()
        if problem:
            log(f"skipped postgresql: {problem}")
        else:
            uri = postgres_database(shape, source, args.keep)
            try:
                notes.append(wait_for_quiet(budget, "postgresql"))
                results["postgresql"] = measure(uri, args.n, args.warmup)
            finally:
                if not args.keep:
                    drop_postgres()
    notes.append(f"load {os.getloadavg()[0]:.2f} at the end")
    text = render(results, counts, notes, args.n)
    print(text)
    if args.write:
        write(Path(args.write), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
