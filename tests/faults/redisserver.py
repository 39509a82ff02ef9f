"""A private Redis server for fault drills: its own port and folder, so that a test may kill and
restart it without touching the shared server on 6379.

It keeps an append-only file fsynced before every answer (``--appendfsync always``) and no
snapshots: what it acknowledged survives a SIGKILL, and a restart replays the file.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from tests.faults.pgcluster import free_port

#: Seconds a start may take, the append-only file replayed.
START_TIMEOUT = 30.0


def redis_server_binary() -> str | None:
    """The ``redis-server`` program, or None."""
    return shutil.which("redis-server")


class PrivateRedis:
    """One redis-server on ``127.0.0.1:<free port>`` with its data in ``folder``."""

    def __init__(self, folder: Path, *, binary: str) -> None:
        self.folder = folder
        self.binary = binary
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def uri(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> float:
        """Start the server (again) and wait until it answers PING; returns the seconds that
        took."""
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--logfile",
                str(self.folder / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=1)
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
                try:
                    if client.ping():
                        return time.monotonic() - started
                except redis.RedisError:
                    pass
                if time.monotonic() - started > START_TIMEOUT:
                    raise RuntimeError(f"redis-server did not answer within {START_TIMEOUT}s")
                time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no goodbye, only what the append-only file holds survives."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM: the server closes its files and exits."""
        self._end(signal.SIGTERM)

    def _end(self, sig: signal.Signals) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
