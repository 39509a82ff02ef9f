"""``launch.py why P [T]``: why a process (at a timeperiod) has not run or is waiting (SPEC
section 14), from the stored state here or, with ``--url``, through ``GET
/api/v1/processes/<name>/why``; the same reasons either way (:mod:`mx.services.why`)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from mx.cli.render import Out, print_json

if TYPE_CHECKING:
    from mx.cli.backend import Installation


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``why`` on ``launch.py``'s sub-parsers."""
    p = sub.add_parser("why", help="why a process (at a timeperiod) has not run or is waiting")
    p.add_argument("process")
    p.add_argument(
        "timeperiod",
        nargs="?",
        help="a managed process's timeperiod (default: its oldest unfinished job)",
    )
    p.add_argument(
        "--json", action="store_true", help="print the reasons as a list of {code, message, facts}"
    )


def render_why(answer: dict[str, Any]) -> str:
    """The reasons in words, each with its facts, one per line."""
    head = answer["process"]
    if answer.get("timeperiod"):
        head += f" {answer['timeperiod']}"
    if answer.get("state"):
        head += f" ({answer['state']})"
    lines = [head]
    for item in answer["reasons"]:
        lines.append(f"  {item['code']}: {item['message']}")
        for key, value in sorted(item["facts"].items()):
            shown = value if isinstance(value, str) else json.dumps(value)
            lines.append(f"      {key}: {shown}")
    return "\n".join(lines)


def cmd_why(args: argparse.Namespace, inst: Installation, out: Out) -> int:
    with inst.backend() as backend:
        answer = backend.why(args.process, args.timeperiod)
    if args.json:
        print_json(out, answer["reasons"])
    else:
        out(render_why(answer))
    return 0


COMMANDS = {"why": cmd_why}
