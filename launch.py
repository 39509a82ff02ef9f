"""The Tactus command line (SPEC section 5), also installed as the ``tactus`` console script.

Commands only parse input, call a verb and render the result, so the web page, the API and the
command line cannot disagree. The verbs run on this machine's store, or, with ``--url`` (or
``TACTUS_URL``), on a remote installation through its REST API (:mod:`mx.cli.backend`). Exit
codes: 0 success, 1 the action failed, 2 bad usage or bad input (one line on standard error
saying why).
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import process_starter
from db import open_store
from db.clock import SystemClock
from db.errors import InvalidInput, TactusError
from db.registration import load_file, run_order_text
from db.triggers import format_preview_line, parse_trigger, preview
from mx.cli import audit as cli_audit
from mx.cli import boxes as cli_boxes
from mx.cli import commands as cli_commands
from mx.cli import credentials as cli_credentials
from mx.cli import executor as cli_executor
from mx.cli import listing, options
from mx.cli import why as cli_why
from mx.cli.backend import Installation
from mx.cli.render import Out, duration, human_bytes, iso_instant, render_table
from mx.services.processes import registration_summary
from process_starter import STANDALONE, STANDALONE_PARTS, run_standalone
from settings import Settings, load_settings
from supervisor import daemon as plumbing
from supervisor.daemon import PartOfStandalone
from workers.executor.loop import ExecutorConfig
from workers.executor.retry import BackoffKind, BackoffPolicy

log = logging.getLogger("tactus.launch")

#: Daemons ``--status`` lists even when they never ran here.
KNOWN_DAEMONS = ("scheduler", "supervisor", "mx")
#: Seconds ``--start`` waits for a daemon's pid file to name a live process.
START_TIMEOUT = 15.0
#: ``--stop`` waits ``stopwaitsecs`` plus this before SIGKILL: the supervisor itself first stops
#: its processes, each within ``stopwaitsecs``.
STOP_MARGIN = 10.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="launch.py",
        description="Tactus: job scheduler and process supervisor.",
        # No abbreviations at the top: `list jobs --to T` must reach the command's --to, not
        # be taken for an ambiguous prefix of --token.
        allow_abbrev=False,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    daemons = parser.add_mutually_exclusive_group()
    daemons.add_argument(
        "--start", metavar="NAME", help="start scheduler, supervisor, mx or a process"
    )
    daemons.add_argument(
        "--stop", metavar="NAME", help="SIGTERM its group, SIGKILL after a timeout"
    )
    daemons.add_argument("--restart", metavar="NAME", help="--stop, then --start")
    daemons.add_argument(
        "--status", metavar="NAME", nargs="?", const="", help="running or not, pid, uptime, memory"
    )
    parser.add_argument("--console", action="store_true", help="--start in the foreground")
    options.add_remote_options(parser, top_level=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    reg = sub.add_parser("register", help="validate a registration file and upsert it")
    reg.add_argument("file", help="process_context.py or a YAML file")
    reg.add_argument("--check", action="store_true", help="validate and report only")
    reg.add_argument("--prune", action="store_true", help="remove processes the file no longer has")

    db = sub.add_parser("db", help="create or reset the store's schema")
    group = db.add_mutually_exclusive_group(required=True)
    group.add_argument("--init", action="store_true", help="create missing tables and indexes")
    group.add_argument("--reset", action="store_true", help="drop everything and recreate")
    db.add_argument("--yes", action="store_true", help="do not ask before --reset")

    listing.add_parser(sub)
    cli_boxes.add_parser(sub)

    sta = sub.add_parser("standalone", help="scheduler + supervisor + mx in the foreground")
    sta.add_argument(
        "--context", help="registration file (default: context_file, else the example)"
    )
    cli_commands.add_parsers(sub)
    cli_credentials.add_parsers(sub)
    cli_why.add_parsers(sub)
    cli_executor.add_parser(sub)

    nxt = sub.add_parser("next-runs", help="preview the next fires of a trigger")
    nxt.add_argument("trigger", help="e.g. '*/15 * * * *', 'every 1h30m', 'at Mon-Fri 09:30'")
    nxt.add_argument("--tz", help="IANA zone (default: the timezone setting)")
    nxt.add_argument("--after", help="ISO instant to start after (default: now)")
    nxt.add_argument("--count", type=int, default=10, help="how many fires (default 10)")
    options.add_to_commands(sub.choices.values())
    return parser


def cmd_next_runs(args: argparse.Namespace, inst: Installation, out: Out) -> int:
    settings = inst.settings
    if not 1 <= args.count <= 10_000:
        raise InvalidInput("count", "must be between 1 and 10000")
    trigger = parse_trigger(args.trigger, args.tz or settings.timezone)
    after = iso_instant(args.after, "after") if args.after else SystemClock().now()
    for utc, local in preview(trigger, after, args.count):
        out(format_preview_line(utc, local))
    return 0


def cmd_register(args: argparse.Namespace, inst: Installation, out: Out) -> int:
    # The file is read and validated here, also for --url: a Python context runs on the
    # machine of the person registering it, never on the server.
    entries = load_file(args.file)
    with inst.backend() as backend:
        result = backend.register(entries, source=args.file, check=args.check, prune=args.prune)
    for key, mark in (("created", "+"), ("updated", "~"), ("pruned", "-")):
        for name in result[key]:
            out(f"  {mark} {name}")
    if args.check:
        # The order each flow's steps would run in: a cycle was refused by load_file.
        for entry in entries:
            if entry.steps:
                out(f"{entry.name}: {run_order_text(entry)}")
    out(registration_summary(result))
    return 0


def cmd_db(args: argparse.Namespace, inst: Installation, out: Out) -> int:
    with open_store(inst.settings.store_uri) as store:
        if args.init:
            store.init_schema()
            out(f"schema ready in {store.describe()}")
            return 0
        if not args.yes:
            if not sys.stdin.isatty():
                raise InvalidInput("--yes", "reset drops all Tactus data: pass --yes to confirm")
            answer = input(f"Drop all Tactus data in {store.describe()}? Type 'yes': ")
            if answer.strip() != "yes":
                out("reset aborted")
                return 1
        store.reset_schema()
        out(f"schema reset in {store.describe()}")
    return 0


def cmd_daemon(args: argparse.Namespace, settings: Settings, out: Callable[[str], None]) -> int:
    """``--start``, ``--stop``, ``--restart`` and ``--status``."""
    if args.start:
        return _start(args.start, settings, out, console=args.console)
    if args.stop:
        return _stop(args.stop, settings, out)
    if args.restart:
        _stop(args.restart, settings, out)
        return _start(args.restart, settings, out, console=False)
    return _status(args.status or None, settings, out)


def _start(name: str, settings: Settings, out: Callable[[str], None], *, console: bool) -> int:
    pid_path = plumbing.pid_file(settings.pid_dir, name)
    plumbing.refuse_if_running(pid_path, name)
    process_starter.resolve(name, settings)  # an unknown name is bad input: exit 2 here
    if console:
        return process_starter.start(name, settings, mode="console")
    # python-daemon's launcher exits 0 whether or not the daemon then takes its pid file, so
    # success is a pid file that names a live process.
    launched = subprocess.run(
        [sys.executable, process_starter.STARTER, name],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
    )
    if launched.returncode != 0:
        sys.stderr.write(launched.stderr)
        return launched.returncode
    end = time.monotonic() + START_TIMEOUT
    while (proc := plumbing.running_process(pid_path)) is None and time.monotonic() < end:
        time.sleep(0.05)
    log_path = plumbing.log_file(settings.log_dir, name)
    if proc is None:
        out_path = plumbing.out_file(settings.log_dir, name)
        sys.stderr.write(
            f"launch.py --start: {name} did not start; see {log_path} and {out_path}\n"
        )
        return 1
    out(f"{name} started (pid {proc.pid}), log {log_path}")
    if name == "mx":
        out(
            f"mx: open http://{settings.mx_host}:{settings.mx_port}/ and log in with the admin"
            f" token in {settings.admin_token_file} (written on first start)"
        )
    return 0


def _stop(name: str, settings: Settings, out: Callable[[str], None]) -> int:
    _refuse_part_of_standalone(name, settings)
    outcome = plumbing.stop_process(
        plumbing.pid_file(settings.pid_dir, name),
        name,
        timeout=settings.stopwaitsecs + STOP_MARGIN,
    )
    out(f"{name}: {outcome}")
    return 0


def _refuse_part_of_standalone(name: str, settings: Settings) -> None:
    """A daemon that runs as a thread of ``standalone`` cannot be stopped alone: its pid is
    standalone's, and a signal to it would end all three parts."""
    if name not in STANDALONE_PARTS:
        return
    host = plumbing.status(plumbing.pid_file(settings.pid_dir, STANDALONE), STANDALONE)
    part = plumbing.status(plumbing.pid_file(settings.pid_dir, name), name)
    if host.running and part.running and host.pid == part.pid:
        raise PartOfStandalone(name, host.pid)


