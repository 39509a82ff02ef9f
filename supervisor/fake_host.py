"""An in-memory :class:`~supervisor.host.ProcessHost` for tests and simulations.

Nothing runs: "processes" are records that a test ends with :meth:`FakeHost.exit`, and a signal
ends them or not as the test decides (``obey`` per process). Every call is recorded in
``calls`` so a test asserts what the supervisor asked of the OS, the way supervisor's
``DummyOptions`` does.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from supervisor.host import SUPERVISED_ENV, Exit, ProcessFacts, same_process


@dataclass(kw_only=True, slots=True)
class FakeProcess:
    """One pretend OS process."""

    pid: int
    create_time: float
    argv: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    alive: bool = True
    #: Pretend group members (grandchildren) still alive after the leader ended.
    stragglers: int = 0
    #: Signals that end it (SIGKILL always does).
    obey: frozenset[int] = frozenset({signal.SIGTERM})
    #: Whether this host spawned it (so its exit status is known) or it was adopted.
    child: bool = True
    watched: bool = True
    rss: int = 10_000_000


class FakeHost:
    """A :class:`~supervisor.host.ProcessHost` that keeps processes in a dict."""

    def __init__(self, *, first_pid: int = 1000, start_time: float = 1_700_000_000.0) -> None:
        self.processes: dict[int, FakeProcess] = {}
        self.calls: list[tuple] = []
        self._next_pid = first_pid
        self._time = start_time
        self._exits: list[Exit] = []
        #: Set to an OSError to make the next spawn fail.
        self.spawn_error: OSError | None = None
        self.woken = 0

    # -- what tests do ----------------------------------------------------------------------------

    def add(self, *, pid: int | None = None, child: bool = False, **kwargs) -> FakeProcess:
        """A process that exists without the supervisor having spawned it."""
        pid = pid if pid is not None else self._new_pid()
        self._time += 1.0
        kwargs.setdefault("create_time", self._time)
        proc = FakeProcess(pid=pid, child=child, watched=False, **kwargs)
        self.processes[pid] = proc
        return proc

    def exit(self, pid: int, exit_code: int | None = 0) -> None:
        """End a process; the supervisor hears of it at its next ``wait``."""
        proc = self.processes[pid]
        proc.alive = False
        if proc.watched:
            self._exits.append(Exit(pid=pid, exit_code=exit_code if proc.child else None))

    def last_spawned(self) -> FakeProcess:
        return self.processes[max(p.pid for p in self.processes.values() if p.child)]

    def signals(self, pid: int) -> list[int]:
        return [c[2] for c in self.calls if c[0] == "signal_group" and c[1] == pid]

    def _new_pid(self) -> int:
        self._next_pid += 1
        return self._next_pid

    # -- the ProcessHost protocol -----------------------------------------------------------------

    def spawn(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: str, output: str | None
    ) -> ProcessFacts:
        self.calls.append(("spawn", tuple(argv), env.get(SUPERVISED_ENV)))
        if self.spawn_error is not None:
            error, self.spawn_error = self.spawn_error, None
            raise error
        self._time += 1.0
        proc = FakeProcess(
            pid=self._new_pid(), create_time=self._time, argv=tuple(argv), env=dict(env)
        )
        self.processes[proc.pid] = proc
        return ProcessFacts(pid=proc.pid, create_time=proc.create_time)

    def adopt(self, pid: int, create_time: float) -> bool:
        self.calls.append(("adopt", pid))
        proc = self.processes.get(pid)
        if proc is None or not proc.alive or not same_process(proc.create_time, create_time):
            return False
        proc.watched = True
        return True

    def forget(self, pid: int) -> None:
        proc = self.processes.get(pid)
        if proc is not None:
            proc.watched = False

    def signal_group(self, pid: int, sig: int) -> bool:
        self.calls.append(("signal_group", pid, sig))
        proc = self.processes.get(pid)
        if proc is None or not (proc.alive or proc.stragglers):
            return False
        if sig == signal.SIGKILL:
            proc.stragglers = 0
        if proc.alive and (sig == signal.SIGKILL or sig in proc.obey):
            self.exit(pid, -sig)
        return True

    def group_alive(self, pid: int) -> bool:
        proc = self.processes.get(pid)
        return proc is not None and (proc.alive or proc.stragglers > 0)

    def probe(self, pid: int, create_time: float | None = None) -> ProcessFacts | None:
        proc = self.processes.get(pid)
        if proc is None or not proc.alive:
            return None
        if create_time is not None and not same_process(proc.create_time, create_time):
            return None
        return ProcessFacts(pid=pid, create_time=proc.create_time, rss=proc.rss, threads=1)

    def scan(self, env_key: str, env_value: str) -> list[tuple[ProcessFacts, str]]:
        return [
            (ProcessFacts(pid=p.pid, create_time=p.create_time), p.env.get(SUPERVISED_ENV, ""))
            for p in self.processes.values()
            if p.alive and p.env.get(env_key) == env_value
        ]

    def wait(self, timeout: float) -> list[Exit]:
        exits, self._exits = self._exits, []
        for e in exits:
            self.forget(e.pid)
        return exits

    def wake(self) -> None:
        self.woken += 1

    def close(self) -> None:
        self.calls.append(("close",))
