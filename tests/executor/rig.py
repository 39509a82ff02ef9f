"""A Tactus installation with executors: the scheduler and mx as real OS processes (the fault
suite's :class:`~tests.faults.installation.FaultInstallation`), and executors started with
``launch.py executor``, optionally inside a network namespace.

Units of work count their runs in a file (:attr:`ExecutorRig.runs`): each run appends one line
``<uow id> <attempt>``, so a test sees whether any unit of work ran twice.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from db.states import UowState
from tests.faults.installation import Daemon, FaultInstallation, LogTap
from tests.servers import unique_name
from tests.supervisor.installation import ROOT

#: Settings of these drills: a beat every half second, lost after three missed (1.5 s).
EXECUTOR_SETTINGS = {"TACTUS_HEARTBEAT_INTERVAL": "0.5", "TACTUS_HEARTBEAT_MISSES": "3"}
#: Seconds an executor's claim long-polls in the drills.
WAIT = "2"


class ExecutorRig(FaultInstallation):
    """The scheduler and mx (no supervisor: no local worker runs anything), and executors."""

    def __init__(
        self,
        root: Path,
        *,
        store_uri: str | None = None,
        broker_uri: str = "store",
        mx_host: str = "127.0.0.1",
        settings: dict[str, str] | None = None,
    ) -> None:
        uri = store_uri or f"sqlite:///{root / 'var' / 'tactus.db'}"
        super().__init__(
            root,
            store_uri=uri,
            direct_store_uri=uri,
            broker_uri=broker_uri,
            queue_prefix=unique_name("ex"),
            settings={**EXECUTOR_SETTINGS, "TACTUS_MX_HOST": mx_host, **(settings or {})},
        )
        self.mx_host = mx_host
        self.runs = root / "runs.txt"
        self.runs.touch()
        self.executors: dict[str, Daemon] = {}
        self._token_file: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{self.mx_host}:{self.mx_port}/api/v1"

    def up(self, *entries: dict[str, Any]) -> None:
        """The schema, ``entries`` registered, the scheduler and mx. (Registered first: a
        scheduler reads the registry every 10 s, and until then gives up an invalid unit of
        work of a process it does not know yet instead of retrying it.)"""
        result = self.launch("db", "--init")
        assert result.returncode == 0, result.stderr
        if entries:
            self.register_processes(*entries)
        self.start("scheduler")
        self.start("mx")

    @property
    def token_file(self) -> Path:
        """A token of role executor, made with ``launch.py token --create``, in a 0600 file."""
        if self._token_file is None:
            made = self.launch("token", "--create", "executors", "--role", "executor")
            assert made.returncode == 0, made.stderr
            path = self.root / "executor.token"
            path.write_text(made.stdout.strip() + "\n")
            path.chmod(0o600)
            self._token_file = path
        return self._token_file

    def counting(self, name: str, *, seconds: float = 0.0, **fields: Any) -> dict[str, Any]:
        """A process whose command appends ``<uow id> <attempt>`` to :attr:`runs`, then sleeps."""
        line = f"echo {{uow_id}} {{attempt}} >> {self.runs}; sleep {seconds}"
        return {
            "name": name,
            "kind": "freerun",
            "trigger": "every 86400",
            "max_active": 1000,
            "retry_delay": 1,
            "command": ["sh", "-c", line],
            **fields,
        }

    def trigger(self, process: str, times: int = 1) -> list[str]:
        """Fire ``process`` through mx's API; the ids of the units of work made."""
        made = []
        for _ in range(times):
            status, body = self.api("POST", f"/processes/{process}/trigger")
            assert status in (201, 202), body
            made.append(body["uow"]["id"])
        return made

    def executor(
        self, name: str, *args: str, netns: str | None = None, url: str | None = None
    ) -> Daemon:
        """``launch.py -v executor --url ... --token-file ... --name NAME ARGS`` in its own
        session (in the network namespace ``netns`` when given)."""
        argv = [
            sys.executable,
            str(ROOT / "launch.py"),
            "-v",
            "executor",
            "--url",
            url or f"http://{self.mx_host}:{self.mx_port}",
            "--token-file",
            str(self.token_file),
            "--name",
            name,
            "--wait",
            WAIT,
            "--backoff-base",
            "0.2",
            "--backoff-max",
            "1",
            *args,
        ]
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        # nothing of the store or the broker: an executor has no use for them
        env = {
            k: v for k, v in self.env.items() if k not in ("TACTUS_STORE_URI", "TACTUS_BROKER_URI")
        }
        proc = subprocess.Popen(
            argv,
            cwd=self.root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        daemon = Daemon(f"executor {name}", proc, LogTap(proc.stdout, self.root / f"{name}.log"))
        self.executors[name] = daemon
        self.daemons[daemon.name] = daemon
        return daemon

    def kill_executor(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal an executor (SIGKILL: and its process group's children stay: only the
        executor itself dies, as when the OOM killer picks it)."""
        daemon = self.executors[name]
        daemon.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            daemon.proc.wait(15)

    def stop_executor(self, name: str, timeout: float = 30.0) -> int:
        """SIGTERM (drain) and wait; the exit code."""
        daemon = self.executors[name]
        with contextlib.suppress(ProcessLookupError):
            daemon.proc.send_signal(signal.SIGTERM)
        return daemon.proc.wait(timeout)

    def stop(self) -> None:
        for name, daemon in self.executors.items():
            if daemon.alive():
                try:
                    self.stop_executor(name, timeout=15)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(daemon.pid, signal.SIGKILL)
        super().stop()

    # -- counting ---------------------------------------------------------------------------------

    def run_counts(self) -> Counter[str]:
        """Runs per unit of work (any attempt)."""
        lines = self.runs.read_text().split("\n")
        return Counter(line.split()[0] for line in lines if line.strip())

    def states(self, uow_ids: list[str]) -> dict[str, UowState]:
        return {u: self.store.get_uow(u).state for u in uow_ids}

    def all_processed(self, uow_ids: list[str]) -> bool:
        return all(s is UowState.PROCESSED for s in self.states(uow_ids).values())