def _status(name: str | None, settings: Settings, out: Callable[[str], None]) -> int:
    if name is not None:
        names = [name]
    else:
        found = glob.glob(os.path.join(glob.escape(settings.pid_dir), "*.pid"))
        names = sorted(set(KNOWN_DAEMONS) | {os.path.basename(p)[: -len(".pid")] for p in found})
    now = datetime.now(UTC)
    rows = []
    for each in names:
        st = plumbing.status(plumbing.pid_file(settings.pid_dir, each), each)
        rows.append(
            {
                "name": st.name,
                "state": "running" if st.running else "stopped",
                "pid": st.pid,
                "uptime": duration(now - st.started_at) if st.started_at else None,
                "memory": human_bytes(st.rss),
            }
        )
    out(render_table(rows, ["name", "state", "pid", "uptime", "memory"]))
    if name is not None and rows[0]["state"] != "running":
        return 1
    return 0


def cmd_standalone(args: argparse.Namespace, inst: Installation, out: Out) -> int:
    """Scheduler + supervisor (+ its workers) in the foreground, after registering the context."""
    settings = inst.settings
    context = args.context
    if context is None:
        default = Path(settings.context_file)
        context = str(
            default
            if default.exists()
            else Path(__file__).parent / "examples" / "process_context.py"
        )
    out(f"Tactus standalone: store {settings.store_uri}, broker {settings.broker_uri}")
    out(f"registering {context}; logs in {settings.log_dir}; Ctrl-C stops everything")

    def announce(url: str) -> None:
        out(
            f"mx: open {url} and log in with the admin token in {settings.admin_token_file}"
            " (written on first start; the API is under /api/v1)"
        )
        sys.stdout.flush()

    shutdown = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: shutdown.set())
    signal.signal(signal.SIGINT, lambda *_: shutdown.set())
    return run_standalone(settings, shutdown, context, announce=announce)


