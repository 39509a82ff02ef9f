"""``launch.py super --start P | --stop P | --query [--boxid ID]``: the supervisor's desired state
on a box, from the store or through ``--url``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from db.errors import InvalidInput
from mx.cli.render import Out, duration, human_bytes, iso_instant, print_json, render_table

if TYPE_CHECKING:
    from mx.cli.backend import Installation

#: Supervised states in which a process has an uptime and a memory size worth showing.
LIVE_STATES = frozenset({"starting", "running", "stopping"})
#: The table's columns.
COLUMNS = ["process", "desired", "state", "pid", "uptime", "memory", "start_attempts"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``super`` on ``launch.py``'s sub-parsers."""
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
    sup.add_argument(
        "--boxid",
        metavar="ID",
        help="the box to act on (default: the box_id setting; through --url: every box for "
        "--query, required for --start and --stop)",
    )
    sup.add_argument("--json", action="store_true", help="print the REST API's JSON")


def cmd_super(args: argparse.Namespace, inst: Installation, out: Out) -> int:
    """Start or stop a process on a box, or show the box; prints its instances afterwards."""
    settings = inst.settings
    if args.boxid:
        box_id: str | None = settings.replace(box_id=args.boxid).box_id
    elif inst.remote:
        # this machine's name means nothing to a remote installation
        if args.super_start or args.super_stop:
            raise InvalidInput("--boxid", "name the box to act on (through --url it is required)")
        box_id = None
    else:
        box_id = settings.box_id
    with inst.backend() as backend:
        if args.super_start:
            assert box_id is not None
            rows = backend.start_process(box_id, args.super_start)
        elif args.super_stop:
            assert box_id is not None
            rows = backend.stop_process(box_id, args.super_stop)
        else:
            rows = backend.list_boxes(box_id)
        now = backend.now()
    if args.json:
        print_json(out, rows)
        return 0
    for row in rows:
        live = row["state"] in LIVE_STATES and row["started_at"]
        row["uptime"] = (
            duration(now - iso_instant(row["started_at"], "started_at")) if live else None
        )
        row["memory"] = human_bytes(row["stats"].get("rss")) if live else None
    if box_id is None:
        out(render_table(rows, ["box_id", *COLUMNS]))
    else:
        out(f"box {box_id}")
        out(render_table(rows, COLUMNS))
    return 0
