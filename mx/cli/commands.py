"""Command-line front end of the actions (SPEC sections 5, 10 and 12): trigger, reprocess, skip,
cancel, retry-failed, enable, disable, submit, status-of, messages. Each command parses, calls one
verb of its
:class:`~mx.cli.backend.Backend` (the service verbs on the store, or the API with ``--url``) and
prints the result, so the command line, the API and the page cannot disagree."""

from __future__ import annotations

import argparse
import json
import mimetypes
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from db.errors import InvalidInput
from db.payloads import DEFAULT_TYPE
from mx.cli.render import Out, print_json

if TYPE_CHECKING:
    from mx.cli.backend import Installation

#: The commands of this module (each takes ``--json``).
NAMES = (
    "trigger",
    "reprocess",
    "skip",
    "cancel",
    "retry-failed",
    "enable",
    "disable",
    "submit",
    "status-of",
    "messages",
)
#: Seconds between two reads of ``messages --follow``.
FOLLOW_INTERVAL = 1.0
#: Messages asked for at once.
MESSAGE_PAGE = 1000
#: What ``status-of`` shows besides the id, when set.
STATUS_KEYS = (
    "state",
    "scheduled_at",
    "picked_at",
    "started_at",
    "completed_at",
    "failed_at",
    "exit_code",
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register the action commands on ``launch.py``'s sub-parsers."""
    p = sub.add_parser("trigger", help="fire a process now")
    p.add_argument("process")
    for name, text in (
        ("reprocess", "restart a job and its cascade"),
        ("skip", "give a job up, with its cascade"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("process")
        p.add_argument("timeperiod")
    p = sub.add_parser("cancel", help="cancel a unit of work for good")
    p.add_argument("uow_id")
    p = sub.add_parser("retry-failed", help="re-run only the failed steps of a canceled flow run")
    p.add_argument("uow_id")
    for name in ("enable", "disable"):
        p = sub.add_parser(name, help=f"{name} a process")
        p.add_argument("process")
    p = sub.add_parser("submit", help="an ad-hoc one-off shell command; prints its id")
    p.add_argument("--command", dest="task_command", required=True, help="run by /bin/sh -c")
    p.add_argument("--at", dest="scheduled_at", help="ISO instant (default: now)")
    p.add_argument("--retries", type=int, default=0, help="retries on failure (default 0)")
    p.add_argument(
        "--payload",
        metavar="FILE",
        help="upload FILE as the task's payload (the command reads it from $TACTUS_PAYLOAD)",
    )
    p = sub.add_parser("status-of", help="state and timestamps of a task or unit of work")
    p.add_argument("id")
    p = sub.add_parser("messages", help="the messages of a task or unit of work, in order")
    p.add_argument("uow_id")
    p.add_argument(
        "--follow", action="store_true", help="print new messages until the unit of work ends"
    )
    for name in NAMES:
        sub.choices[name].add_argument("--json", action="store_true", help="print the API's JSON")


def _print(args: argparse.Namespace, out: Out, data: Any, summary: str) -> int:
    if args.json:
        print_json(out, data)
    else:
        out(summary)
    return 0


def _unpublished(result: dict[str, Any], what: str) -> None:
    """Say on standard error that a stored unit of work waits for the broker (exit code 0: the
    action is done, and repeating it would run the work twice)."""
    if result.get("published") is False and what:
        sys.stderr.write(
            f"note: the broker did not take {what} now; it is stored and is published when "
            "the broker is back (do not repeat the command)\n"
        )


def _changed(changed: list[dict[str, Any]]) -> str:
    lines = [f"  {j['process']} {j['timeperiod']} -> {j['state']}" for j in changed]
    return "\n".join([f"{len(changed)} jobs changed", *lines])


def cmd_trigger(args: argparse.Namespace, inst: Installation, out: Out) -> int:
    with inst.backend() as backend:
        result = backend.trigger(args.process)
    uow = result["uow"]
    _unpublished(result, f"unit of work {uow['id']}" if uow else "")
    text = (
        f"{args.process}: unit of work {uow['id']} requested"
        if uow
        else f"{args.process}: scheduler asked to look now"
    )
    return _print(args, out, result, text)


def cmd_reprocess(args: argparse.Namespace, inst: Installation, out: Out) -> int:
    with inst.backend() as backend:
        changed = backend.reprocess(args.process, args.timeperiod)
    return _print(args, out, changed, _changed(changed))


def cmd_skip(args: argparse.Namespace, inst: Installation, out: Out) -> int:
    with inst.backend() as backend:
        changed = backend.skip(args.process, args.timeperiod)
    return _print(args, out, changed, _changed(changed))


def cmd_cancel(args: argparse.Namespace, inst: Installation, out: Out) -> int:
    with inst.backend() as backend:
        uow = backend.cancel(args.uow_id)
    return _print(args, out, uow, f"unit of work {uow['id']}: {uow['state']}")


def cmd_retry_failed(args: argparse.Namespace, inst: Installation, out: Out) -> int:
    with inst.backend() as backend:
        result = backend.retry_failed(args.uow_id)
    uow, job = result["uow"], result["job"]
    lines = [
        f"flow run {uow['id']}: {uow['state']}",
        f"  re-running: {', '.join(result['rerun']) or 'nothing'}",
    ]
    if job is not None:
        lines.append(f"  job {job['process']} {job['timeperiod']}: {job['state']}")
    return _print(args, out, result, "\n".join(lines))


def _set_enabled(args: argparse.Namespace, inst: Installation, out: Out, enabled: bool) -> int:
    with inst.backend() as backend:
        process = backend.set_enabled(args.process, enabled)
    state = "enabled" if process["enabled"] else "disabled"
    return _print(args, out, process, f"{process['name']}: {state}")


def cmd_enable(args: argparse.Namespace, inst: Installation, out: Out) -> int:
    return _set_enabled(args, inst, out, True)


def cmd_disable(args: argparse.Namespace, inst: Installation, out: Out) -> int:
    return _set_enabled(args, inst, out, False)


def cmd_submit(args: argparse.Namespace, inst: Installation, out: Out) -> int:
    payload = None if args.payload is None else _read_payload(args.payload)
    with inst.backend() as backend:
        payload_id = None
        if payload is not None:
            payload_id = backend.post_payload(*payload)["payload_id"]
        task = backend.submit(
            args.task_command,
            scheduled_at=args.scheduled_at,
            retries=args.retries,
            payload_id=payload_id,
        )
    _unpublished(task, f"task {task['task_id']}")
    return _print(args, out, task, task["task_id"])


def _read_payload(path: str) -> tuple[bytes, str]:
    """A payload file's bytes and content type (guessed from its name, else bytes).

    Raises:
        InvalidInput: field ``--payload``: the file cannot be read.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput("--payload", f"cannot read {path}: {exc.strerror or exc}") from None
    return data, mimetypes.guess_type(path)[0] or DEFAULT_TYPE


def cmd_messages(args: argparse.Namespace, inst: Installation, out: Out) -> int:
    after, dropped = 0, 0
    with inst.backend() as backend:
        while True:
            page = backend.messages(args.uow_id, after=after, limit=MESSAGE_PAGE)
            for message in page["items"]:
                out(_message_line(args, message))
            after, dropped = page["next_after"], page["dropped"]
            if page["more"]:
                continue
            if not args.follow or page["finished"]:
                break
            # Messages are stored before the outcome: once it is finished, one more read has
            # them all.
            time.sleep(FOLLOW_INTERVAL)
    if dropped:
        sys.stderr.write(
            f"note: {dropped} later message(s) dropped (a unit of work keeps its first "
            "max_messages_per_uow)\n"
        )
    return 0


def _message_line(args: argparse.Namespace, message: dict[str, Any]) -> str:
    """One message: JSON on one line (``--json``), else its time, attempt and text."""
    if args.json:
        return json.dumps(message, ensure_ascii=False)
    return f"{message['at']}  {message['attempt']}  {message['text']}"


def cmd_status_of(args: argparse.Namespace, inst: Installation, out: Out) -> int:
    with inst.backend() as backend:
        task = backend.status_of(args.id)
    lines = [f"{args.id}"] + [f"  {k}: {task[k]}" for k in STATUS_KEYS if task.get(k) is not None]
    return _print(args, out, task, "\n".join(lines))


COMMANDS = {
    "trigger": cmd_trigger,
    "reprocess": cmd_reprocess,
    "skip": cmd_skip,
    "cancel": cmd_cancel,
    "retry-failed": cmd_retry_failed,
    "enable": cmd_enable,
    "disable": cmd_disable,
    "submit": cmd_submit,
    "status-of": cmd_status_of,
    "messages": cmd_messages,
}