def cmd_executor(args: argparse.Namespace, inst: Installation, out: Out) -> int:
    """Run units of work on this box through mx only, until SIGTERM (SPEC section 11)."""
    cli_executor.check(args)
    if inst.client is None:
        raise InvalidInput(
            "--url", "an executor reaches Tactus through mx: give --url (or TACTUS_URL)"
        )
    policy = BackoffPolicy(
        kind=BackoffKind(args.backoff),
        base=timedelta(seconds=args.backoff_base),
        cap=timedelta(seconds=args.backoff_max),
        jitter=args.backoff_jitter,
    )
    config = ExecutorConfig(
        name=args.name,
        box_id=args.box or inst.settings.box_id,
        processes=cli_executor.processes_of(args.processes),
        slots=args.slots,
        wait=args.wait,
        backoff=policy,
    )
    return process_starter.run_executor(inst.settings, inst.client, config)


COMMANDS: dict[str, Callable[[argparse.Namespace, Installation, Out], int]] = {
    "register": cmd_register,
    "db": cmd_db,
    "list": listing.cmd_list,
    "next-runs": cmd_next_runs,
    "super": cli_boxes.cmd_super,
    "standalone": cmd_standalone,
    "token": cli_credentials.cmd_token,
    "user": cli_credentials.cmd_user,
    "executor": cmd_executor,
    **cli_commands.COMMANDS,
    **cli_why.COMMANDS,
}


def ensure_dirs(settings: Settings) -> None:
    """Create ``var_dir`` (where the embedded store lives), ``log_dir`` and ``pid_dir``."""
    for directory in (settings.var_dir, settings.log_dir, settings.pid_dir):
        try:
            os.makedirs(directory, mode=0o750, exist_ok=True)
        except OSError as exc:
            raise InvalidInput("var_dir", f"cannot create {directory}: {exc.strerror}") from exc


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command; returns the exit code.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
        environ: where the settings, ``TACTUS_URL`` and ``TACTUS_TOKEN`` are read (default:
            ``os.environ``).
    """
    environ = os.environ if environ is None else environ
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    daemon_op = args.start or args.stop or args.restart or args.status is not None
    if args.command is None and not daemon_op:
        parser.print_help(sys.stderr)
        return 2
    if args.command is not None and daemon_op:
        parser.error("--start/--stop/--restart/--status do not combine with a command")
    if args.console and not args.start:
        parser.error("--console goes with --start")
    command = args.command or "--" + next(
        op for op in ("start", "stop", "restart", "status") if getattr(args, op) is not None
    )

    def out(line: str) -> None:
        # A stored string that is not Unicode text (a lone surrogate, from before mx refused
        # them) must not end the command: it is shown replaced.
        sys.stdout.write(line.encode("utf-8", "replace").decode("utf-8") + "\n")

    try:
        settings = load_settings(environ)
        client = options.open_client(command, args, environ)
        if client is None:
            ensure_dirs(settings)  # remote commands leave this machine alone
        if args.command is None:
            return cmd_daemon(args, settings, out)
    except TactusError as exc:
        sys.stderr.write(f"launch.py {command}: {exc.message}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    code, error = 1, "failed unexpectedly"
    try:
        code = COMMANDS[args.command](args, Installation(settings, client), out)
        error = ""
    except TactusError as exc:
        sys.stderr.write(f"launch.py {command}: {exc.message}\n")
        code, error = exc.exit_code, exc.message
    except KeyboardInterrupt:
        code, error = 130, "interrupted"
    finally:
        if client is None:  # through --url, the mx acted on writes the entry
            cli_audit.record(settings, args.command, args, exit_code=code, error=error)
    return code


if __name__ == "__main__":
    sys.exit(main())
