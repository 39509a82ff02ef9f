"""Supervisor restart latency, Tactus against supervisord 4 (issue 5). Not a timed test: run it by
hand.

    .venv/bin/python bench/supervisor.py [--kills 200] [--write docs/benchmarks.md]

Both supervisors run the same child, ``sh -c 'echo $$ > FIFO; exec sleep 100000'``: it tells the
benchmark its pid through a FIFO the moment it runs. One measurement is

    SIGKILL of the child  ->  the replacement's pid read from the FIFO

taken ``--kills`` times per supervisor, each time after the supervisor reports the previous child
``running``. Both use ``startsecs = 0`` (a child counts as running at once, so every kill is an
exit after running, restarted without backoff) and otherwise their defaults.

- Tactus: the real daemon (``launch.py --start supervisor``) on the embedded SQLite store in a
  temporary directory, the child registered as a ``daemon`` process; its state is read from the
  store.
- supervisord 4: in its own virtual environment, ``bench/.venv-supervisord``, which this script
  creates (its package is named ``supervisor``, like ours); run in the foreground (``-n``), its
  state read over XML-RPC on 127.0.0.1.

Caveats: a 2-core machine; the child is a shell, so the figures are the supervisors' reaction plus
a fork, an exec and a shell start (about 1-2 ms), with no Python import on either side. Tactus
writes two state changes to SQLite (each a durable commit) before the replacement exists.
"""

from __future__ import annotations

import argparse
import os
import platform
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import xmlrpc.client
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from doc_section import replace_section  # noqa: E402

from db import open_store  # noqa: E402
from db.errors import NotFound  # noqa: E402

MARK_BEGIN = "<!-- bench/supervisor.py begin -->"
MARK_END = "<!-- bench/supervisor.py end -->"
SUPERVISORD_VENV = ROOT / "bench" / ".venv-supervisord"
SUPERVISORD_REQUIREMENT = "supervisor>=4.2,<5"
TARGET_P99_MS = 200.0
TARGET_SPEEDUP = 4.0


