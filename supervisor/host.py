"""The seam between the supervisor and the operating system.

Every OS effect of the supervisor goes through a :class:`ProcessHost`: spawning a process in a new
session (so it leads its own process group), signalling that whole group, learning at once that a
process exited, and probing a process with psutil. :class:`PosixHost` is the real one;
:class:`supervisor.fake_host.FakeHost` is the in-memory one the edge-by-edge tests drive.

Identity: a process is (pid, create_time), never a pid alone. A pid is reused by the kernel once
its process is reaped; the create time tells the new process from the old.

Fast exit detection (:meth:`PosixHost.wait`): one pidfd per watched process (``os.pidfd_open``,
Linux 5.3) in a selector, plus a self-pipe for :meth:`~PosixHost.wake`. A pidfd turns readable the
moment its process exits, and, unlike ``waitpid`` or SIGCHLD, it works from any thread and for
processes that are not our children, which is what a restarted supervisor's re-adopted processes
are.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import selectors
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import psutil

log = logging.getLogger(f"tactus.{__name__}")

#: Two create times closer than this are the same process (psutil's resolution is one clock
#: tick, 10 ms; the stored value is the very float psutil returned).
CREATE_TIME_TOLERANCE = 0.005


@dataclass(frozen=True, kw_only=True, slots=True)
class ProcessFacts:
    """What psutil tells about one live process."""

    pid: int
    create_time: float
    #: Resident memory in bytes.
    rss: int = 0
    #: CPU use since the previous probe of the same process, in percent of one core.
    cpu_percent: float = 0.0
    threads: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class Exit:
    """A watched process ended."""

    pid: int
    #: ``Popen.returncode`` convention: the exit status, or ``-N`` when killed by signal N;
    #: None when the process was not our child (re-adopted), so its status is unknown.
    exit_code: int | None


def same_process(create_time: float | None, other: float | None) -> bool:
    """Whether two create times name the same OS process."""
    if create_time is None or other is None:
        return False
    return math.isclose(create_time, other, rel_tol=0.0, abs_tol=CREATE_TIME_TOLERANCE)


class ProcessHost(Protocol):
    """The OS seam of the supervisor. All methods are called from the supervisor's loop thread,
    except :meth:`wake`, which any thread may call."""

    def spawn(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: str, output: str | None
    ) -> ProcessFacts:
        """Start ``argv`` in a new session (its own process group) and watch it.

        Args:
            argv: the program and its arguments (no shell).
            env: its complete environment.
            cwd: its working directory.
            output: a file its standard output and error are appended to (None: discarded).

        Returns:
            The new process's pid and create time.

        Raises:
            OSError: it could not be started (no such program, no permission ...).
        """

    def adopt(self, pid: int, create_time: float) -> bool:
        """Watch a process started by an earlier supervisor, if (pid, create_time) still names
        a live process. Returns False (and watches nothing) for a dead or reused pid."""

    def forget(self, pid: int) -> None:
        """Stop watching ``pid`` (no error if not watched)."""

    def signal_group(self, pid: int, sig: int) -> bool:
        """Send ``sig`` to the process group led by ``pid``; False if the group is gone."""

    def group_alive(self, pid: int) -> bool:
        """Whether any process of the group led by ``pid`` still lives."""

    def probe(self, pid: int, create_time: float | None = None) -> ProcessFacts | None:
        """Facts about ``pid``; None if it is gone or (given ``create_time``) is another
        process now."""

    def scan(self, env_key: str, env_value: str) -> list[tuple[ProcessFacts, str]]:
        """Session leaders whose environment has ``env_key=env_value`` and whose parent does not:
        the processes a crashed supervisor left behind. Returns (facts, value of
        ``TACTUS_SUPERVISED``) pairs."""

    def wait(self, timeout: float) -> list[Exit]:
        """Block until a watched process exits, :meth:`wake` is called, or ``timeout`` seconds
        pass; return the exits seen (each process is reaped and forgotten)."""

    def wake(self) -> None:
        """Make a blocked or the next :meth:`wait` return at once."""

    def close(self) -> None:
        """Release the host's descriptors (watched processes keep running)."""


#: Environment variable naming the supervisor that started a process (see ``scan``).
SUPERVISOR_ENV = "TACTUS_SUPERVISOR"
#: Environment variable naming the supervised process (instance) a process runs as.
SUPERVISED_ENV = "TACTUS_SUPERVISED"


