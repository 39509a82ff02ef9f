"""A throw-away Tactus installation in a temporary directory, driven through ``launch.py`` as an
operator would: its own store, pid and log directories, and quick supervisor timings.

Every process it starts carries ``TACTUS_TEST_RUN=<unique id>`` in its environment (the daemons
pass their environment on to what they start), so :meth:`Installation.cleanup` finds and kills
whatever a failed test left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import psutil

from db import open_store
from db.errors import NotFound
from db.models import SupervisedProcess
from db.states import SupervisedState
from tests.polling import wait_until

ROOT = Path(__file__).resolve().parents[2]
BOX = "box1"


class Installation:
    """Runs ``launch.py`` in ``root`` with its own settings."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.run_id = uuid.uuid4().hex
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TACTUS_")}
        self.env.update(
            PYTHONPATH=str(ROOT),
            TACTUS_TEST_RUN=self.run_id,
            TACTUS_BOX_ID=BOX,
            TACTUS_STARTSECS="0.2",
            TACTUS_STOPWAITSECS="2",
            TACTUS_BACKOFF_BASE="0.1",
            TACTUS_SUPERVISOR_POLL="0.1",
            TACTUS_STATS_INTERVAL="0.2",
        )
        self.var = root / "var"
        self._store = None

    def launch(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(ROOT / "launch.py"), *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "launch.py"), *args],
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def register(self, yaml_text: str) -> None:
        (self.root / "ctx.yaml").write_text(yaml_text)
        result = self.launch("register", "ctx.yaml")
        assert result.returncode == 0, result.stderr

    @property
    def store(self):
        if self._store is None:
            self._store = open_store(f"sqlite:///{self.var / 'tactus.db'}")
        return self._store

    def pid_file(self, name: str) -> Path:
        return self.var / "run" / f"{name}.pid"

    def pid(self, name: str) -> int | None:
        try:
            return int(self.pid_file(name).read_text().strip())
        except (OSError, ValueError):
            return None

    def record(self, name: str) -> SupervisedProcess | None:
        try:
            return self.store.get_supervised(BOX, name)
        except NotFound:
            return None

    def wait_state(self, name: str, state: SupervisedState, deadline: float = 15.0):
        return wait_until(
            lambda: (r := self.record(name)) is not None and r.state == state and r,
            deadline,
            what=f"{name} {state}",
        )

    def ours(self) -> list[psutil.Process]:
        """Live processes of this installation (daemons, supervised processes, their children)."""
        found = []
        for proc in psutil.process_iter():
            try:
                if proc.environ().get("TACTUS_TEST_RUN") == self.run_id:
                    if proc.status() != psutil.STATUS_ZOMBIE:
                        found.append(proc)
            except psutil.Error:
                continue
        return found

    def running(self, *cmdline: str) -> list[psutil.Process]:
        """Our live processes whose command line is exactly ``cmdline``."""
        matches = []
        for proc in self.ours():
            try:
                if proc.cmdline() == list(cmdline):
                    matches.append(proc)
            except psutil.Error:
                continue
        return matches

    def cleanup(self) -> None:
        for proc in self.ours():
            try:
                group = os.getpgid(proc.pid)
                if group == os.getpgrp():  # started from this test run: never our own group
                    proc.kill()
                else:
                    os.killpg(group, signal.SIGKILL)
            except (OSError, psutil.Error):
                continue
        if self._store is not None:
            self._store.close()


def gone(pid: int) -> bool:
    """Dead, or a zombie nobody reaped yet (init in a container may be slow to)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