class Fifo:
    """The FIFO children announce their pid on."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        # Read-write, so the FIFO never reports end-of-file between two writers.
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self._buffer = b""

    def next_pid(self, timeout: float) -> tuple[int, float]:
        """The next pid written, and the monotonic instant it was read."""
        end = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise TimeoutError("no child announced itself")
            self._buffer += os.read(self.fd, 4096)
        seen = time.monotonic()
        line, self._buffer = self._buffer.split(b"\n", 1)
        return int(line), seen

    def close(self) -> None:
        os.close(self.fd)


def child_command(fifo: Path) -> str:
    return f"echo $$ > {fifo}; exec sleep 100000"


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> object:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise TimeoutError(f"timed out waiting for {what}")


def measure(
    kills: int, fifo: Fifo, first_pid: int, running_pid: Callable[[], int | None]
) -> list[float]:
    """Kill the child ``kills`` times; the latencies in milliseconds."""
    latencies = []
    pid = first_pid
    for _ in range(kills):
        wait_for(lambda p=pid: running_pid() == p, 10, "the child to be running")
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        new_pid, seen = fifo.next_pid(10)
        latencies.append((seen - killed) * 1000)
        pid = new_pid
    return latencies


# -- Tactus ---------------------------------------------------------------------------------------


def bench_tactus(tmp: Path, kills: int) -> list[float]:
    home = tmp / "tactus"
    home.mkdir()
    fifo_path = home / "ready.fifo"
    fifo = Fifo(fifo_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TACTUS_")}
    env.update(PYTHONPATH=str(ROOT), TACTUS_BOX_ID="bench", TACTUS_STARTSECS="0")
    (home / "ctx.yaml").write_text(
        textwrap.dedent(
            f"""\
            processes:
              - name: child
                kind: daemon
                command: [sh, -c, "{child_command(fifo_path)}"]
            """
        )
    )

    def launch(*args: str) -> None:
        subprocess.run(
            [sys.executable, str(ROOT / "launch.py"), *args], cwd=home, env=env, check=True
        )

    launch("register", "ctx.yaml")
    launch("--start", "supervisor")
    store = open_store(f"sqlite:///{home / 'var' / 'tactus.db'}")

    def running_pid() -> int | None:
        try:
            record = store.get_supervised("bench", "child")
        except NotFound:
            return None
        return record.pid if record.state == "running" else None

    try:
        first, _ = fifo.next_pid(30)
        return measure(kills, fifo, first, running_pid)
    finally:
        launch("--stop", "supervisor")
        store.close()
        fifo.close()


# -- supervisord ------------------------------------------------------------------------------------


def supervisord_python() -> Path:
    """The interpreter of bench/.venv-supervisord, created and filled on first use."""
    python = SUPERVISORD_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(SUPERVISORD_VENV)], check=True)
    # -I (isolated): neither the working directory nor PYTHONPATH may put our own
    # ``supervisor`` package in the way of supervisord's.
    probe = subprocess.run(
        [str(python), "-I", "-c", "import supervisor.supervisord"], capture_output=True
    )
    if probe.returncode != 0:
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", SUPERVISORD_REQUIREMENT], check=True
        )
    return python


def supervisord_version(python: Path) -> str:
    return subprocess.run(
        [str(python), "-I", "-c", "import importlib.metadata as m; print(m.version('supervisor'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_supervisord(tmp: Path, kills: int, python: Path) -> list[float]:
    home = tmp / "supervisord"
    home.mkdir()
    fifo_path = home / "ready.fifo"
    fifo = Fifo(fifo_path)
    port = free_port()
    conf = home / "supervisord.conf"
    conf.write_text(
        textwrap.dedent(
            f"""\
            [supervisord]
            logfile={home}/supervisord.log
            pidfile={home}/supervisord.pid
            childlogdir={home}

            [inet_http_server]
            port=127.0.0.1:{port}

            [rpcinterface:supervisor]
            supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

            [program:child]
            command=sh -c "{child_command(fifo_path)}"
            startsecs=0
            autorestart=true
            stopasgroup=true
            killasgroup=true
            """
        )
    )
    daemon = subprocess.Popen(
        [str(python), "-I", "-m", "supervisor.supervisord", "-n", "-c", str(conf)],
        cwd=home,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rpc = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{port}/RPC2")

    def running_pid() -> int | None:
        try:
            info = rpc.supervisor.getProcessInfo("child")
        except (OSError, xmlrpc.client.Error):
            return None
        return info["pid"] if info["statename"] == "RUNNING" else None

    try:
        first, _ = fifo.next_pid(30)
        return measure(kills, fifo, first, running_pid)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
        fifo.close()


# -- report ---------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "min": min(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "mean": statistics.fmean(values),
        "max": max(values),
    }


def render(tactus: dict[str, float], peer: dict[str, float], kills: int, version: str) -> str:
    speedup_p50 = peer["p50"] / tactus["p50"]
    speedup_p99 = peer["p99"] / tactus["p99"]
    met = tactus["p99"] < TARGET_P99_MS and min(speedup_p50, speedup_p99) >= TARGET_SPEEDUP
    lines = [
        MARK_BEGIN,
        "## Supervisor restart latency (`bench/supervisor.py`)",
        "",
        "```sh",
        ".venv/bin/python bench/supervisor.py --write docs/benchmarks.md",
        "```",
        "",
        "A supervised child (`sh -c 'echo $$ > FIFO; exec sleep 100000'`) is killed with SIGKILL;",
        "the time runs until its replacement announces itself on the FIFO. Tactus runs as the real",
        "daemon on the embedded SQLite store; supervisord 4 runs in its own virtual environment",
        "(`bench/.venv-supervisord`, made by the script), in the same run, on the same child. Both",
        "with `startsecs = 0`, otherwise defaults. Caveats: a 2-core machine; the child is a shell",
        "(a fork, an exec and a shell start, about 1-2 ms, are in both figures); Tactus commits two",
        "state changes to SQLite before the replacement exists; supervisord's figure is bounded by",
        "its one-second main loop.",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {platform.node()} "
        f"({platform.python_implementation()} {platform.python_version()}), {kills} kills each, "
        "child SIGKILLed -> replacement running, in milliseconds:",
        "",
        "| supervisor | min | p50 | p99 | mean | max |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in (("Tactus (SQLite store)", tactus), (f"supervisord {version}", peer)):
        lines.append(
            f"| {name} | "
            + " | ".join(f"{row[k]:.1f}" for k in ("min", "p50", "p99", "mean", "max"))
            + " |"
        )
    lines += [
        "",
        f"Tactus is {speedup_p50:.0f}x faster at p50 and {speedup_p99:.0f}x at p99. Target "
        f"(p99 < {TARGET_P99_MS:.0f} ms and at least {TARGET_SPEEDUP:.0f}x faster): "
        f"{'met' if met else 'NOT met'}.",
        MARK_END,
    ]
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    """Replace this benchmark's section of ``path`` (or append it)."""
    replace_section(path, text, MARK_BEGIN, MARK_END)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200, help="kills per supervisor")
    parser.add_argument("--write", help="replace (or append) the marked section of this file")
    args = parser.parse_args()
    python = supervisord_python()
    version = supervisord_version(python)
    with tempfile.TemporaryDirectory() as tmp:
        tactus = summary(bench_tactus(Path(tmp), args.kills))
        print(f"tactus: {tactus}", file=sys.stderr)
        peer = summary(bench_supervisord(Path(tmp), args.kills, python))
        print(f"supervisord {version}: {peer}", file=sys.stderr)
    text = render(tactus, peer, args.kills, version)
    print(text)
    if args.write:
        write_section(Path(args.write), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
