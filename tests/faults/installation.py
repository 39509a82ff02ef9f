"""A Tactus installation for fault drills: real daemons as OS processes, reaching the store and the
broker through the tests' proxies, driven as an operator drives them.

It builds on :class:`tests.supervisor.installation.Installation` (``launch.py`` in a temporary
folder, every process marked with ``TACTUS_TEST_RUN`` so that :meth:`cleanup` finds whatever is
left) and adds:

- settings through ``TACTUS_*`` variables: the proxied store and broker URIs, a unique queue
  prefix, mx's port, and short heartbeats and outage back-offs so that drills last seconds;
- the daemons (``scheduler``, ``supervisor`` with its workers, ``mx``) started with
  ``launch.py --start NAME --console`` in their own sessions, their output read line by line and
  time-stamped as it arrives (:class:`LogTap`), so that a test counts a daemon's log lines in a
  window without parsing their format;
- :meth:`FaultInstallation.kill` (SIGKILL of one daemon), :meth:`FaultInstallation.stop` (SIGTERM,
  then SIGKILL of each group: nothing is left running);
- the REST API (``api``, ``health``) with the admin token mx writes on its first start, and the
  store over a direct connection (never through the faulted proxy) for the tests' counts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import yaml

from db import open_store
from db.states import SupervisedState
from tests.faults.pgcluster import free_port
from tests.polling import wait_until
from tests.supervisor.installation import BOX, ROOT, Installation

#: The built-in daemons in the order they are stopped (the supervisor last: it stops workers).
DAEMONS = ("mx", "scheduler", "supervisor")
#: Seconds a daemon gets between SIGTERM and SIGKILL of its group at the end of a test.
STOP_WAIT = 20.0
#: Settings every drill uses, short so that a drill lasts seconds and not minutes:
#: - a heartbeat a second, a worker lost after three missed: a 10 s outage is over three
#:   liveness windows, so a daemon that judges workers by stale beats after an outage shows it;
#: - outage back-off capped at 2 s (default 30 s): a daemon notices the return within ~2 s,
#:   well inside the issue's 10 s for the health route;
#: - a grace of 2 s for running units of work when a worker stops, so teardown is quick.
FAULT_SETTINGS = {
    "TACTUS_HEARTBEAT_INTERVAL": "1",
    "TACTUS_HEARTBEAT_MISSES": "3",
    "TACTUS_OUTAGE_BACKOFF_MAX": "2",
    "TACTUS_VISIBILITY_TIMEOUT": "10",
    "TACTUS_WORKER_STOP_GRACE": "2",
}


@dataclass
class LogLine:
    at: float  #: time.monotonic() when it was read
    wall: datetime
    text: str


class LogTap:
    """Reads a daemon's merged stdout and stderr line by line in a thread, keeping each line with
    the instant it arrived, and copies it to a file."""

    def __init__(self, stream: Any, path: Path) -> None:
        self.path = path
        self.lines: list[LogLine] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._read, args=(stream,), name=f"tap-{path.stem}", daemon=True
        )
        self._thread.start()

    def _read(self, stream: Any) -> None:
        with self.path.open("a", encoding="utf-8") as copy:
            for raw in iter(stream.readline, b""):
                text = raw.decode("utf-8", "replace").rstrip("\n")
                line = LogLine(time.monotonic(), datetime.now(UTC), text)
                with self._lock:
                    self.lines.append(line)
                copy.write(f"{line.wall:%H:%M:%S.%f} {text}\n")
                copy.flush()

    def between(self, start: float, end: float) -> list[str]:
        """Lines that arrived in [start, end) (``time.monotonic()`` instants)."""
        with self._lock:
            return [line.text for line in self.lines if start <= line.at < end]

    def contains(self, text: str) -> bool:
        with self._lock:
            return any(text in line.text for line in self.lines)

    def tail(self, n: int = 40) -> str:
        with self._lock:
            return "\n".join(line.text for line in self.lines[-n:])

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


@dataclass
class Daemon:
    name: str
    proc: subprocess.Popen
    tap: LogTap
    #: psutil's create_time of the process: pid + create time identify it for good.
    created: float = field(default=0.0)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None


class FaultInstallation(Installation):
    """An installation in ``root`` whose daemons use ``store_uri`` and ``broker_uri`` (the
    proxies); ``direct_store_uri`` is the same store reached without the proxy."""

    def __init__(
        self,
        root: Path,
        *,
        store_uri: str,
        direct_store_uri: str,
        broker_uri: str,
        queue_prefix: str,
        settings: dict[str, str] | None = None,
        pg: Any = None,
        rabbit: Any = None,
    ) -> None:
        super().__init__(root)
        #: The proxied store and broker (``conftest.ProxiedStore``, ``conftest.ProxiedRabbit``):
        #: a drill reaches their proxies through them.
        self.pg = pg
        self.rabbit = rabbit
        self.direct_store_uri = direct_store_uri
        self.queue_prefix = queue_prefix
        self.mx_port = free_port()
        self.env.update(FAULT_SETTINGS)
        self.env.update(
            TACTUS_STORE_URI=store_uri,
            TACTUS_BROKER_URI=broker_uri,
            TACTUS_VAR_DIR=str(self.var),
            TACTUS_QUEUE_PREFIX=queue_prefix,
            TACTUS_MX_PORT=str(self.mx_port),
        )
        self.env.update(settings or {})
        self.daemons: dict[str, Daemon] = {}
        #: Daemons replaced by a restart (killed in a drill).
        self.retired: list[Daemon] = []
        self._token: str | None = None

    def register_processes(self, *entries: dict[str, Any]) -> None:
        """``launch.py register`` of a YAML process_context holding ``entries``."""
        self.register(yaml.safe_dump({"processes": list(entries)}, sort_keys=False))

    @property
    def store(self):
        if self._store is None:
            self._store = open_store(self.direct_store_uri)
        return self._store

    def reopen_store(self) -> None:
        """Forget the test's own store connections (after the server itself restarted, every
        pooled connection is dead)."""
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- daemons ----------------------------------------------------------------------------------

    def start(self, name: str, *, ready: float = 60.0, env: dict[str, str] | None = None) -> Daemon:
        """``launch.py --start NAME --console`` in its own session; returns once it is ready
        (the scheduler and the supervisor said they started, mx answers its health route).
        ``env`` overrides settings for this daemon only (another proxy, say)."""
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "launch.py"), "--start", name, "--console"],
            cwd=self.root,
            env={**self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        previous = self.daemons.get(name)
        if previous is not None:  # a restart: keep the old one's output for the report
            self.retired.append(previous)
        tap = LogTap(proc.stdout, self.root / f"{name}.console.log")
        daemon = Daemon(name, proc, tap)
        with contextlib.suppress(psutil.Error):
            daemon.created = psutil.Process(proc.pid).create_time()
        self.daemons[name] = daemon
        marker = {
            "scheduler": "scheduler starting",
            "supervisor": f"supervisor {BOX}: started",
        }.get(name)
        if name == "mx":
            self.wait(lambda: self.health()[0] is not None, ready, f"{name} to answer")
        elif marker:
            self.wait(lambda: tap.contains(marker), ready, f"{name} to start")
        return daemon

    def start_all(self, *, scheduler_env: dict[str, str] | None = None) -> None:
        """The store's schema, then the scheduler, the supervisor (which starts the workers) and
        mx."""
        result = self.launch("db", "--init")
        assert result.returncode == 0, result.stderr
        self.start("scheduler", env=scheduler_env)
        for name in ("supervisor", "mx"):
            self.start(name)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (SIGKILL by default) to the daemon ``name`` and reap it."""
        daemon = self.daemons[name]
        daemon.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            daemon.proc.wait(15)

    def dead_daemons(self) -> list[str]:
        """The daemons this test started that are no longer running (with their exit codes)."""
        return [
            f"{d.name} (exit {d.proc.returncode})" for d in self.daemons.values() if not d.alive()
        ]

    def stop(self) -> None:
        """SIGTERM each daemon (mx, the scheduler, then the supervisor, which stops its workers),
        SIGKILL of a group still there after :data:`STOP_WAIT`, then kill anything of this run
        left over (a worker's command, an orphan)."""
        for name in DAEMONS:
            daemon = self.daemons.get(name)
            if daemon is None or not daemon.alive():
                continue
            with contextlib.suppress(ProcessLookupError):
                daemon.proc.send_signal(signal.SIGTERM)
            try:
                daemon.proc.wait(STOP_WAIT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(daemon.pid, signal.SIGKILL)
                daemon.proc.wait(10)
        for daemon in [*self.retired, *self.daemons.values()]:
            if daemon.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(daemon.pid, signal.SIGKILL)
                daemon.proc.wait(10)
            daemon.tap.join(5)
        self.cleanup()

    # -- logs -------------------------------------------------------------------------------------

    def lines(self, name: str, start: float, end: float) -> list[str]:
        """The log lines daemon ``name`` wrote in [start, end) (``time.monotonic()``)."""
        return self.daemons[name].tap.between(start, end)

    def report(self) -> str:
        """The tail of every daemon's output and of the workers' log files, for a failure."""
        parts = [
            f"--- {d.name} (pid {d.pid})\n{d.tap.tail()}"
            for d in [*self.retired, *self.daemons.values()]
        ]
        for path in sorted((self.var / "log").glob("*.log")):
            if path.stem in self.daemons:
                continue
            lines = path.read_text(errors="replace").splitlines()[-20:]
            parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    def observe(self, predicate, deadline: float) -> bool:
        """Wait up to ``deadline`` for ``predicate``; False when it did not come (a drill then
        counts and reports what happened instead of stopping at the first miss)."""
        try:
            wait_until(predicate, deadline=deadline, interval=0.1)
        except AssertionError:
            return False
        return True

    def wait(self, predicate, deadline: float, what: str):
        """``wait_until``, failing with the daemons' output."""
        try:
            return wait_until(predicate, deadline=deadline, interval=0.1, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.report()}") from None

    # -- workers ----------------------------------------------------------------------------------

    def instances(self, process: str, workers: int) -> list[str]:
        return [process if i == 0 else f"{process}.{i}" for i in range(workers)]

    def worker_pids(self, process: str, workers: int) -> dict[str, int] | None:
        """{instance: pid} once every instance of ``process`` is running and its worker has
        registered (beats in the store); else None."""
        pids: dict[str, int] = {}
        registered = {w.pid for w in self.store.list_workers(process=process) if w.state == "alive"}
        for instance in self.instances(process, workers):
            record = self.record(instance)
            if record is None or record.state != SupervisedState.RUNNING or record.pid is None:
                return None
            if record.pid not in registered:
                return None
            pids[instance] = record.pid
        return pids

    def wait_workers(self, process: str, workers: int, deadline: float = 60.0) -> dict[str, int]:
        return self.wait(
            lambda: self.worker_pids(process, workers),
            deadline,
            f"{workers} worker(s) of {process} running and registered",
        )

    def worker_exits(self, process: str, workers: int, since: datetime) -> list[str]:
        """Exits of the instances of ``process`` recorded by the supervisor since ``since``."""
        exits = []
        for instance in self.instances(process, workers):
            exits.extend(
                f"{instance}: {event.reason}"
                for event in self.store.history("supervised", f"{BOX}/{instance}")
                if event.at >= since and event.trigger == "exit"
            )
        return exits

    # -- the REST API -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.mx_port}/api/v1"

    @property
    def token(self) -> str:
        if self._token is None:
            path = self.var / "admin.token"
            self.wait(path.exists, 30, "mx to write the admin token")
            self._token = path.read_text().strip()
        return self._token

    def api(
        self, method: str, path: str, body: Any = None, *, timeout: float = 60.0
    ) -> tuple[int, Any]:
        """One request with the admin token; (status, JSON body or text)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, _decoded(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _decoded(exc.read())

    def health(self) -> tuple[int | None, dict[str, Any] | None]:
        """``GET /api/v1/health`` (no credentials); (None, None) while mx does not answer."""
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _decoded(exc.read())
        except (OSError, ValueError):
            return None, None

    def scheduler_alive(self) -> bool:
        status, body = self.health()
        return bool(
            status and isinstance(body, dict) and (body.get("scheduler") or {}).get("alive")
        )


def _decoded(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


#: How ``supervisor/logs.py`` starts each line: the local time (``%(asctime)s``).
_ASCTIME = "%Y-%m-%d %H:%M:%S,%f"


def file_lines_between(path: Path, start: datetime, end: datetime) -> list[str]:
    """Lines of a daemon's log file written in [start, end) (naive local instants, as the log
    format writes them); a line without a time stamp (a traceback) goes with the one before."""
    if not path.exists():
        return []
    found: list[str] = []
    inside = False
    for line in path.read_text(errors="replace").splitlines():
        try:
            stamp = datetime.strptime(line[:23], _ASCTIME)
        except ValueError:
            stamp = None
        if stamp is not None:
            inside = start <= stamp < end
        if inside:
            found.append(line)
    return found


def alive_pids(pids: dict[str, int]) -> dict[str, int]:
    """The instances whose process still runs (not a zombie), of {instance: pid}."""
    alive = {}
    for instance, pid in pids.items():
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive[instance] = pid
        except psutil.NoSuchProcess:
            continue
    return alive
