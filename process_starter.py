"""Start one Tactus process by name: the only place that wires a process together.

    process_starter.py NAME               as a daemon (pid file, log file); refuses a second one
    process_starter.py NAME --console     in the foreground, logging to standard error
    process_starter.py NAME --supervised  in the foreground under the supervisor (log file, no
                                          pid file: the supervisor owns its identity)

NAME is a built-in (:data:`BUILTINS`: ``supervisor``, ``scheduler``; mx adds its own) or a
registered process, or one instance of it (``site_hourly.1``):

- ``managed`` and ``freerun``: a worker, :data:`WORKER_RUNNER` (``workers.runner.run_worker``);
- ``daemon`` with ``command``: the command itself replaces this process (``exec``);
- ``daemon`` with ``worker: "module:Class"``: ``Class(process=NAME, settings=settings)``, then
  ``run()``; SIGTERM calls its ``stop()``.

Exit codes: 0 success, 1 the process failed or already runs, 2 bad usage or an unknown NAME.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from db import open_store
from db.builtin import ensure_builtin_processes
from db.clock import SystemClock
from db.errors import Conflict, InvalidInput, LeaseLost, NotFound, TactusError
from db.models import ProcessEntry
from db.outage import Outages, open_patient_store
from db.placement import Placement, process_of
from db.states import ProcessKind
from db.threads import end_process_when_a_thread_dies
from mx.cli.options import TOKEN_ENV
from mx.client import ApiClient, AuthRefused
from mx.server import MxServer, run_mx
from mx.services.processes import register_file
from scheduler.main import run_scheduler
from settings import Settings, load_settings
from supervisor import daemon as plumbing
from supervisor.config import SupervisorConfig
from supervisor.host import PosixHost
from supervisor.logs import log_to_console, log_to_file
from supervisor.loop import Supervisor
from workers.executor.api import Refused, Unreachable
from workers.executor.loop import Executor, ExecutorConfig

log = logging.getLogger("tactus.process_starter")

#: This file, as the supervisor's children run it.
STARTER = str(Path(__file__).resolve())
#: What runs the worker of a managed or freerun process; named by path so that this module
#: loads (and the supervisor starts) on a box without the worker stack.
WORKER_RUNNER = "workers.runner:run_worker"
#: A process or instance name: ``[a-z0-9_]+`` with an optional ``.N``.
NAME_PATTERN = re.compile(r"[a-z0-9_]+(\.[0-9]+)?")


@dataclass(frozen=True, kw_only=True, slots=True)
class Program:
    """What runs under a name."""

    name: str
    #: ``run(settings, shutdown) -> exit code``; ``shutdown`` is set on SIGTERM or SIGINT.
    run: Callable[[Settings, threading.Event], int]
    #: True when ``run`` installs its own signal handlers (a worker); then SIGTERM is left to it.
    own_signals: bool = False


# -- built-ins --------------------------------------------------------------------------------------


def supervisor_config(settings: Settings) -> SupervisorConfig:
    """The supervisor's knobs from the settings."""
    # Settings hold plain seconds (a file format); code holds durations.
    identity = f"{settings.store_uri}|{settings.box_id}".encode()
    return SupervisorConfig(
        box_id=settings.box_id,
        startsecs=timedelta(seconds=settings.startsecs),
        startretries=settings.startretries,
        stopwaitsecs=timedelta(seconds=settings.stopwaitsecs),
        backoff_base=timedelta(seconds=settings.backoff_base),
        backoff_cap=timedelta(seconds=settings.backoff_cap),
        poll=timedelta(seconds=settings.supervisor_poll),
        stats_interval=timedelta(seconds=settings.stats_interval),
        marker=hashlib.sha256(identity).hexdigest()[:16],
        cwd=os.getcwd(),
        log_dir=settings.log_dir,
    )


def supervised_argv(placed: Placement) -> list[str]:
    """How the supervisor starts an instance: a daemon's command directly (no Python start-up
    in the way of a restart), anything else through this file."""
    entry = placed.entry
    if entry.kind == ProcessKind.DAEMON and entry.command is not None:
        return command_argv(entry, placed.instance)
    return [sys.executable, STARTER, placed.instance, "--supervised"]


