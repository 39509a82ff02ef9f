"""A private nats-server with JetStream for the fault drills: its own port and store folder, so
that a drill may stop, kill and restart it without touching the shared server on 4222.

Needs the ``nats-server`` binary on the PATH (``apt-get install nats-server``): without it the
drill skips with the reason, and fails when ``CI=true``.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests import servers
from tests.faults.pgcluster import free_port
from tests.polling import wait_until

#: Seconds a start or a stop may take.
START_WAIT = 20.0


class PrivateNats:
    """``nats-server -js -sd <root>/js -p <free port>`` on 127.0.0.1; :meth:`restart` keeps the
    port and the store folder, so streams, messages and consumers survive as on a real host."""

    def __init__(self, root: Path) -> None:
        binary = shutil.which("nats-server")
        if binary is None:
            servers.unavailable("nats-server not found on the PATH (apt-get install nats-server)")
        self.binary = binary
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = root / "nats-server.log"

    @property
    def uri(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server and return once it accepts connections."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                self.binary,
                "-js",
                "-sd",
                str(self.root / "js"),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-l",
                str(self.log),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(
            lambda: self.proc.poll() is not None or servers.port_open("127.0.0.1", self.port),
            deadline=START_WAIT,
            interval=0.05,
            what=f"nats-server on port {self.port}",
        )
        if self.proc.poll() is not None:
            raise RuntimeError(f"nats-server exited: {self.tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server with ``sig`` (SIGTERM: a clean shutdown; SIGKILL: a crash)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(START_WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(START_WAIT)

    def restart(self, down: float, sig: int = signal.SIGTERM) -> float:
        """Stop, stay down ``down`` seconds, start again; returns the monotonic instant the
        server accepts connections again."""
        self.stop(sig)
        time.sleep(down)
        self.start()
        return time.monotonic()

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""
