"""The Tactus command line (SPEC section 5), also installed as the ``tactus`` console script.

Commands only parse input, call a verb of ``mx.services`` and render the result, so the web page,
the API and the command line cannot disagree. Exit codes: 0 success, 1 the action failed, 2 bad
usage or bad input (one line on standard error saying why).
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import process_starter
from db import open_store
from db.clock import SystemClock
from db.errors import InvalidInput, TactusError
from db.triggers import format_preview_line, parse_trigger, preview
from mx.cli import commands as cli_commands
from mx.services import boxes, jobs, processes, uows
from mx.services.processes import register_file
from process_starter import run_standalone
from settings import Settings, load_settings
from supervisor import daemon as plumbing

log = logging.getLogger("tactus.launch")

LIST_TARGETS = ("processes", "jobs", "uows", "boxes", "workers")
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

    lst = sub.add_parser("list", help="show processes, jobs, units of work, boxes or workers")
    lst.add_argument("target", choices=LIST_TARGETS)
    lst.add_argument("--process", help="only this process")
    lst.add_argument("--state", help="only these states (comma-separated)")
    lst.add_argument("--from", dest="from_timeperiod", help="jobs from this timeperiod")
    lst.add_argument("--to", dest="to_timeperiod", help="jobs before this timeperiod")
    lst.add_argument("--limit", type=int, default=50, help="page size (default 50)")
    lst.add_argument("--cursor", help="continue after a previous page")
    lst.add_argument("--box", help="boxes: only this box")
    lst.add_argument("--json", action="store_true", help="print the REST API's JSON")

    sup = sub.add_parser("super", help="the supervisor's desired state on a box")
    action = sup.add_mutually_exclusive_group()
    # Own dests: the subparser shares the namespace with the top-level --start/--stop.
    action.add_argument(
        "--start", dest="super_start", metavar="P", help="run process P (or instance P.N) here"
    )
    action.add_argument(
        "--stop", dest="super_stop", metavar="P", help="stop process P (or instance P.N) here"
    )
    action.add_argument("--query", action="store_true", help="show the box's processes (default)")
    sup.add_argument("--boxid", metavar="ID", help="the box to act on (default: box_id setting)")
    sup.add_argument("--json", action="store_true", help="print the REST API's JSON")

    sta = sub.add_parser("standalone", help="scheduler + supervisor + mx in the foreground")
    sta.add_argument(
        "--context", help="registration file (default: context_file, else the example)"
    )
    cli_commands.add_parsers(sub)

    nxt = sub.add_parser("next-runs", help="preview the next fires of a trigger")
    nxt.add_argument("trigger", help="e.g. '*/15 * * * *', 'every 1h30m', 'at Mon-Fri 09:30'")
    nxt.add_argument("--tz", help="IANA zone (default: the timezone setting)")
    nxt.add_argument("--after", help="ISO instant to start after (default: now)")
    nxt.add_argument("--count", type=int, default=10, help="how many fires (default 10)")
    return parser


def _iso_instant(text: str, field: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput(field, f"not an ISO 8601 instant: {text!r}") from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def cmd_next_runs(args: argparse.Namespace, settings: Settings, out: Callable[[str], None]) -> int:
    if not 1 <= args.count <= 10_000:
        raise InvalidInput("count", "must be between 1 and 10000")
    trigger = parse_trigger(args.trigger, args.tz or settings.timezone)
    after = _iso_instant(args.after, "after") if args.after else SystemClock().now()
    for utc, local in preview(trigger, after, args.count):
        out(format_preview_line(utc, local))
    return 0


def cmd_register(args: argparse.Namespace, settings: Settings, out: Callable[[str], None]) -> int:
    with open_store(settings.store_uri) as store:
        store.init_schema()
        result = register_file(
            store,
            args.file,
            clock=SystemClock(),
            actor="cli",
            check=args.check,
            prune=args.prune,
        )
    plan = result.plan
    for entry in plan.create:
        out(f"  + {entry.name}")
    for update in plan.update:
        out(f"  ~ {update.name}")
    for name in plan.prune:
        out(f"  - {name}")
    out(result.summary())
    return 0


def cmd_db(args: argparse.Namespace, settings: Settings, out: Callable[[str], None]) -> int:
    with open_store(settings.store_uri) as store:
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


def cmd_list(args: argparse.Namespace, settings: Settings, out: Callable[[str], None]) -> int:
    now = SystemClock().now()
    next_cursor = None
    with open_store(settings.store_uri) as store:
        if args.target == "processes":
            rows = processes.list_processes(store, now=now, default_timezone=settings.timezone)
            if args.process:
                rows = [r for r in rows if r["name"] == args.process]
            columns = ["name", "kind", "enabled", "time_qualifier", "trigger", "next_fire"]
        elif args.target == "jobs":
            page = jobs.list_jobs(
                store,
                process=args.process,
                state=args.state,
                from_timeperiod=args.from_timeperiod,
                to_timeperiod=args.to_timeperiod,
                limit=args.limit,
                cursor=args.cursor,
            )
            rows, next_cursor = page["items"], page["next_cursor"]
            columns = ["process", "timeperiod", "state", "uow_id", "updated_at"]
        elif args.target == "uows":
            page = uows.list_uows(
                store, process=args.process, state=args.state, limit=args.limit, cursor=args.cursor
            )
            rows, next_cursor = page["items"], page["next_cursor"]
            columns = ["id", "process", "state", "start_timeperiod", "attempt", "exit_code"]
        elif args.target == "boxes":
            rows = boxes.list_boxes(store, box_id=args.box)
            columns = ["box_id", "process", "desired", "state", "pid", "started_at"]
        else:
            rows = boxes.list_workers(store, now=now)
            columns = ["worker_id", "process", "box_id", "pid", "alive", "heartbeat_at"]
    if args.json:
        out(json.dumps(rows, indent=2))
    else:
        out(render_table(rows, columns))
        if next_cursor:
            out(f"(more: --cursor {next_cursor})")
    return 0


def render_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain text table; empty cells for None."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    if not rows:
        lines.append("(none)")
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def cmd_super(args: argparse.Namespace, settings: Settings, out: Callable[[str], None]) -> int:
    box_id = settings.replace(box_id=args.boxid).box_id if args.boxid else settings.box_id
    clock = SystemClock()
    with open_store(settings.store_uri) as store:
        if args.super_start:
            rows = boxes.start_process(store, box_id, args.super_start, clock=clock, actor="cli")
        elif args.super_stop:
            rows = boxes.stop_process(store, box_id, args.super_stop, clock=clock, actor="cli")
        else:
            rows = boxes.list_boxes(store, box_id=box_id)
    if args.json:
        out(json.dumps(rows, indent=2))
        return 0
    now = clock.now()
    for row in rows:
        running = row["state"] in ("starting", "running", "stopping") and row["started_at"]
        row["uptime"] = (
            _duration(now - _iso_instant(row["started_at"], "started_at")) if running else None
        )
        row["memory"] = _bytes(row["stats"].get("rss")) if running else None
    columns = ["process", "desired", "state", "pid", "uptime", "memory", "start_attempts"]
    out(f"box {box_id}")
    out(render_table(rows, columns))
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
    return 0


def _stop(name: str, settings: Settings, out: Callable[[str], None]) -> int:
    outcome = plumbing.stop_process(
        plumbing.pid_file(settings.pid_dir, name),
        name,
        timeout=settings.stopwaitsecs + STOP_MARGIN,
    )
    out(f"{name}: {outcome}")
    return 0


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
                "uptime": _duration(now - st.started_at) if st.started_at else None,
                "memory": _bytes(st.rss),
            }
        )
    out(render_table(rows, ["name", "state", "pid", "uptime", "memory"]))
    if name is not None and rows[0]["state"] != "running":
        return 1
    return 0


def _duration(delta: timedelta) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    text = f"{hours:d}:{minutes:02d}:{seconds:02d}"
    return f"{days}d {text}" if days else text


def _bytes(value: int | None) -> str | None:
    if value is None:
        return None
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return None


def cmd_standalone(args: argparse.Namespace, settings: Settings, out: Callable[[str], None]) -> int:
    """Scheduler + supervisor (+ its workers) in the foreground, after registering the context."""
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
    out(
        f"mx (API): http://{settings.mx_host}:{settings.mx_port}/api/v1 - on first start the admin"
        f" token is written to {settings.admin_token_file}"
    )
    shutdown = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: shutdown.set())
    signal.signal(signal.SIGINT, lambda *_: shutdown.set())
    return run_standalone(settings, shutdown, context)


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings, Callable[[str], None]], int]] = {
    "register": cmd_register,
    "db": cmd_db,
    "list": cmd_list,
    "next-runs": cmd_next_runs,
    "super": cmd_super,
    "standalone": cmd_standalone,
    **cli_commands.COMMANDS,
}


def ensure_dirs(settings: Settings) -> None:
    """Create ``var_dir`` (where the embedded store lives), ``log_dir`` and ``pid_dir``."""
    for directory in (settings.var_dir, settings.log_dir, settings.pid_dir):
        try:
            os.makedirs(directory, mode=0o750, exist_ok=True)
        except OSError as exc:
            raise InvalidInput("var_dir", f"cannot create {directory}: {exc.strerror}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code."""
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
        sys.stdout.write(line + "\n")

    try:
        settings = load_settings()
        ensure_dirs(settings)
        if args.command is None:
            return cmd_daemon(args, settings, out)
        return COMMANDS[args.command](args, settings, out)
    except TactusError as exc:
        sys.stderr.write(f"launch.py {command}: {exc.message}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
