"""``launch.py executor``'s options (SPEC section 11): run units of work on this box, reaching
Tactus only through mx's URL with a token of role ``executor``.

    launch.py executor --url URL --token-file FILE [--processes P,...] [--slots N]
                       [--name NAME] [--box ID] [--wait S]
                       [--backoff exponential|fixed] [--backoff-base S] [--backoff-max S]
                       [--backoff-jitter F]

``--url``, ``--token-file`` (or ``--token``, ``TACTUS_TOKEN``) and ``--insecure`` are the remote
options every command takes (:mod:`mx.cli.options`). The executor itself is wired by
``process_starter.run_executor``.
"""

from __future__ import annotations

import argparse
import re
import socket

from db.errors import InvalidInput

#: A process name (SPEC section 4).
PROCESS_NAME = re.compile(r"[a-z0-9_]+")
#: Backoff while mx is unreachable: what ``--backoff`` takes.
BACKOFF_KINDS = ("exponential", "fixed")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``executor`` on ``launch.py``'s sub-parsers."""
    parser = sub.add_parser(
        "executor", help="run units of work here, reaching Tactus only through mx (--url)"
    )
    parser.add_argument(
        "--processes",
        metavar="P,...",
        default="",
        help="the processes whose units of work to run (default: every one whose boxes allow "
        "this box)",
    )
    parser.add_argument("--slots", type=int, default=1, help="units of work run at once")
    parser.add_argument(
        "--name", default=socket.gethostname(), help="how mx lists it (default: the host name)"
    )
    parser.add_argument(
        "--box", help="the box id matched against the processes' boxes (default: box_id)"
    )
    parser.add_argument(
        "--wait", type=float, default=20.0, help="seconds of a claim's long poll (1 to 30)"
    )
    parser.add_argument(
        "--backoff",
        choices=BACKOFF_KINDS,
        default="exponential",
        help="while mx is unreachable: the delay doubling up to --backoff-max, or fixed",
    )
    parser.add_argument("--backoff-base", type=float, default=1.0, help="first delay, seconds")
    parser.add_argument("--backoff-max", type=float, default=30.0, help="longest delay, seconds")
    parser.add_argument(
        "--backoff-jitter", type=float, default=0.2, help="spread of each delay (0.2: +-20%%)"
    )


def processes_of(text: str) -> tuple[str, ...]:
    """``--processes``: comma-separated process names.

    Raises:
        InvalidInput: a name that is not a process name.
    """
    names = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    for name in names:
        if not PROCESS_NAME.fullmatch(name):
            raise InvalidInput("--processes", f"{name!r} is not a process name ([a-z0-9_]+)")
    return names


def check(args: argparse.Namespace) -> None:
    """Refuse options out of range (exit 2).

    Raises:
        InvalidInput: the option is named.
    """
    if not 1 <= args.slots <= 1000:
        raise InvalidInput("--slots", "must be from 1 to 1000")
    if not 1 <= args.wait <= 30:
        raise InvalidInput("--wait", "must be from 1 to 30 seconds")
