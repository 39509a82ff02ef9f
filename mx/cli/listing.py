"""``launch.py list processes|jobs|uows|boxes|workers``: tables, or the API's JSON with ``--json``
(SPEC section 5), from the store or through ``--url``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from mx.cli.render import Out, print_json, render_table
from mx.services import validate

if TYPE_CHECKING:
    from mx.cli.backend import Backend, Installation

#: What ``list`` shows.
TARGETS = ("processes", "jobs", "uows", "boxes", "workers")
#: The table columns of each target (``--json`` prints every field).
COLUMNS = {
    "processes": ["name", "kind", "enabled", "time_qualifier", "trigger", "next_fire"],
    "jobs": ["process", "timeperiod", "state", "uow_id", "updated_at"],
    "uows": ["id", "process", "state", "start_timeperiod", "attempt", "exit_code"],
    "boxes": ["box_id", "process", "desired", "state", "pid", "started_at"],
    "workers": ["worker_id", "process", "box_id", "pid", "alive", "heartbeat_at"],
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``list`` on ``launch.py``'s sub-parsers."""
    lst = sub.add_parser("list", help="show processes, jobs, units of work, boxes or workers")
    lst.add_argument("target", choices=TARGETS)
    lst.add_argument("--process", help="only this process (not boxes)")
    lst.add_argument("--state", help="jobs, uows: only these states (comma-separated)")
    lst.add_argument("--from", dest="from_timeperiod", help="jobs from this timeperiod")
    lst.add_argument("--to", dest="to_timeperiod", help="jobs before this timeperiod")
    lst.add_argument("--limit", type=int, default=50, help="jobs, uows: page size (default 50)")
    lst.add_argument("--cursor", help="jobs, uows: continue after a previous page")
    lst.add_argument("--box", help="boxes, workers: only this box")
    lst.add_argument("--json", action="store_true", help="print the REST API's JSON")


def cmd_list(args: argparse.Namespace, inst: Installation, out: Out) -> int:
    """Print one list as a table (with the next page's cursor) or as the API's JSON array.

    Filters, ``--limit`` and ``--cursor`` are checked by the services (here or behind the API),
    so a bad one exits 2 with the API's reason in both modes."""
    # Lists that the command line prints whole take --limit too: refused alike, used by none.
    validate.limit(args.limit)
    with inst.backend() as backend:
        rows, next_cursor = _rows(args, backend)
    if args.json:
        print_json(out, rows)
        return 0
    out(render_table(rows, COLUMNS[args.target]))
    if next_cursor:
        out(f"(more: --cursor {next_cursor})")
    return 0


def _rows(args: argparse.Namespace, backend: Backend) -> tuple[list[dict[str, Any]], str | None]:
    """The rows to show, and the cursor of the next page (jobs and units of work)."""
    if args.target == "processes":
        rows = backend.list_processes()
        return [r for r in rows if args.process in (None, r["name"])], None
    if args.target == "jobs":
        page = backend.list_jobs(
            process=args.process,
            state=args.state,
            from_timeperiod=args.from_timeperiod,
            to_timeperiod=args.to_timeperiod,
            limit=args.limit,
            cursor=args.cursor,
        )
        return page["items"], page["next_cursor"]
    if args.target == "uows":
        page = backend.list_uows(
            process=args.process, state=args.state, limit=args.limit, cursor=args.cursor
        )
        return page["items"], page["next_cursor"]
    if args.target == "boxes":
        return backend.list_boxes(args.box), None
    return backend.list_workers(box_id=args.box, process=args.process), None
