"""The shell driver: runs a process's ``command`` for one unit of work.

Synergy's command drivers taught what to avoid, so this driver:

- reports the real outcome: exit code 0 is ``processed``, the process's ``noop_exit_code`` is
  ``noop``, anything else (another code, a signal, a timeout, a command that cannot start) is
  ``invalid`` with a clear ``error`` (Synergy's BashDriver reported success on failure);
- reads stdout and stderr together through one selector, so a command filling one pipe while
  nothing reads it cannot deadlock (Synergy read all of stderr, then all of stdout), and keeps
  only a bounded tail of the interleaved output, so hundreds of megabytes cost 64 KiB;
- runs the command in its own session and process group and enforces ``timeout`` on the whole
  group, grandchildren included: SIGTERM, then SIGKILL after :data:`KILL_GRACE` seconds;
- runs no shell unless the entry says ``shell: true`` (then ``/bin/sh -c`` with the string).

The placeholders of SPEC section 4 (``{process}``, ``{timeperiod}``, ``{start_timeperiod}``,
``{end_timeperiod}``, ``{uow_id}``, ``{attempt}``) are filled in with :meth:`str.format_map`, so
``{{`` and ``}}`` are literal braces, as the registration file's validation says. Their values are
ids, timeperiods and process names (letters, digits, ``_``), never text from users, so filling
them into a ``shell: true`` string cannot inject shell syntax. ``{timeperiod}`` is the job's
timeperiod for managed units of work and ``start_timeperiod`` for the others.

The command inherits the worker's environment plus ``TACTUS_UOW_ID``, ``TACTUS_PROCESS`` and
``TACTUS_ATTEMPT`` (and ``TACTUS_START_TIMEPERIOD``, ``TACTUS_END_TIMEPERIOD``), and files in a
folder of its own, removed after it: ``TACTUS_ARGUMENTS`` (its unit of work's arguments as
JSON), ``TACTUS_MESSAGES`` (append lines to it: each becomes a message of the unit of work,
read while it runs) and, when the unit of work has a payload, ``TACTUS_PAYLOAD`` (its bytes;
see :mod:`workers.uow_io`). A step of a flow also gets ``TACTUS_STEP``, ``TACTUS_RESULT``, the
file to write its JSON result to, and ``TACTUS_UPSTREAM``, a file holding its upstream steps'
results. stdin is ``/dev/null``.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import shlex
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from db.errors import InvalidInput
from db.flows import check_result
from workers.base import Outcome
from workers.orphans import WORKER_PID_VARIABLE
from workers.uow_io import MessageFile, command_files

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable, Mapping

    from db.models import ProcessEntry, UnitOfWork

log = logging.getLogger(f"tactus.{__name__}")

#: Bytes of output kept per attempt: the last 64 KiB of stdout and stderr, interleaved in the
#: order they were read.
OUTPUT_TAIL_BYTES = 64 * 1024
#: Seconds between SIGTERM and SIGKILL when the command's process group is killed.
KILL_GRACE = 2.0
#: Seconds output is still read after the command exited (a child it left may hold the pipes).
DRAIN_GRACE = 1.0
#: Seconds between checks of the deadline and of the cancel request while the command runs.
POLL_INTERVAL = 0.05
#: Bytes read from a pipe at once (the size of a Linux pipe buffer).
_READ_SIZE = 64 * 1024


@dataclass(frozen=True, kw_only=True, slots=True)
class CommandResult:
    """How one run of a command ended."""

    #: ``processed`` or ``noop``; None when the attempt failed (see ``error``).
    outcome: Outcome | None
    #: The command's exit code; negative: killed by that signal; None: it never ran.
    exit_code: int | None
    #: Tail of stdout and stderr, interleaved (at most :data:`OUTPUT_TAIL_BYTES`, plus a note of
    #: what was left out).
    output: str
    #: Why the attempt failed, in one line; None when it succeeded.
    error: str | None
    #: True when the caller's ``cancel`` stopped it (the caller decides what that means).
    interrupted: bool = False
    #: The command's pid (also its process group id); None if it did not start.
    pid: int | None = None
    #: Seconds it ran.
    seconds: float = 0.0
    #: What a step wrote to ``$TACTUS_RESULT`` (db.flows), if anything.
    result: dict[str, Any] | None = None


class OutputTail:
    """The last ``limit`` bytes written to it, and how many bytes came before them."""

    def __init__(self, limit: int = OUTPUT_TAIL_BYTES) -> None:
        self.limit = limit
        self.dropped = 0
        self._buffer = bytearray()

    def add(self, data: bytes) -> None:
        self._buffer += data
        excess = len(self._buffer) - self.limit
        if excess > 0:
            del self._buffer[:excess]
            self.dropped += excess

    def text(self) -> str:
        """The kept bytes as text (invalid UTF-8 replaced), after a note of what was dropped."""
        body = self._buffer.decode("utf-8", errors="replace")
        if self.dropped:
            return f"[... {self.dropped} earlier bytes of output omitted ...]\n{body}"
        return body


def placeholder_values(uow: UnitOfWork) -> dict[str, str | int]:
    """The values of the command placeholders for ``uow``."""
    return {
        "process": uow.process,
        "timeperiod": uow.timeperiod or uow.start_timeperiod,
        "start_timeperiod": uow.start_timeperiod,
        "end_timeperiod": uow.end_timeperiod,
        "uow_id": uow.id,
        "attempt": uow.attempt,
    }


def build_argv(entry: ProcessEntry, uow: UnitOfWork) -> list[str]:
    """The argv that runs ``entry.command`` for ``uow``, placeholders filled in.

    Raises:
        ValueError: the entry has no command, or a placeholder cannot be filled (the registration
            file's validation normally prevents both).
    """
    command = entry.command
    if command is None:
        raise ValueError(f"process {entry.name} has no command")
    values = placeholder_values(uow)
    try:
        if isinstance(command, str):
            if entry.shell:
                return ["/bin/sh", "-c", command.format_map(values)]
            command = tuple(shlex.split(command))
        return [arg.format_map(values) for arg in command]
    except (KeyError, IndexError, AttributeError) as exc:
        raise ValueError(f"bad placeholder {exc} in command {command!r}") from exc


def command_environment(uow: UnitOfWork, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The command's environment: ``base`` (the worker's own) plus the ``TACTUS_*`` facts."""
    env = dict(os.environ if base is None else base)
    env.update(
        TACTUS_UOW_ID=uow.id,
        TACTUS_PROCESS=uow.process,
        TACTUS_ATTEMPT=str(uow.attempt),
        TACTUS_START_TIMEPERIOD=uow.start_timeperiod,
        TACTUS_END_TIMEPERIOD=uow.end_timeperiod,
    )
    # Whatever the command starts inherits it: a worker that starts after this one died ends
    # them (workers.orphans).
    env[WORKER_PID_VARIABLE] = str(os.getpid())
    return env


def run_command(
    entry: ProcessEntry,
    uow: UnitOfWork,
    *,
    cancel: threading.Event,
    tick: Callable[[], None] | None = None,
    kill_grace: float = KILL_GRACE,
    messages: Callable[[list[str]], None] | None = None,
) -> CommandResult:
    """Run ``entry.command`` for ``uow`` and wait for it, within ``entry.timeout``.

    Args:
        entry: the process (``command``, ``shell``, ``timeout``, ``noop_exit_code``).
        uow: the claimed unit of work (fills the placeholders, the environment and the input
            files; ``uow.payload``, when loaded, becomes ``$TACTUS_PAYLOAD``).
        cancel: when set, the command's process group is killed and the result says
            ``interrupted`` (a stopping worker, or a unit of work taken away meanwhile).
        tick: called every :data:`POLL_INTERVAL` while the command runs, in the calling
            thread (the runner extends its delivery there).
        kill_grace: seconds between SIGTERM and SIGKILL of the group.
        messages: given the lines the command appended to ``$TACTUS_MESSAGES``, in order,
            every :data:`POLL_INTERVAL` while it runs and once more when it ended, in the
            calling thread.

    Returns:
        The result; this function does not raise for anything the command does.
    """
    with tempfile.TemporaryDirectory(prefix="tactus-uow-") as folder:
        try:
            files = command_files(folder, uow)
        except OSError as exc:
            error = f"cannot write the command's input files: {exc.strerror or exc}"
            return CommandResult(outcome=None, exit_code=None, output="", error=error)
        written = MessageFile(files["TACTUS_MESSAGES"])

        def poll() -> None:
            if messages is not None and (lines := written.read()):
                messages(lines)
            if tick is not None:
                tick()

        if uow.step is not None:
            files.update(
                TACTUS_STEP=uow.step,
                TACTUS_RESULT=os.path.join(folder, "result.json"),
                TACTUS_UPSTREAM=os.path.join(folder, "upstream.json"),
            )
            with open(files["TACTUS_UPSTREAM"], "w", encoding="utf-8") as upstream:
                json.dump(uow.arguments.get("upstream") or {}, upstream)
        done = _run(entry, uow, cancel=cancel, tick=poll, kill_grace=kill_grace, extra=files)
        if messages is not None and (lines := written.read(final=True)):
            messages(lines)
        if uow.step is None or done.outcome is None:
            return done
        try:
            with open(files["TACTUS_RESULT"], encoding="utf-8") as handed:
                text = handed.read()
        except FileNotFoundError:
            return done
        except (OSError, UnicodeDecodeError) as exc:
            return replace(done, outcome=None, error=f"cannot read $TACTUS_RESULT: {exc}")
        if not text.strip():
            return done
        try:
            return replace(done, result=check_result(text))
        except InvalidInput as exc:
            return replace(done, outcome=None, error=f"$TACTUS_RESULT {exc.problem}")


def _run(
    entry: ProcessEntry,
    uow: UnitOfWork,
    *,
    cancel: threading.Event,
    tick: Callable[[], None] | None,
    kill_grace: float,
    extra: Mapping[str, str] | None = None,
) -> CommandResult:
    try:
        argv = build_argv(entry, uow)
    except ValueError as exc:
        return CommandResult(outcome=None, exit_code=None, output="", error=str(exc))
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**command_environment(uow), **dict(extra or {})},
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return CommandResult(
            outcome=None,
            exit_code=None,
            output="",
            error=f"cannot start command {argv[0]!r}: {reason}",
        )
    shown = shlex.join(argv).replace("\n", "\\n")[:300]
    log.info("uow %s: started command %s (pid %d)", uow.id, shown, proc.pid)
    run = _Run(proc)
    timeout = entry.timeout.total_seconds()
    with proc:
        stop_reason = run.wait(deadline=started + timeout, cancel=cancel, tick=tick)
        if stop_reason is not None:
            run.kill_group(kill_grace)
        else:
            run.drain()
        exit_code = proc.wait()
    seconds = time.monotonic() - started
    output = run.tail.text()
    base = {"exit_code": exit_code, "output": output, "pid": proc.pid, "seconds": seconds}
    if stop_reason == "timeout":
        error = f"timed out after {_seconds(timeout)} s (process group {proc.pid} killed)"
        return CommandResult(outcome=None, error=error, **base)
    if stop_reason == "cancel":
        error = f"interrupted (process group {proc.pid} killed)"
        return CommandResult(outcome=None, error=error, interrupted=True, **base)
    if exit_code == 0:
        return CommandResult(outcome=Outcome.PROCESSED, error=None, **base)
    if entry.noop_exit_code is not None and exit_code == entry.noop_exit_code:
        return CommandResult(outcome=Outcome.NOOP, error=None, **base)
    if exit_code < 0:
        return CommandResult(
            outcome=None, error=f"command killed by signal {_signal_name(-exit_code)}", **base
        )
    return CommandResult(outcome=None, error=f"command exited with code {exit_code}", **base)