def run_supervisor(settings: Settings, shutdown: threading.Event) -> int:
    """The supervisor of this box, until SIGTERM; then it stops its processes and ends. An
    outage of the store, at start or later, is waited out (its children run on meanwhile)."""
    outage = Outages.with_backoff_max(timedelta(seconds=settings.outage_backoff_max)).store
    with open_patient_store(settings.store_uri, outage, stopping=shutdown) as store:
        try:
            store.init_schema()
        except TactusError:
            if shutdown.is_set():
                return 0  # stopped while waiting for the store
            raise
        supervisor = Supervisor(
            store,
            PosixHost(),
            SystemClock(),
            supervisor_config(settings),
            argv_for=supervised_argv,
        )
        supervisor.start()
        log.info("supervisor %s: started (pid %s)", settings.box_id, os.getpid())
        while not shutdown.wait(1.0):
            if not supervisor.alive:
                log.error("supervisor %s: its loop ended unexpectedly", settings.box_id)
                return 1
        supervisor.stop(timeout=settings.stopwaitsecs + 10.0)
    return 0


def run_standalone(
    settings: Settings,
    shutdown: threading.Event,
    context_file: str,
    *,
    announce: Callable[[str], None] | None = None,
) -> int:
    """The quick start: register ``context_file``, then run the scheduler, mx and this box's
    supervisor (which starts every worker and daemon) as threads of this one foreground
    process, until SIGTERM or Ctrl-C. mx binds its port first, so a port in use stops
    everything before it starts; ``announce`` gets its address once it listens. If any of the
    three ends on its own, the others are stopped and the exit code is 1.

    While it runs, it holds the pid files of the three and its own ``standalone.pid`` (all this
    process's pid), so ``launch.py --status`` shows them running, a second ``--start`` or
    ``standalone`` is refused, and ``--stop standalone`` stops it; they are removed when it
    ends.

    Raises:
        InvalidInput: a bad registration file, or mx's port cannot be listened on.
        AlreadyRunning: the scheduler, mx or the supervisor already runs here.
    """
    with standalone_pid_files(settings, (STANDALONE, *STANDALONE_PARTS)):
        return _run_standalone(settings, shutdown, context_file, announce=announce)


#: The name of standalone's own pid file.
STANDALONE = "standalone"
#: What ``standalone`` runs, each as a thread: the names of their pid files.
STANDALONE_PARTS = ("scheduler", "mx", "supervisor")


@contextlib.contextmanager
def standalone_pid_files(settings: Settings, names: Sequence[str]) -> Iterator[None]:
    """Hold the pid file of each of ``names`` (removing stale ones) while the block runs.

    Raises:
        AlreadyRunning: one of them names a live process; none is held then.
    """
    with contextlib.ExitStack() as held:
        for name in names:
            path = plumbing.pid_file(settings.pid_dir, name)
            plumbing.refuse_if_running(path, name)
            held.enter_context(plumbing.foreground_pid_file(path, name))
        yield


def _run_standalone(
    settings: Settings,
    shutdown: threading.Event,
    context_file: str,
    *,
    announce: Callable[[str], None] | None,
) -> int:
    end_process_when_a_thread_dies()
    clock = SystemClock()
    with open_store(settings.store_uri) as store:
        store.init_schema()
        result = register_file(store, context_file, clock=clock, actor="standalone")
        ensure_builtin_processes(store, clock)
    log.info("standalone: %s (%s)", result.summary(), context_file)
    mx = MxServer(settings, stopping=shutdown)
    if announce is not None:
        announce(mx.url)
    parts = {
        "scheduler": lambda: run_scheduler(settings, stop_event=shutdown, install_signals=False),
        "mx": lambda: mx.serve(shutdown),
        "supervisor": lambda: run_supervisor(settings, shutdown),
    }
    threads = {
        name: threading.Thread(target=_logged_run, args=(name, run), name=name, daemon=True)
        for name, run in parts.items()
    }
    for thread in threads.values():
        thread.start()
    code = 0
    try:
        while not shutdown.wait(0.5):
            ended = [name for name, thread in threads.items() if not thread.is_alive()]
            if ended:
                log.error("standalone: the %s ended on its own; stopping the rest", ended[0])
                code = 1
                break
    finally:
        shutdown.set()
        # The supervisor stops its processes first, each within stopwaitsecs.
        threads["supervisor"].join(settings.stopwaitsecs + 15.0)
        threads["scheduler"].join(30)
        threads["mx"].join(15)
    return code


