"""``bench/dispatch.py --profile``: where a Tactus unit of work spends its time.

py-spy (installed in bench/.venv-celery, never in the project's venv) samples the worker
processes and the benchmark process itself at 100 Hz, wall clock (``--idle``: waits count),
``--nonblocking``, from the end of the warm-up to the last status. Each sample of a worker's slot
thread is put in the first step of :data:`SLOT_STEPS` whose function is on its stack; samples of
the client's threads likewise with :data:`CLIENT_STEPS`. Cross-cutting shares (SQLite's write
lock, commits, RabbitMQ's transaction commit, a Redis reply, NATS's event loop thread doing
the call) are counted over all samples of the thread.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

#: (label, function as py-spy names it, file): the slot thread's steps, first match wins.
SLOT_STEPS = [
    ("ack with the status notice (Slot._ack)", "Slot._ack", "workers/slot.py"),
    ("record processed: change_uow CAS (Slot._finish)", "Slot._finish", "workers/slot.py"),
    ("claim: change_uow CAS (Slot._claim)", "Slot._claim", "workers/slot.py"),
    ("load the unit of work (Slot._load: decode, get_uow)", "Slot._load", "workers/slot.py"),
    ("re-read the process entry (Worker.current_entry)", "Worker.current_entry", "runner.py"),
    ("run the no-op in the executor thread (Slot._execute)", "Slot._execute", "workers/slot.py"),
    ("wait for a delivery (Consumer.get)", "Consumer.get", "mq/"),
]
#: Cross-cutting, first match wins: what the thread was doing inside whichever step.
CROSS = [
    ("SQLite BEGIN IMMEDIATE (waiting for the write lock)", "_sqlite_begin", "engine.py"),
    ("SQL COMMIT (DefaultDialect.do_commit)", "DefaultDialect.do_commit", "sqlalchemy"),
    ("other SQL statements (DefaultDialect.do_execute)", "DefaultDialect.do_execute", "sqlalchemy"),
    ("RabbitMQ Tx.Commit round trip (BlockingChannel.tx_commit)", "tx_commit", "pika"),
    ("Redis: waiting for a reply (redis-py read_response)", "read_response", "redis"),
    ("NATS: waiting for the nats-loop thread (Link.run)", "Link.run", "mq/nats/"),
    ("per-change log call (Logger.info)", "Logger.info", "logging"),
    ("rest of the wait for a delivery (Consumer.get)", "Consumer.get", "mq/"),
]
CLIENT_STEPS = [
    ("create units of work (create_once)", "create_once", "db/uow_factory.py"),
    ("publish_many (batches of 100)", "publish_many", "mq/"),
    ("wait for statuses (main thread idle)", "TactusRun.wait_statuses", "dispatch_tactus.py"),
]


class PySpy:
    """The ``Hooks`` of :func:`dispatch_tactus.run_tactus`: records while the timed part runs."""

    def __init__(self, py_spy: Path) -> None:
        self.py_spy = py_spy
        self.dir = Path(tempfile.mkdtemp(prefix="tactus-dispatch-prof-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.outputs: dict[str, list[Path]] = {"worker": [], "client": []}

    def _record(self, pid: int, role: str) -> None:
        out = self.dir / f"{role}-{pid}.txt"
        argv = [str(self.py_spy), "record", "-r", "100", "-f", "raw", "-o", str(out)]
        argv += ["--threads", "--idle", "--nonblocking", "-p", str(pid)]
        self.procs.append(
            subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
        self.outputs[role].append(out)

    def before(self, worker_pids: list[int]) -> None:
        for pid in worker_pids:
            self._record(pid, "worker")
        self._record(os.getpid(), "client")
        time.sleep(1.0)  # py-spy needs a moment to attach

    def after(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _samples(paths: list[Path], thread_prefix: str) -> list[tuple[list[str], int]]:
    found = []
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            if not frames or not count.isdigit():
                continue
            thread = frames[0].split(": ", 1)[-1]
            if thread.startswith(thread_prefix):
                found.append(([re.sub(r":\d+\)$", ")", f) for f in frames[1:]], int(count)))
    return found


def _has(frames: list[str], function: str, where: str) -> bool:
    return any(function + " (" in f and where in f for f in frames)


def _shares(
    samples: list[tuple[list[str], int]],
    steps: list[tuple[str, str, str]],
    *,
    pause: int = 0,
    idle: str | None = None,
) -> list[tuple[str, float]]:
    """Percent of ``samples`` per step, first match wins; ``pause`` samples (py-spy attaching,
    before the clock starts) are taken off ``idle`` (default: the last step, the thread's idle
    wait) and off the total."""
    counts: Counter[str] = Counter()
    for frames, count in samples:
        if _has(frames, "PySpy.before", "dispatch_profile.py"):
            continue
        label = next((label for label, f, w in steps if _has(frames, f, w)), "other")
        counts[label] += count
    idle = idle or steps[-1][0]
    counts[idle] -= min(pause, counts[idle])
    total = sum(counts.values())
    labels = [label for label, _, _ in steps] + ["other"]
    return [(label, 100.0 * counts[label] / max(total, 1)) for label in labels if counts[label]]


def summarize(spy: PySpy, workers: int) -> dict[str, list[tuple[str, float]]]:
    """Shares (percent of the thread's wall-clock samples) per step and cross-cutting cost."""
    slot = _samples(spy.outputs["worker"], "slot-")
    main = _samples(spy.outputs["client"], "MainThread")
    status = _samples(spy.outputs["client"], "status-counter")
    # The client's main thread sleeps in PySpy.before while the profilers attach: that many
    # samples of every other thread are idle time outside the timed part.
    pause = sum(c for f, c in main if _has(f, "PySpy.before", "dispatch_profile.py"))
    waits = [
        ("ack (Consumer.ack)", "Consumer.ack", "mq/"),
        ("wait for a status (Consumer.get)", "Consumer.get", "mq/"),
    ]
    return {
        "worker slot thread, by step": _shares(slot, SLOT_STEPS, pause=pause * workers),
        "worker slot thread, across steps": _shares(slot, CROSS, pause=pause * workers),
        "client main thread (the scheduler's role)": _shares(main, CLIENT_STEPS),
        "client main thread, across steps": _shares(main, CROSS, idle="other"),
        "client status thread (consume + ack)": _shares(status, waits, pause=pause),
    }


def render_profile(
    title: str, shares: dict[str, list[tuple[str, float]]], slot_ms_per_unit: float
) -> list[str]:
    """Markdown lines; slot shares also in ms per unit of work (``slot_ms_per_unit`` = a slot's
    wall time per unit it handled: worker processes × seconds / N)."""
    lines = [
        f"Profile, {title} (py-spy, wall clock, share of the thread's samples; a slot spent "
        f"{slot_ms_per_unit:.1f} ms per unit of work):",
        "",
    ]
    for part, rows in shares.items():
        scale = slot_ms_per_unit / 100 if part.startswith("worker slot") else 0.0
        body = "; ".join(
            f"{label} {share:.0f} %" + (f" ({share * scale:.1f} ms)" if scale else "")
            for label, share in rows
        )
        lines.append(f"- {part}: {body or 'no samples'}.")
    return lines