class PosixHost:
    """The real :class:`ProcessHost` on Linux: subprocess, pidfd, killpg and psutil."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        #: pid -> pidfd of every watched process.
        self._pidfds: dict[int, int] = {}
        #: Our own children, kept until reaped: a dropped Popen would let the subprocess
        #: module reap the child behind our back (``subprocess._cleanup``) and lose its status.
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        #: psutil handles, reused so that ``cpu_percent`` measures since the previous probe.
        self._handles: dict[int, psutil.Process] = {}
        self._lock = threading.Lock()

    # -- starting and watching ------------------------------------------------------------------

    def spawn(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: str, output: str | None
    ) -> ProcessFacts:
        """See :meth:`ProcessHost.spawn`."""
        sink = open(output, "ab") if output else subprocess.DEVNULL
        try:
            child = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        finally:
            if output:
                sink.close()
        self._children[child.pid] = child
        # Not yet reaped, so the pid cannot have been reused: the pidfd names our child, and
        # psutil reads the create time even of a child that already exited (a zombie).
        self._watch(child.pid)
        return ProcessFacts(pid=child.pid, create_time=psutil.Process(child.pid).create_time())

    def adopt(self, pid: int, create_time: float) -> bool:
        """See :meth:`ProcessHost.adopt`."""
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        # The pidfd pins the process: checked after opening it, the create time cannot belong
        # to a process that replaces this one between the check and the watch.
        facts = self.probe(pid, create_time)
        if facts is None:
            os.close(pidfd)
            return False
        self._register(pid, pidfd)
        return True

    def _watch(self, pid: int) -> None:
        self._register(pid, os.pidfd_open(pid))

    def _register(self, pid: int, pidfd: int) -> None:
        with self._lock:
            old = self._pidfds.pop(pid, None)
            if old is not None:
                self._selector.unregister(old)
                os.close(old)
            self._pidfds[pid] = pidfd
            self._selector.register(pidfd, selectors.EVENT_READ, pid)

    def forget(self, pid: int) -> None:
        """See :meth:`ProcessHost.forget`."""
        with self._lock:
            pidfd = self._pidfds.pop(pid, None)
            if pidfd is not None:
                self._selector.unregister(pidfd)
                os.close(pidfd)
        self._handles.pop(pid, None)

    def wait(self, timeout: float) -> list[Exit]:
        """See :meth:`ProcessHost.wait`."""
        exits = []
        for key, _ in self._selector.select(max(timeout, 0.0)):
            if key.data is None:
                self._drain_wake()
                continue
            pid = key.data
            exits.append(Exit(pid=pid, exit_code=self._reap(pid)))
            self.forget(pid)
        return exits

    def _reap(self, pid: int) -> int | None:
        child = self._children.pop(pid, None)
        if child is None:
            return None  # re-adopted: init reaps it, its status is lost to us
        return child.wait()

    def wake(self) -> None:
        """See :meth:`ProcessHost.wake`."""
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\0")

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 512):
                pass

    # -- signals and facts ----------------------------------------------------------------------

    def signal_group(self, pid: int, sig: int) -> bool:
        """See :meth:`ProcessHost.signal_group`."""
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return False
        except PermissionError:
            log.warning("pid %s: not allowed to send signal %s to its group", pid, sig)
            return False
        return True

    def group_alive(self, pid: int) -> bool:
        """See :meth:`ProcessHost.group_alive`."""
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        # killpg(0) also succeeds while only zombies remain; a zombie of ours is the leader,
        # reaped by wait(), and orphaned zombies are reaped by init within moments.
        return any(_alive(p) for p in _group_members(pid))

    def probe(self, pid: int, create_time: float | None = None) -> ProcessFacts | None:
        """See :meth:`ProcessHost.probe`."""
        handle = self._handles.get(pid)
        try:
            # is_running() compares the create time too: a reused pid gets a new handle.
            if handle is None or not handle.is_running():
                handle = psutil.Process(pid)
            with handle.oneshot():
                started = handle.create_time()
                if create_time is not None and not same_process(started, create_time):
                    return None
                if handle.status() == psutil.STATUS_ZOMBIE:
                    return None
                facts = ProcessFacts(
                    pid=pid,
                    create_time=started,
                    rss=handle.memory_info().rss,
                    cpu_percent=handle.cpu_percent(interval=None),
                    threads=handle.num_threads(),
                )
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            self._handles.pop(pid, None)
            return None
        self._handles[pid] = handle
        return facts

    def scan(self, env_key: str, env_value: str) -> list[tuple[ProcessFacts, str]]:
        """See :meth:`ProcessHost.scan`."""
        marked: dict[int, tuple[psutil.Process, str]] = {}
        for proc in psutil.process_iter():
            try:
                environ = proc.environ()
            except (psutil.Error, OSError):
                continue
            if environ.get(env_key) == env_value:
                marked[proc.pid] = (proc, environ.get(SUPERVISED_ENV, ""))
        found = []
        for pid, (proc, name) in marked.items():
            try:
                # A supervised process leads its session; its children inherit the marker
                # but neither lead a session nor have an unmarked parent.
                if os.getsid(pid) != pid or proc.ppid() in marked:
                    continue
                found.append((ProcessFacts(pid=pid, create_time=proc.create_time()), name))
            except (psutil.Error, OSError):
                continue
        return found

    def close(self) -> None:
        """See :meth:`ProcessHost.close`."""
        for pid in list(self._pidfds):
            self.forget(pid)
        self._selector.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def _group_members(pgid: int) -> list[psutil.Process]:
    """Processes whose process group is ``pgid`` (a /proc scan: about 8 ms for 200 processes)."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                members.append(proc)
        except OSError as exc:
            if exc.errno not in (errno.ESRCH, errno.EPERM):
                raise
    return members


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