def _logged_run(name: str, run: Callable[[], int]) -> None:
    try:
        if run():
            log.error("standalone: the %s failed", name)
    except Exception:
        log.exception("standalone: the %s failed", name)


#: Built-in processes by name. mx adds ``"mx": Program(...)`` here with its wiring function,
#: written like :func:`run_supervisor` (or, like the scheduler's, one that installs its own
#: signal handlers: ``own_signals=True``).
BUILTINS: dict[str, Program] = {
    "supervisor": Program(name="supervisor", run=run_supervisor),
    # run_scheduler handles SIGTERM and SIGINT (stop) and SIGHUP (reload the registry) itself.
    "scheduler": Program(name="scheduler", run=lambda s, _: run_scheduler(s), own_signals=True),
    "mx": Program(name="mx", run=run_mx),
}


# -- registered processes ---------------------------------------------------------------------------


def resolve(name: str, settings: Settings) -> Program:
    """The program that runs under ``name``.

    Raises:
        InvalidInput: neither a built-in nor a registered process (field ``process``).
    """
    if name in BUILTINS:
        return BUILTINS[name]
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidInput("process", f"{name!r} is not a process name")
    with open_store(settings.store_uri) as store:
        store.init_schema()  # a new installation: nothing registered yet, but no error either
        ensure_builtin_processes(store, SystemClock())  # ``adhoc`` before the first task
        try:
            entry = store.get_process(process_of(name)).entry
        except NotFound:
            known = ", ".join(sorted(BUILTINS))
            raise InvalidInput(
                "process", f"unknown process {name!r} (built-ins: {known}; or a registered one)"
            ) from None
    if entry.kind in (ProcessKind.MANAGED, ProcessKind.FREERUN):
        runner = load_object(WORKER_RUNNER)
        return Program(name=name, run=lambda s, _: runner(s, entry.name), own_signals=True)
    if entry.command is not None:
        argv = command_argv(entry, name)
        return Program(name=name, run=lambda s, _: _exec(argv), own_signals=True)
    if entry.worker is None:
        raise InvalidInput("worker", f"daemon {entry.name!r} has neither worker nor command")
    return Program(name=name, run=lambda s, shutdown: _run_daemon_class(entry, name, s, shutdown))


def command_argv(entry: ProcessEntry, name: str) -> list[str]:
    """A daemon's ``command`` as argv, ``{process}`` filled in (a string runs under
    ``/bin/sh -c``)."""
    command = entry.command
    if isinstance(command, str):
        return ["/bin/sh", "-c", command.replace("{process}", name)]
    return [part.replace("{process}", name) for part in command or ()]


def load_object(path: str) -> Any:
    """``"module.path:Name"`` -> the object."""
    module_name, _, attribute = path.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise InvalidInput("worker", f"cannot load {path!r}: {exc}") from exc


def _exec(argv: Sequence[str]) -> int:
    logging.shutdown()
    try:
        os.execvp(argv[0], list(argv))
    except OSError as exc:
        log.error("cannot run %s: %s", argv[0], exc)
    return 1


def _run_daemon_class(
    entry: ProcessEntry, name: str, settings: Settings, shutdown: threading.Event
) -> int:
    instance = load_object(entry.worker or "")(process=name, settings=settings)

    def relay_stop() -> None:
        shutdown.wait()
        instance.stop()

    threading.Thread(target=relay_stop, name="stop-relay", daemon=True).start()
    result = instance.run()
    return int(result or 0)


# -- executors (SPEC section 11) --------------------------------------------------------------------

#: Seconds a request of an executor may take beyond its long poll's ``wait``.
EXECUTOR_REQUEST_MARGIN = 15.0


