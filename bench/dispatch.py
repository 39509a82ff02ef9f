"""Dispatch benchmark (issue 3): units of work per second end to end, against Celery 5.

    .venv/bin/python bench/dispatch.py [--n 2000] [--repeat 3] [--quick] [--profile]
                                       [--write docs/benchmarks.md]

Tactus: the benchmark process plays the scheduler. It fires N freerun fires, 100 at a time,
through the scheduler's own pass (``scheduler.freerun.FreerunFirer.fire_planned``: the fires
recorded in one store transaction, their units of work created in one, linked in one, their
ids published with one ``publish_many``), as when 100 entries fire on the same minute; worker OS processes
(``python -m workers bench_noop --concurrency 1``, ×1 or ×4, ``PYTHONPATH`` = the repository)
claim each one by compare-and-set (requested → in_progress), run the no-op Python class
``bench.dispatch_worker:NoopWorker`` (a Python class: ``command: ["true"]`` would time a fork per
unit), record processed by compare-and-set, publish the status and ack; a thread of the
benchmark consumes ``status_queue(prefix)`` as the scheduler's status listener does and counts
distinct ids. Timed: from the first fire to the N-th distinct status. Brokers: RabbitMQ (127.0.0.1:5672)
and the embedded store queue; stores: an SQLite file, and PostgreSQL when the test role of
tests/servers.py can log in. Each run has its own queue prefix (``TACTUS_QUEUE_PREFIX``), its own
SQLite file or PostgreSQL database (dropped after), and deletes its RabbitMQ queues.

Celery (latest 5.x, in bench/.venv-celery, created when missing; see bench/dispatch_celery.py):
the same RabbitMQ, a no-op task, the same N, results stored with the SQLAlchemy backend
``db+sqlite:///`` (a file in WAL mode, like our SQLite store) and all collected through
``GroupResult.get``. "k worker processes" means k nodes ``celery worker --pool prefork
--concurrency 1`` (each also has its parent process, which consumes and hands tasks over),
plus one node with ``--concurrency 4`` for comparison.

Each configuration runs ``--repeat`` times, interleaved; the table shows the median rate and the
range. CPU: seconds of CPU per party during the timed window (bench/dispatch_cpu.py), per unit.
``--write`` waits (up to 20 min, polling every 30 s) for a 1-minute load average below 1.5. A
run during which anything logged a warning (a reconnect: other test runs restart the shared
RabbitMQ with ``rabbitmqctl stop_app``) is thrown away and run again. ``--profile`` adds py-spy
profiles of three Tactus runs (bench/dispatch_profile.py).

``--synchronous full,normal`` also runs the SQLite configurations with the store URI's
``?synchronous=normal`` (commits that do not wait for the disk; see docs/settings.md).

Caveats: 2 cores shared by the broker, the database, the workers and the benchmark (and other
work unless the load says otherwise); loopback. Durable writes per unit of work: Tactus 1 and
a share (the outcome, written together with the claim of the next unit of work already in
hand; the three commits of a pass of 100 fires; on RabbitMQ the uow messages' transaction is
shared by 100 and the status message leaves with the ack, unconfirmed; on the store queue the
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

ROOT = Path(__file__).resolve().parent.parent
# The project first: bench/scheduler.py must not hide the scheduler package.
sys.path.insert(0, str(ROOT))

from dispatch_cpu import others_cores  # noqa: E402
from dispatch_report import Config, render, write_section  # noqa: E402
from dispatch_tactus import RunResult, run_tactus  # noqa: E402

from tests import servers  # noqa: E402

AMQP = os.environ.get("TACTUS_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")
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


def log(text: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {text}", file=sys.stderr, flush=True)


def configurations(
    postgres: bool, counts: tuple[int, ...], synchronous: tuple[str, ...] = ("full",)
) -> list[Config]:
    stores = ("sqlite", "postgresql") if postgres else ("sqlite",)
    found = []
    for workers in counts:
        for broker in ("rabbitmq", "store"):
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


def wait_quiet(enabled: bool) -> str:
    """Wait for the 1-minute load average to drop below QUIET_LOAD; say what was found."""
    load = os.getloadavg()[0]
    waited = 0
    while enabled and load >= QUIET_LOAD and waited < QUIET_BUDGET_S:
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
        broker = AMQP if config.broker == "rabbitmq" else "store"
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


def profile_runs(celery_python: Path, n: int) -> list[str]:
    from dispatch_profile import PySpy, render_profile, summarize

    py_spy = celery_python.with_name("py-spy")
    lines: list[str] = []
    for broker, name, workers in PROFILED:
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
    parser.add_argument("--profile", action="store_true", help="also profile Tactus (py-spy)")
    parser.add_argument("--write", help="replace the marked section of this Markdown file")
    parser.add_argument(
        "--synchronous",
        default="full",
        help="SQLite store modes to run, comma-separated: full (the default), normal",
    )
    args = parser.parse_args()
    modes = tuple(m.strip().lower() for m in args.synchronous.split(",") if m.strip())
    if not modes or set(modes) - {"full", "normal"}:
        parser.error("--synchronous takes full, normal or full,normal")
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
    notes = [f"Celery {version}", wait_quiet(bool(args.write) and not args.quick)]
    results: dict[Config, list[RunResult]] = {}
    loads: list[float] = []
    failures: list[str] = []
    for round_ in range(repeat):
        for config in configurations(not problem, (1, 4), modes):
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
    profile = profile_runs(celery_python, n) if args.profile else []
    command = ".venv/bin/python bench/dispatch.py --write docs/benchmarks.md"
    if modes != ("full",):
        command += f" --synchronous {','.join(modes)}"
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
