"""Worker tests with real OS processes: ``python -m workers PROC`` on an SQLite store and the
embedded store queue in ``tmp_path``, configured through ``TACTUS_*`` variables."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import psutil
import pytest

from db import open_store
from db.clock import SystemClock
from db.ids import new_id
from db.models import ProcessEntry, ProcessRecord, UnitOfWork
from db.states import ProcessKind, ProcessSource, UowKind, UowState
from mq import open_broker
from mq.message import dead_letter_queue, process_queue, uow_message
from settings import load_settings
from tests.polling import wait_until

ROOT = Path(__file__).resolve().parents[2]


class Harness:
    """One installation in ``tmp_path``: its store, broker, processes and worker processes."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TACTUS_STORE_URI": f"sqlite:///{tmp_path / 'tactus.db'}",
            "TACTUS_BROKER_URI": "store",
            "TACTUS_VAR_DIR": str(tmp_path / "var"),
            "TACTUS_BOX_ID": "testbox",
            "TACTUS_QUEUE_PREFIX": f"t{secrets.token_hex(4)}",
            "TACTUS_HEARTBEAT_INTERVAL": "0.2",
            "TACTUS_HEARTBEAT_MISSES": "3",
            "TACTUS_WORKER_STOP_GRACE": "5",
        }
        self.env.pop("TACTUS_SETTINGS", None)
        self.settings = load_settings(environ=self.env, cwd=tmp_path)
        self.clock = SystemClock()
        self.store = open_store(self.settings.store_uri)
        self.store.init_schema()
        self.broker = open_broker("store", self.store)
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    # -- set-up -----------------------------------------------------------------------------------

    def register(self, name: str, **fields: object) -> ProcessEntry:
        """A freerun process (``command`` or ``worker`` given in ``fields``)."""
        fields.setdefault("trigger", "every 3600")
        for key in ("timeout", "retry_delay"):
            if isinstance(fields.get(key), int | float):
                fields[key] = timedelta(seconds=fields[key])  # type: ignore[arg-type]
        if isinstance(fields.get("command"), list):
            fields["command"] = tuple(fields["command"])  # type: ignore[arg-type]
        entry = ProcessEntry(name=name, kind=ProcessKind.FREERUN, **fields)  # type: ignore[arg-type]
        now = self.clock.now()
        self.store.insert_process(
            ProcessRecord(entry=entry, source=ProcessSource.API, created_at=now, updated_at=now)
        )
        return entry

    def submit(self, process: str, *, publish: bool = True, **fields: object) -> UnitOfWork:
        """A requested unit of work of ``process``, published to its queue."""
        now = self.clock.now()
        uow = UnitOfWork(
            id=new_id(),
            process=process,
            kind=UowKind.FREERUN,
            start_timeperiod="2026010513",
            end_timeperiod="2026010514",
            run_key=new_id(),
            created_at=now,
            updated_at=now,
            **fields,  # type: ignore[arg-type]
        )
        uow = self.store.create_uow(uow)
        if publish:
            self.publish(uow)
        return uow

    def publish(self, uow: UnitOfWork) -> None:
        self.publish_raw(uow.process, uow_message(uow.id, uow.process).encode())

    def publish_raw(self, process: str, body: bytes) -> None:
        self.broker.publish(self.queue(process), body)

    def queue(self, process: str) -> str:
        return process_queue(self.settings.queue_prefix, process)

    def dead_depth(self, process: str) -> int:
        return self.broker.depth(dead_letter_queue(self.queue(process)))

    # -- worker processes -------------------------------------------------------------------------

    def start_worker(self, process: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        log_path = self.tmp / f"worker-{process}-{len(self.procs)}.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "workers", process, *args],
                cwd=ROOT,
                env={**self.env, **env},
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        self.procs.append((proc, log_path))
        return proc

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
            for _, path in self.procs
            if path.exists()
        )

    def wait_exit(self, proc: subprocess.Popen[bytes], deadline: float = 15.0) -> int:
        wait_until(lambda: proc.poll() is not None, deadline, what=f"exit of {proc.pid}")
        return proc.returncode

    # -- observing --------------------------------------------------------------------------------

    def uow(self, uow_id: str) -> UnitOfWork:
        return self.store.get_uow(uow_id)

    def wait_uow(self, uow_id: str, *states: UowState, deadline: float = 15.0) -> UnitOfWork:
        """Poll until the unit of work is in one of ``states``; fail with the worker logs."""
        try:
            return wait_until(
                lambda: (u := self.uow(uow_id)).state in states and u,
                deadline,
                what=f"uow {uow_id} to reach {[str(s) for s in states]}",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; it is {self.uow(uow_id).state}\n{self.logs()}") from None

    def history(self, uow_id: str) -> list[tuple[str, str | None]]:
        return [(e.trigger, e.to_state) for e in self.store.history("uow", uow_id)]

    # -- teardown ---------------------------------------------------------------------------------

    def close(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
        _kill_strays(str(self.tmp))
        self.broker.close()
        self.store.close()


def _kill_strays(marker: str) -> None:
    """Kill commands that a SIGKILLed worker left behind (their command line names tmp_path)."""
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.pid != os.getpid() and marker in " ".join(proc.info["cmdline"] or ()):
                proc.kill()


@pytest.fixture
def harness(tmp_path):
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.close()


def gone(pid: int) -> bool:
    """The process no longer runs (a zombie waiting for an init that does not reap counts)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