class _Run:
    """One started command: its pipes, its output tail and its process group.

    The leader is not reaped (``waitid`` with ``WNOWAIT``) until every signal to its group has
    been sent: while the zombie leader exists its pid, hence the group id, cannot be reused, so
    ``killpg`` can never hit an unrelated group.
    """

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.tail = OutputTail()
        self.selector = selectors.DefaultSelector()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                self.selector.register(pipe, selectors.EVENT_READ)

    @property
    def pipes_open(self) -> bool:
        return bool(self.selector.get_map())

    def pump(self, timeout: float) -> None:
        """Read what the pipes have, waiting up to ``timeout`` seconds for something."""
        if not self.pipes_open:
            time.sleep(timeout)
            return
        for key, _ in self.selector.select(timeout):
            data = os.read(key.fd, _READ_SIZE)
            if data:
                self.tail.add(data)
            else:
                self.selector.unregister(key.fileobj)

    def leader_exited(self) -> bool:
        """Whether the command itself exited (without reaping it)."""
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        try:
            return os.waitid(os.P_PID, self.proc.pid, flags) is not None
        except ChildProcessError:
            return True

    def wait(
        self, *, deadline: float, cancel: threading.Event, tick: Callable[[], None] | None
    ) -> str | None:
        """Read output until the command exits; ``"timeout"`` or ``"cancel"`` if it must be
        killed first."""
        while not self.leader_exited():
            if time.monotonic() >= deadline:
                return "timeout"
            if cancel.is_set():
                return "cancel"
            self.pump(POLL_INTERVAL)
            if tick is not None:
                tick()
        return None

    def drain(self) -> None:
        """After a normal exit: read the rest of the output. A child left behind that still
        holds the pipes after :data:`DRAIN_GRACE` seconds is killed with its group."""
        until = time.monotonic() + DRAIN_GRACE
        while self.pipes_open and time.monotonic() < until:
            self.pump(POLL_INTERVAL)
        if self.pipes_open:
            log.warning(
                "pid %d: exited but its process group still holds its output; killing it",
                self.proc.pid,
            )
            self.signal_group(signal.SIGKILL)
            self.pump(POLL_INTERVAL)
        self.close()

    def kill_group(self, grace: float) -> None:
        """SIGTERM to the whole group, then SIGKILL to whatever is left of it once the leader
        exited and the pipes closed, or after ``grace`` seconds at the latest.

        (A group member that closed its output and ignores SIGTERM is thus killed as soon as
        the rest is gone: the group must not outlive the attempt.)
        """
        self.signal_group(signal.SIGTERM)
        until = time.monotonic() + grace
        while time.monotonic() < until and (not self.leader_exited() or self.pipes_open):
            self.pump(POLL_INTERVAL)
        self.signal_group(signal.SIGKILL)
        end = time.monotonic() + DRAIN_GRACE
        while self.pipes_open and time.monotonic() < end:
            self.pump(POLL_INTERVAL)
        self.close()

    def signal_group(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass  # the group is already empty
        except PermissionError as exc:
            log.warning("pid %d: cannot signal its process group: %s", self.proc.pid, exc)

    def close(self) -> None:
        for key in list(self.selector.get_map().values()):
            self.selector.unregister(key.fileobj)
        self.selector.close()


def _seconds(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
