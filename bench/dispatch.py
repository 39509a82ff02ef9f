"""Dispatch benchmark (issues 3 and 15): units of work per second end to end, against Celery 5.

    .venv/bin/python bench/dispatch.py [--n 2000] [--repeat 3] [--quick] [--brokers LIST]
                                       [--profile [BROKERS]] [--write docs/benchmarks.md]

Tactus: the benchmark process plays the scheduler. It fires N freerun fires, 100 at a time,
through the scheduler's own pass (``scheduler.freerun.FreerunFirer.fire_planned``: the fires
recorded in one store transaction, their units of work created in one, linked in one, their
ids published with one ``publish_many``), as when 100 entries fire on the same minute; worker OS processes
(``python -m workers bench_noop --concurrency 1``, ×1 or ×4, ``PYTHONPATH`` = the repository)
claim each one by compare-and-set (requested → in_progress), run the no-op Python class
``bench.dispatch_worker:NoopWorker`` (a Python class: ``command: ["true"]`` would time a fork per
unit), record processed by compare-and-set, publish the status and ack; a thread of the
benchmark consumes ``status_queue(prefix)`` as the scheduler's status listener does and counts
distinct ids. Timed: from the first fire to the N-th distinct status. Stores: an SQLite file,
and PostgreSQL when the test role of tests/servers.py can log in. Brokers (``--brokers``, all
four by default; a server not listening is skipped and said so), each with each store:

- RabbitMQ (``TACTUS_BENCH_AMQP``, 127.0.0.1:5672): a batch's publish is one AMQP transaction;
  the status leaves with the ack on the worker's channel, unconfirmed.
- the embedded store queue: messages are rows of the store, the ack, the status put and the
  next claim written in the outcome's commit.
- Redis Streams (``TACTUS_BENCH_REDIS``, redis://127.0.0.1:6379/0, mq/redis/): a batch's
  publish is one Lua script call that returns once Redis has answered, an acknowledged write
  as durable as the server's persistence makes it. The shared server here runs with
  ``appendonly no`` and no RDB snapshots (``save ""``; ``redis-cli CONFIG GET appendonly``):
  the messages are in its memory only, and a Redis restart loses them (docs/brokers.md asks
  for ``appendonly yes``; ``appendfsync everysec`` would add a write to the file per command,
  ``always`` an fsync). The run records the settings it found. The status notice and the ack
  are one script call (XADD to the status stream, XACK, XDEL), one round trip.
- NATS JetStream (``TACTUS_BENCH_NATS``, nats://127.0.0.1:4222, mq/nats/): a batch's publish
  is pipelined and waits for every JetStream publish ack, sent once the message is in the
  stream's files (file storage; nats-server 2.9 syncs them to disk every 2 minutes by
  default, so an acked message survives a server crash but perhaps not a host crash). The
  status notice is a plain NATS publish into the status subject (stored by JetStream, its
  publish ack not waited for), followed on the same connection by the delivery's ack; the
  worker does not wait for either (as RabbitMQ's ``basic_ack``): the broker's event loop
  waits for the ack's answer and then asks for the next message.

What the rows leave out: no server restarts or reconnects (a run that logs a warning is run
again), no redelivery (the visibility timeout, 60 s by default, never expires: the Redis
consumers' upkeep every half second finds nothing to reclaim, and the NATS queues' movers of
delayed messages have nothing to move), no TLS, loopback only. Each run has its own queue
prefix (``TACTUS_QUEUE_PREFIX``), its own SQLite file or PostgreSQL database (dropped after),
and deletes what it made on the shared servers: its RabbitMQ queues, its Redis queues
(``RedisBroker.delete``: each queue's stream and delayed set and its dead-letter queue's, every
key of the run's prefix), its NATS stream (``NatsBroker.delete_installation``).

Celery (latest 5.x, in bench/.venv-celery, created when missing; see bench/dispatch_celery.py):
the same RabbitMQ, a no-op task, the same N, results stored with the SQLAlchemy backend
``db+sqlite:///`` (a file in WAL mode, like our SQLite store); the run ends when the result
table holds N more committed ``SUCCESS`` rows, counted every 20 ms by the driver (the cheapest
fair detection; ``GroupResult.get`` polled one SELECT per task and took 2.7-2.9 ms of CPU per
task from Celery's workers), and the results are checked with ``GroupResult.get`` after the
clock stops. "k worker processes" means k nodes ``celery worker --pool prefork
--concurrency 1`` (each also has its parent process, which consumes and hands tasks over),
plus one node with ``--concurrency 4`` for comparison.

Each configuration runs ``--repeat`` times, interleaved (each round runs every configuration
once); the table shows the median rate and the range and Tactus / Celery; a line under it gives each
Redis and NATS row's median over RabbitMQ's with the same store and worker processes (issue
15's target: at least 1). CPU: seconds of
CPU per party during the timed window (bench/dispatch_cpu.py), per unit: the client, the
workers, the configuration's broker server (RabbitMQ, redis-server, nats-server: the process
listening on its port) and PostgreSQL.
``--write`` waits (up to 20 min, or ``--quiet-budget`` seconds, polling every 30 s) for a 1-minute load average below 1.5,
and records the load it found. A
run during which anything logged a warning (a reconnect: other test runs restart the shared
RabbitMQ with ``rabbitmqctl stop_app``) is thrown away and run again. ``--profile`` adds py-spy
profiles of three Tactus runs (bench/dispatch_profile.py); ``--profile redis,nats`` (say) of
those brokers' runs instead, 1 and 4 worker processes each, SQLite store.

``--synchronous full,normal`` also runs the SQLite configurations with the store URI's
``?synchronous=normal`` (commits that do not wait for the disk; see docs/settings.md).

Caveats: 2 cores shared by the brokers, the database, the workers and the benchmark (and other
work unless the load says otherwise); loopback. Durable writes per unit of work: Tactus 1 and
a share (the outcome, written together with the claim of the next unit of work already in
hand; the three commits of a pass of 100 fires; the broker's publish of 100 unit-of-work
messages, as durable as above; on the store queue the
message ack, the status put and the next message claim go in the outcome's commit, and status
claims and acks are shared by the statuses claimed together); Celery waits for 1 (the result
row): RabbitMQ stores its
persistent task message but the publisher does not wait for a confirm, and the worker acks it
on receipt, before it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
# The project first: bench/scheduler.py must not hide the scheduler package.
sys.path.insert(0, str(ROOT))

from dispatch_cpu import BROKER_PORTS, others_cores  # noqa: E402
from dispatch_report import Config, render, write_section  # noqa: E402
from dispatch_tactus import RunResult, run_tactus  # noqa: E402

from tests import servers  # noqa: E402

AMQP = os.environ.get("TACTUS_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")
REDIS = os.environ.get("TACTUS_BENCH_REDIS", "redis://127.0.0.1:6379/0")
NATS = os.environ.get("TACTUS_BENCH_NATS", "nats://127.0.0.1:4222")
#: The Tactus rows' brokers, in the table's order: name -> broker URI (the store queue: "store").
BROKERS = {"rabbitmq": AMQP, "store": "store", "redis": REDIS, "nats": NATS}
CELERY_VENV = ROOT / "bench" / ".venv-celery"
CELERY_PACKAGES = ["celery>=5,<6", "sqlalchemy", "psutil", "py-spy"]
QUIET_LOAD = 1.5
#: Tries per run (see run_with_retries).
ATTEMPTS = 3
#: A run during which other work used more cores than this is run again, once.
OTHERS_LIMIT = 0.5
NOISY_ATTEMPTS = 2
RETRY_PAUSE_S = 20
QUIET_POLL_S = 30
QUIET_BUDGET_S = 20 * 60
#: What ``--profile`` runs: (broker URI, name, worker processes).
PROFILED = [(AMQP, "RabbitMQ", 1), (AMQP, "RabbitMQ", 4), ("store", "store queue", 1)]
#: What ``--profile redis,nats`` (say) runs instead: one run per broker, 1 and 4 processes.
PROFILABLE = {
    "rabbitmq": (AMQP, "RabbitMQ"),
    "store": ("store", "store queue"),
    "redis": (REDIS, "Redis"),
    "nats": (NATS, "NATS"),
}


def log(text: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {text}", file=sys.stderr, flush=True)


def configurations(
    postgres: bool,
    counts: tuple[int, ...],
    synchronous: tuple[str, ...] = ("full",),
    brokers: tuple[str, ...] = tuple(BROKERS),
) -> list[Config]:
    stores = ("sqlite", "postgresql") if postgres else ("sqlite",)
    found = []
    for workers in counts:
        for broker in brokers:
            for store in stores:
                modes = synchronous if store == "sqlite" else ("full",)
                found += [Config("tactus", broker, store, workers, synchronous=m) for m in modes]
        found.append(Config("celery", "rabbitmq", "sqlite", workers, nodes=workers))
        if workers > 1:
            found.append(Config("celery", "rabbitmq", "sqlite", workers, nodes=1))
    return found


def ensure_celery_venv() -> Path:
    """bench/.venv-celery with the latest Celery 5.x (and py-spy, psutil); returns its python."""
    python = CELERY_VENV / "bin" / "python"
    if not (CELERY_VENV / "bin" / "celery").exists():
        log("creating bench/.venv-celery (Celery 5, never in the project's venv)")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(CELERY_VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--upgrade", *CELERY_PACKAGES]
        subprocess.run(pip, check=True)
    return python


def wait_quiet(enabled: bool, budget: float = QUIET_BUDGET_S) -> str:
    """Wait (at most ``budget`` seconds) for the 1-minute load average to drop below
    QUIET_LOAD; say what was found."""
    load = os.getloadavg()[0]
    waited = 0
    while enabled and load >= QUIET_LOAD and waited < budget:
        log(f"load {load:.2f} >= {QUIET_LOAD}: waiting {QUIET_POLL_S} s")
        time.sleep(QUIET_POLL_S)
        waited += QUIET_POLL_S
        load = os.getloadavg()[0]
    if not enabled:
        return f"1-minute load average {load:.2f} at the start (no wait asked for)"
    if load < QUIET_LOAD:
        return f"1-minute load average {load:.2f} at the start, after waiting {waited} s"
    return (
        f"the machine never got quiet: 1-minute load average still {load:.2f} after waiting "
        f"{waited} s, so other work competed for the 2 cores"
    )


def run_celery(python: Path, config: Config, n: int, tmp: Path) -> RunResult:
    name = f"bdc{os.urandom(4).hex()}"
    env = {
        **os.environ,
        "BENCH_CELERY_BROKER": AMQP.replace("/%2F", "//"),
        "BENCH_CELERY_BACKEND": f"db+sqlite:///{tmp / (name + '.db')}",
        "BENCH_CELERY_QUEUE": name,
    }
    argv = [str(python), str(ROOT / "bench" / "dispatch_celery.py"), "--n", str(n)]
    argv += ["--workers", str(config.workers), "--nodes", str(config.nodes), "--logs", str(tmp)]
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"celery run failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return RunResult(n=result["n"], seconds=result["seconds"], cpu=result["cpu"])


def run_config(config: Config, n: int, celery_python: Path) -> RunResult:
    with tempfile.TemporaryDirectory(prefix="tactus-dispatch-") as tmp_name:
        tmp = Path(tmp_name)
        if config.system == "celery":
            return run_celery(celery_python, config, n, tmp)
        broker = BROKERS[config.broker]
        if config.store == "sqlite":
            uri = f"sqlite:///{tmp / 'tactus.db'}"
            if config.synchronous != "full":
                uri += f"?synchronous={config.synchronous}"
            return run_tactus(uri, broker, config.workers, n, tmp)
        database, uri = servers.POSTGRES.create_database()
        try:
            return run_tactus(uri, broker, config.workers, n, tmp)
        finally:
            servers.POSTGRES.drop_database(database)


def run_with_retries(config: Config, n: int, celery_python: Path, failures: list[str]) -> RunResult:
    """:func:`run_config` up to ``ATTEMPTS`` times while it fails or is disturbed (the shared
    RabbitMQ restarted by another test run, say), and once more if other work used more than
    ``OTHERS_LIMIT`` cores during it; returns the least disturbed run."""
    best: RunResult | None = None
    for attempt in range(1, ATTEMPTS + 1):
        try:
            result = run_config(config, n, celery_python)
        except Exception as exc:
            last_line = (str(exc).strip().splitlines() or [repr(exc)])[-1][:160]
            failures.append(f"{config.label} ×{config.workers}: {last_line}")
            log(f"{config.label} ×{config.workers} failed (attempt {attempt}): {exc}")
            if attempt == ATTEMPTS and best is None:
                raise
        else:
            others = others_cores(result.cpu, config.parties, result.seconds)
            if best is None or others < others_cores(best.cpu, config.parties, best.seconds):
                best = result
            if others <= OTHERS_LIMIT or attempt >= NOISY_ATTEMPTS:
                return result
            failures.append(f"{config.label} ×{config.workers}: other work {others:.2f} cores")
            log(f"{config.label} ×{config.workers}: other work used {others:.2f} cores; again")
        if attempt < ATTEMPTS:
            time.sleep(RETRY_PAUSE_S)
    assert best is not None
    return best


def unreachable(broker: str) -> str | None:
    """None if the server of ``broker`` (a key of :data:`BROKERS`) accepts connections."""
    if broker == "store":
        return None
    uri = urlsplit(BROKERS[broker])
    if servers.port_open(uri.hostname or "127.0.0.1", uri.port or BROKER_PORTS[broker]):
        return None
    return f"{broker} not reachable at {uri.hostname}:{uri.port}"


def server_notes(brokers: tuple[str, ...]) -> list[str]:
    """What the Redis and NATS servers are and how Redis persists (its acknowledged writes are
    as durable as that makes them), as found at the start of the run."""
    notes = []
    if "redis" in brokers:
        import redis

        client = redis.Redis.from_url(REDIS, decode_responses=True)
        try:
            version = client.info("server")["redis_version"]
            found = {}
            for name in ("appendonly", "appendfsync", "save"):
                found.update(client.config_get(name))
            save = found.get("save") or "off"
            notes.append(
                f"Redis {version} with appendonly {found.get('appendonly')}, appendfsync "
                f"{found.get('appendfsync')}, RDB snapshots (save) {save}"
            )
        except redis.RedisError as exc:
            notes.append(f"Redis persistence settings unknown ({exc})")
        finally:
            client.close()
    if "nats" in brokers:
        import asyncio

        import nats

        async def version() -> str:
            nc = await nats.connect(NATS)
            try:
                v = nc.connected_server_version
                return f"{v.major}.{v.minor}.{v.patch}"
            finally:
                await nc.close()

        notes.append(f"nats-server {asyncio.run(version())} (JetStream, file storage)")
    return notes


def profile_runs(
    celery_python: Path, n: int, targets: list[tuple[str, str, int]] = PROFILED
) -> list[str]:
    from dispatch_profile import PySpy, render_profile, summarize

    py_spy = celery_python.with_name("py-spy")
    lines: list[str] = []
    for broker, name, workers in targets:
        spy = PySpy(py_spy)
        with tempfile.TemporaryDirectory(prefix="tactus-dispatch-") as tmp:
            uri = f"sqlite:///{tmp}/tactus.db"
            result = run_tactus(uri, broker, workers, n, Path(tmp), hooks=spy)
        title = (
            f"Tactus, {name}, SQLite file store, {workers} worker process"
            f"{'es' if workers > 1 else ''}, {result.rate:,.0f} units/s while profiled"
        )
        per_unit = 1000 * workers * result.seconds / result.n
        lines += render_profile(title, summarize(spy, workers), per_unit) + [""]
        shutil.rmtree(spy.dir, ignore_errors=True)
    return lines[:-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="units of work per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per configuration")
    parser.add_argument("--quick", action="store_true", help="N = 300, one run, no PostgreSQL")
    parser.add_argument(
        "--profile",
        nargs="?",
        const="",
        metavar="BROKERS",
        help="also profile Tactus runs (py-spy), SQLite store: RabbitMQ ×1 and ×4 and the store "
        "queue ×1, or each of the given brokers (comma-separated) ×1 and ×4",
    )
    parser.add_argument(
        "--brokers",
        default=",".join(BROKERS),
        help=f"the Tactus rows' brokers, comma-separated (default: {','.join(BROKERS)})",
    )
    parser.add_argument("--write", help="replace the marked section of this Markdown file")
    parser.add_argument(
        "--quiet-budget",
        type=float,
        default=QUIET_BUDGET_S,
        help="seconds --write waits for a quiet machine (default %(default)s)",
    )
    parser.add_argument(
        "--synchronous",
        default="full",
        help="SQLite store modes to run, comma-separated: full (the default), normal",
    )
    args = parser.parse_args()
    modes = tuple(m.strip().lower() for m in args.synchronous.split(",") if m.strip())
    if not modes or set(modes) - {"full", "normal"}:
        parser.error("--synchronous takes full, normal or full,normal")
    brokers = tuple(b.strip().lower() for b in args.brokers.split(",") if b.strip())
    profiled = [b.strip().lower() for b in (args.profile or "").split(",") if b.strip()]
    if not brokers or set(brokers) - set(BROKERS) or set(profiled) - set(BROKERS):
        parser.error(f"--brokers and --profile take some of {', '.join(BROKERS)}")
    # Clean up (worker processes, queues, databases) on SIGTERM and on Ctrl-C, even when a
    # shell started us in the background with SIGINT ignored.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    n, repeat = (min(args.n, 300), 1) if args.quick else (args.n, args.repeat)
    celery_python = ensure_celery_venv()
    problem = "--quick" if args.quick else servers.POSTGRES.available()
    if problem:
        log(f"skipped PostgreSQL: {problem}")
    version = subprocess.run(
        [str(celery_python), "-c", "import celery; print(celery.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    notes = [f"Celery {version}"]
    skipped = {b: why for b in brokers if (why := unreachable(b))}
    for why in skipped.values():
        log(f"skipped: {why}")
        notes.append(f"skipped: {why}")
    brokers = tuple(b for b in brokers if b not in skipped)
    notes += server_notes(brokers)
    notes.append(wait_quiet(bool(args.write) and not args.quick, args.quiet_budget))
    results: dict[Config, list[RunResult]] = {}
    loads: list[float] = []
    failures: list[str] = []
    for round_ in range(repeat):
        for config in configurations(not problem, (1, 4), modes, brokers):
            result = run_with_retries(config, n, celery_python, failures)
            results.setdefault(config, []).append(result)
            loads.append(os.getloadavg()[0])
            log(f"run {round_ + 1}/{repeat} {config.label} ×{config.workers}: {result.rate:,.0f}/s")
    notes.append(f"{repeat} run{'s' if repeat > 1 else ''} per configuration")
    if failures:
        notes.append(f"{len(failures)} run(s) repeated ({'; '.join(failures)})")
    notes.append(
        f"load average after each run {min(loads):.2f}–{max(loads):.2f} (median "
        f"{statistics.median(loads):.2f}; the benchmark's own processes count in it)"
    )
    profile: list[str] = []
    if profiled:
        targets = [(*PROFILABLE[b], k) for b in profiled for k in (1, 4)]
        profile = profile_runs(celery_python, n, targets)
    elif args.profile is not None:
        profile = profile_runs(celery_python, n)
    command = ".venv/bin/python bench/dispatch.py --write docs/benchmarks.md"
    if (args.n, args.repeat) != (parser.get_default("n"), parser.get_default("repeat")):
        command += f" --n {args.n} --repeat {args.repeat}"
    if args.brokers != ",".join(BROKERS):
        command += f" --brokers {args.brokers}"
    if modes != ("full",):
        command += f" --synchronous {','.join(modes)}"
    if args.profile is not None:
        command += f" --profile {args.profile}".rstrip()
    text = render(
        results,
        n,
        notes,
        profile,
        others_limit=OTHERS_LIMIT,
        attempts=NOISY_ATTEMPTS,
        command=command,
    )
    print(text)
    if args.write:
        write_section(Path(args.write), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
