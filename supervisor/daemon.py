"""Daemon plumbing shared by every Tactus process: pid files, daemonising, stop and status.

A process named NAME keeps ``<pid_dir>/NAME.pid`` while it runs (as a daemon or in the
foreground with ``--console``); its log is ``<log_dir>/NAME.log`` and anything it prints goes to
``<log_dir>/NAME.out``.

The pid file is the lock (``lockfile.PIDLockFile``, which python-daemon uses: created with
``O_EXCL``, removed at exit). After a crash it stays behind, so "is it running" is answered by
:func:`running_process`: the file names a live process *that existed when the file was written*.
A pid reused since then belongs to a process created after the file, and is never taken for
ours, signalled or reported.

python-daemon's launcher exits 0 even when the daemon then fails to take the pid file (a second
instance dies later, with ``LockTimeout`` in its log), so :func:`refuse_if_running` is called
before daemonising, and ``launch.py`` checks the pid file again afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

import daemon
import psutil
from daemon.pidfile import TimeoutPIDLockFile
from lockfile import LockError
from lockfile.pidlockfile import PIDLockFile

from db.errors import TactusError

log = logging.getLogger(f"tactus.{__name__}")

#: A pid file written this long before its process was created cannot be that process's
#: (clock granularity of the file system and of psutil's create time).
PID_FILE_SLACK = 2.0


class AlreadyRunning(TactusError):
    """A second instance of a process was refused."""

    code = "already_running"
    http_status = 409

    def __init__(self, name: str, pid: int) -> None:
        self.name = name
        self.pid = pid
        super().__init__(f"{name} is already running (pid {pid})")


class PartOfStandalone(TactusError):
    """A daemon that runs inside ``launch.py standalone`` was asked to stop (or restart) alone."""

    code = "part_of_standalone"
    http_status = 409

    def __init__(self, name: str, pid: int) -> None:
        self.name = name
        self.pid = pid
        super().__init__(
            f"{name} runs inside standalone (pid {pid}), which stops only as a whole:"
            " use `launch.py --stop standalone` (or Ctrl-C in its console)"
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class DaemonStatus:
    """What ``launch.py --status`` shows for one process."""

    name: str
    running: bool
    pid: int | None = None
    started_at: datetime | None = None
    rss: int | None = None


def pid_file(pid_dir: str, name: str) -> str:
    return os.path.join(pid_dir, f"{name}.pid")


def log_file(log_dir: str, name: str) -> str:
    return os.path.join(log_dir, f"{name}.log")


def out_file(log_dir: str, name: str) -> str:
    return os.path.join(log_dir, f"{name}.out")


def running_process(path: str) -> psutil.Process | None:
    """The live process the pid file at ``path`` names, or None (no file, no such process, a
    zombie, or a pid reused by a process created after the file was written)."""
    try:
        with open(path) as handle:
            pid = int(handle.read().strip() or 0)
        written = os.stat(path).st_mtime
        if pid <= 0:
            return None
        proc = psutil.Process(pid)
        if proc.create_time() > written + PID_FILE_SLACK or proc.status() == psutil.STATUS_ZOMBIE:
            return None
    except (OSError, ValueError, psutil.Error):
        return None
    return proc


def refuse_if_running(path: str, name: str) -> None:
    """Raise :class:`AlreadyRunning` if the pid file names a live process; remove a stale one."""
    proc = running_process(path)
    if proc is not None:
        raise AlreadyRunning(name, proc.pid)
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
        log.info("%s: removed the stale pid file %s", name, path)


@contextlib.contextmanager
def foreground_pid_file(path: str, name: str):
    """Hold the pid file while a process runs in the foreground (``--console``)."""
    lock = PIDLockFile(path)
    try:
        lock.acquire(timeout=0)
    except LockError as exc:
        proc = running_process(path)
        raise AlreadyRunning(name, proc.pid if proc else 0) from exc
    try:
        yield
    finally:
        with contextlib.suppress(LockError, OSError):
            lock.release()


def daemon_context(
    path: str,
    *,
    working_directory: str,
    output: IO[bytes],
    on_term: Callable[[int, object], None] | None,
) -> daemon.DaemonContext:
    """A python-daemon context: double fork, new session, pid file at ``path`` taken with no
    wait, standard output and error to ``output``, and SIGTERM to ``on_term`` (None keeps
    python-daemon's default, which raises SystemExit)."""
    signal_map: Mapping[int, object] = {
        signal.SIGTSTP: None,
        signal.SIGTTIN: None,
        signal.SIGTTOU: None,
        signal.SIGTERM: on_term or "terminate",
    }
    return daemon.DaemonContext(
        working_directory=working_directory,
        umask=0o027,
        pidfile=TimeoutPIDLockFile(path, acquire_timeout=0),
        stdout=output,
        stderr=output,
        signal_map=dict(signal_map),
        # A service manager that already detached us (systemd, init) still gets a pid file.
        detach_process=True,
    )


def stop_process(path: str, name: str, *, timeout: float, kill_timeout: float = 5.0) -> str:
    """Stop the process of a pid file: SIGTERM to its process group, SIGKILL to the group after
    ``timeout`` seconds. Returns what happened: ``not running``, ``stopped`` or ``killed``."""
    proc = running_process(path)
    if proc is None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        return "not running"
    send = _group_sender(proc.pid)
    send(signal.SIGTERM)
    _, alive = psutil.wait_procs([proc], timeout=timeout)
    outcome = "stopped"
    if alive:
        log.warning("%s: pid %s still alive after %ss, SIGKILL", name, proc.pid, timeout)
        send(signal.SIGKILL)
        psutil.wait_procs(alive, timeout=kill_timeout)
        outcome = "killed"
    # A killed daemon could not remove its pid file.
    if running_process(path) is None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    return outcome


def _group_sender(pid: int) -> Callable[[int], None]:
    """Signal the process group of ``pid``, unless that is our own group (a process started in
    the foreground from this terminal): then only the process."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return lambda sig: None
    if pgid == os.getpgrp():

        def send(sig: int) -> None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

        return send

    def send_group(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)

    return send_group


def status(path: str, name: str) -> DaemonStatus:
    """Whether the process of a pid file runs, its pid, start instant and memory."""
    proc = running_process(path)
    if proc is None:
        return DaemonStatus(name=name, running=False)
    try:
        with proc.oneshot():
            started = datetime.fromtimestamp(proc.create_time(), tz=UTC)
            rss = proc.memory_info().rss
    except psutil.Error:
        return DaemonStatus(name=name, running=False)
    return DaemonStatus(name=name, running=True, pid=proc.pid, started_at=started, rss=rss)