class HttpExecutorApi:
    """The executor routes through the REST client (:class:`workers.executor.api.ExecutorApi`),
    the client's errors turned into what the executor acts on."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client

    def claim(self, body: dict[str, Any]) -> dict[str, Any] | None:
        return self._post("claim", body)

    def heartbeat(self, uow_id: str, lease: str, messages: list[str]) -> None:
        body: dict[str, Any] = {"lease": lease}
        if messages:
            body["messages"] = messages
        self._post(f"uows/{quote(uow_id, safe='')}/heartbeat", body, uow_id)

    def outcome(self, uow_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._post(f"uows/{quote(uow_id, safe='')}/outcome", body, uow_id) or {}

    def outcomes(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._post("outcomes", body) or {}

    def leave(self, body: dict[str, Any]) -> None:
        self._post("leave", body)

    def _post(self, path: str, body: dict[str, Any], uow_id: str = "") -> Any:
        try:
            return self.client.post(f"/executor/{path}", body)
        except LeaseLost:
            raise
        except Conflict as exc:
            raise LeaseLost(uow_id, exc.message) from None
        except (AuthRefused, InvalidInput, NotFound) as exc:
            raise Refused(exc.message) from None
        except TactusError as exc:  # unreachable, a 5xx, the store or broker away
            raise Unreachable(exc.message) from None


def run_executor(settings: Settings, client: ApiClient, config: ExecutorConfig) -> int:
    """An executor in the foreground, reaching mx through ``client`` only, until SIGTERM
    (drain; a second one stops at once). Returns its exit code, or leaves through
    ``os._exit`` when a Python call had to be abandoned (its thread cannot be joined)."""
    end_process_when_a_thread_dies()
    # The commands it runs inherit its environment: never the token it authenticates with.
    os.environ.pop(TOKEN_ENV, None)
    api = HttpExecutorApi(client.with_timeout(config.wait + EXECUTOR_REQUEST_MARGIN))
    executor = Executor(api, config, settings)
    code = executor.run()
    if executor.abandoned:
        logging.shutdown()
        os._exit(code)
    return code


# -- the three modes --------------------------------------------------------------------------------


def run_program(program: Program, settings: Settings) -> int:
    """Run in this process; SIGTERM/SIGINT set the program's ``shutdown`` event."""
    shutdown = threading.Event()
    if not program.own_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: shutdown.set())
    return program.run(settings, shutdown)


def start(name: str, settings: Settings, *, mode: str) -> int:
    """Start ``name`` in ``mode``: ``daemon``, ``console`` or ``supervised``.

    Raises:
        InvalidInput: unknown name.
        AlreadyRunning: its pid file names a live process (``daemon`` and ``console``).
    """
    end_process_when_a_thread_dies()
    program = resolve(name, settings)
    if mode == "supervised":
        log_to_file(plumbing.log_file(settings.log_dir, name))
        return run_program(program, settings)
    pid_path = plumbing.pid_file(settings.pid_dir, name)
    plumbing.refuse_if_running(pid_path, name)
    if mode == "console":
        log_to_console()
        with plumbing.foreground_pid_file(pid_path, name):
            return run_program(program, settings)
    shutdown = threading.Event()
    with open(plumbing.out_file(settings.log_dir, name), "ab") as output:
        context = plumbing.daemon_context(
            pid_path,
            working_directory=os.getcwd(),
            output=output,
            on_term=None if program.own_signals else (lambda signum, frame: shutdown.set()),
        )
        with context:
            log_to_file(plumbing.log_file(settings.log_dir, name))
            log.info("%s: daemon started (pid %s)", name, os.getpid())
            code = program.run(settings, shutdown)
            log.info("%s: ended with %s", name, code)
            return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="process_starter.py", description=__doc__.split("\n")[0])
    parser.add_argument("name", help="a built-in (supervisor ...) or a registered process")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--console", action="store_true", help="foreground, log to stderr")
    mode.add_argument("--supervised", action="store_true", help="foreground, for the supervisor")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    mode = "console" if args.console else "supervised" if args.supervised else "daemon"
    try:
        settings = load_settings()
        for directory in (settings.log_dir, settings.pid_dir):
            os.makedirs(directory, mode=0o750, exist_ok=True)
        return start(args.name, settings, mode=mode)
    except TactusError as exc:
        sys.stderr.write(f"process_starter.py {args.name}: {exc.message}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
