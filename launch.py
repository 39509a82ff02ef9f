"""The Tactus command line (SPEC section 5), also installed as the ``tactus`` console script.

Commands only parse input, call a verb of ``mx.services`` and render the result, so the web page,
the API and the command line cannot disagree. Exit codes: 0 success, 1 the action failed, 2 bad
usage or bad input (one line on standard error saying why).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from db import open_store
from db.clock import SystemClock
from db.errors import InvalidInput, TactusError
from db.triggers import format_preview_line, parse_trigger, preview
from mx.services import boxes, jobs, processes, uows
from mx.services.processes import register_file
from settings import Settings, load_settings

log = logging.getLogger("tactus.launch")

LIST_TARGETS = ("processes", "jobs", "uows", "boxes", "workers")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="launch.py",
        description="Tactus: job scheduler and process supervisor.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
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


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings, Callable[[str], None]], int]] = {
    "register": cmd_register,
    "db": cmd_db,
    "list": cmd_list,
    "next-runs": cmd_next_runs,
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
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2

    def out(line: str) -> None:
        sys.stdout.write(line + "\n")

    try:
        settings = load_settings()
        ensure_dirs(settings)
        return COMMANDS[args.command](args, settings, out)
    except TactusError as exc:
        sys.stderr.write(f"launch.py {args.command}: {exc.message}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
