"""The Celery 5 side of bench/dispatch.py (runs in bench/.venv-celery, never the project's venv).

As a module it is the Celery app (``celery -A bench.dispatch_celery worker``) with one no-op task;
as a script it is the driver:

    bench/.venv-celery/bin/python bench/dispatch_celery.py --n 2000 --workers 4 [--nodes 4]

configured by ``BENCH_CELERY_BROKER`` (amqp URI), ``BENCH_CELERY_BACKEND`` (``db+sqlite:///...``)
and ``BENCH_CELERY_QUEUE`` (a queue name unique to the run). The driver starts ``--nodes``
worker nodes, each ``celery worker --pool prefork --concurrency workers/nodes`` (``-n`` a unique
node name), waits until all answer a ping, runs a warm-up, then times ``group(noop.s(i) for i in
range(n)).apply_async()`` until the result backend holds ``n`` more committed ``SUCCESS`` rows,
counted every 20 ms on a connection of the driver's own (the cheapest fair way to see the durable
state: ``GroupResult.get`` on the database backend polls one SELECT per task, which costs 2.7-2.9
ms of CPU per task and takes it from Celery's own workers); the results are checked with
``GroupResult.get`` after the clock stops. It prints one JSON line: ``{"n": ..., "seconds": ...}``. Celery's defaults otherwise:
the task is acknowledged when a worker receives it (``acks_late`` off), prefetch multiplier 4,
publishing without confirms, persistent task messages.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from celery import Celery, group

ROOT = Path(__file__).resolve().parent.parent

app = Celery("bench_dispatch")
app.conf.update(
    broker_url=os.environ.get("BENCH_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
    result_backend=os.environ.get("BENCH_CELERY_BACKEND", "db+sqlite:///celery-results.db"),
    task_default_queue=os.environ.get("BENCH_CELERY_QUEUE", "bench_dispatch"),
    broker_connection_retry_on_startup=True,
    # SQLite's busy wait for the worker processes that write results at the same time.
    database_engine_options={"connect_args": {"timeout": 30}},
    worker_hijack_root_logger=True,
)


@app.task(name="bench.noop")
def noop(i: int) -> int:
    """Does nothing; its return value is the stored result."""
    return i


def _start_nodes(nodes: int, concurrency: int, logs: Path) -> list[subprocess.Popen[bytes]]:
    celery = Path(sys.executable).with_name("celery")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = []
    for index in range(nodes):
        queue = app.conf.task_default_queue
        argv = [
            str(celery),
            "-A",
            "bench.dispatch_celery",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            str(concurrency),
            "--loglevel",
            "WARNING",
            "-n",
            f"{queue}-{index}@%h",
        ]
        with (logs / f"celery-{queue}-{index}.log").open("wb") as log_file:
            procs.append(
                subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log_file, stderr=log_file)
            )
    return procs


def _wait_ready(nodes: int, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a celery worker exited during start-up")
        queue = app.conf.task_default_queue
        replies = app.control.ping(timeout=1.0) or []
        mine = [r for r in replies if any(name.startswith(f"{queue}-") for name in r)]
        if len(mine) >= nodes:
            return
    raise RuntimeError("celery workers did not answer a ping within 60 s")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _delete_queue() -> None:
    queue = app.conf.task_default_queue
    for _attempt in range(5):
        try:
            with app.connection_for_write() as conn:
                conn.default_channel.queue_delete(queue)
            return
        except Exception as exc:  # the broker restarting: try again, then leave it be
            print(f"deleting queue {queue}: {exc!r}", file=sys.stderr)
            time.sleep(2)


def run(n: int, workers: int, nodes: int, logs: Path) -> dict[str, object]:
    from bench.dispatch_cpu import CpuMeter  # the driver's only; workers do without psutil

    # The bench imports this module as ``bench.dispatch_celery`` so that the task is the one
    # the workers registered; create the results table before the workers race to do it.
    backend_url = app.conf.result_backend
    if backend_url.startswith("db+sqlite:///"):
        # WAL, as the Tactus SQLite store uses: the mode is kept in the file.
        with sqlite3.connect(backend_url.removeprefix("db+sqlite:///")) as conn:
            conn.execute("PRAGMA journal_mode = WAL")
    app.backend.ResultSession().close()
    procs = _start_nodes(nodes, workers // nodes, logs)
    try:
        _wait_ready(nodes, procs)
        warm = group(noop.s(i) for i in range(5 * workers)).apply_async()
        warm.get(timeout=60, interval=0.01)
        succeeded = _success_counter(backend_url)
        before = succeeded()
        meter = CpuMeter(p.pid for p in procs)
        meter.start()
        started = time.perf_counter()
        result = group(noop.s(i) for i in range(n)).apply_async()
        deadline = started + max(120.0, n / 5)
        while succeeded() < before + n:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"celery: {succeeded() - before} of {n} results in time")
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        cpu = meter.delta()
        values = result.get(timeout=60, interval=0.05)
        if sorted(values) != list(range(n)):
            raise RuntimeError("celery returned unexpected results")
        for path in logs.glob(f"celery-{app.conf.task_default_queue}-*.log"):
            for line in path.read_text(errors="replace").splitlines():
                if "Connection to broker lost" in line or "Cannot connect to" in line:
                    # another test run restarted the shared RabbitMQ: measure again
                    raise RuntimeError(f"disturbed run: {line[:200]}")
        return {"n": n, "seconds": seconds, "cpu": cpu}
    finally:
        _stop(procs)
        _delete_queue()


def _success_counter(backend_url: str):
    """A function counting the committed ``SUCCESS`` rows of the result backend."""
    if backend_url.startswith("db+sqlite:///"):
        conn = sqlite3.connect(backend_url.removeprefix("db+sqlite:///"), timeout=30)

        def count() -> int:
            (value,) = conn.execute(
                "SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'"
            ).fetchone()
            return int(value)

        return count
    import sqlalchemy as sa  # Celery's database backend brings it

    engine = sa.create_engine(backend_url.removeprefix("db+"))

    def count_sa() -> int:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    sa.text("SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'")
                ).scalar_one()
            )

    return count_sa


def main() -> int:
    parser = argparse.ArgumentParser(description="Celery side of bench/dispatch.py")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=1, help="worker (pool) processes in all")
    parser.add_argument("--nodes", type=int, default=None, help="celery worker nodes (default N)")
    parser.add_argument("--logs", default=".", help="folder for the workers' logs")
    args = parser.parse_args()
    nodes = args.nodes or args.workers
    if args.workers % nodes:
        parser.error("--workers must be a multiple of --nodes")
    print(json.dumps(run(args.n, args.workers, nodes, Path(args.logs))), flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from bench import dispatch_celery  # the module the workers load, not this __main__ copy

    sys.exit(dispatch_celery.main())
