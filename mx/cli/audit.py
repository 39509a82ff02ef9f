"""The audit trail of the local command line: one entry (who, what, target, when, how it ended)
for every command that changes state on this machine's store, as mx writes one for every
mutating request. Remote commands are audited by the mx they act through."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
from typing import TYPE_CHECKING, Any

from db import open_store
from db.clock import SystemClock
from db.errors import TactusError

if TYPE_CHECKING:
    from settings import Settings

log = logging.getLogger(f"tactus.{__name__}")


def cli_actor() -> str:
    """How the audit and histories name the local command line: ``cli <os user>``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME: a bare container
        user = f"uid {os.getuid()}"
    return f"cli {user}"


def describe(command: str, args: argparse.Namespace, box_id: str) -> tuple[str, str] | None:
    """(what, target) of a command that changes state, or None for one that only reads
    (``box_id``: this box, for ``super`` without ``--boxid``)."""
    if command == "register":
        return None if args.check else ("launch.py register", f"file {args.file}")
    if command == "db":
        return ("launch.py db --reset" if args.reset else "launch.py db --init"), ""
    if command in ("trigger", "enable", "disable"):
        return f"launch.py {command}", f"process {args.process}"
    if command in ("reprocess", "skip"):
        return f"launch.py {command}", f"job {args.process}/{args.timeperiod}"
    if command in ("cancel", "retry-failed"):
        return f"launch.py {command}", f"uow {args.uow_id}"
    if command == "submit":
        # the command text may hold secrets: not recorded; a payload file is named
        return "launch.py submit", f"payload file {args.payload}" if args.payload else ""
    if command == "super" and (args.super_start or args.super_stop):
        verb, process = (
            ("start", args.super_start) if args.super_start else ("stop", args.super_stop)
        )
        return f"launch.py super --{verb}", f"box {args.boxid or box_id}/{process}"
    if command in ("token", "user") and (args.create or args.remove):
        verb = "--create" if args.create else ("--revoke" if command == "token" else "--delete")
        return f"launch.py {command} {verb}", f"{command} {args.create or args.remove}"
    return None


def record(
    settings: Settings, command: str, args: argparse.Namespace, *, exit_code: int, error: str = ""
) -> None:
    """Append the audit entry of a local command that changes state (after it ran, whether it
    succeeded or not). A store that cannot take it is logged, never turned into a failure."""
    described = describe(command, args, settings.box_id)
    if described is None:
        return
    what, target = described
    details: dict[str, Any] = {"exit_code": exit_code}
    if error:
        details["error"] = error[:500]
    try:
        with open_store(settings.store_uri) as store:
            store.init_schema()
            store.append_audit(
                who=cli_actor(), what=what, target=target, at=SystemClock().now(), details=details
            )
    except TactusError as exc:
        log.error("audit: cannot record %s by %s: %s", what, cli_actor(), exc)
