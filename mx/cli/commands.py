"""Command-line front end of the actions (SPEC section 5): trigger, reprocess, skip, cancel,
enable, disable, submit, status-of. Each command parses, calls one verb of ``mx.services`` and
prints the result, so the command line, the API and the page cannot disagree."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from db import open_store
from db.clock import SystemClock
from mq import open_broker
from mx.services import actions, tasks
from mx.services.context import ServiceContext

if TYPE_CHECKING:
    from settings import Settings

Out = Callable[[str], None]


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
    for name in ("enable", "disable"):
        p = sub.add_parser(name, help=f"{name} a process")
        p.add_argument("process")
    p = sub.add_parser("submit", help="an ad-hoc one-off shell command; prints its id")
    p.add_argument("--command", dest="task_command", required=True, help="run by /bin/sh -c")
    p.add_argument("--at", dest="scheduled_at", help="ISO instant (default: now)")
    p.add_argument("--retries", type=int, default=0, help="retries on failure (default 0)")
    p = sub.add_parser("status-of", help="state and timestamps of a task or unit of work")
    p.add_argument("id")
    for name in (
        "trigger",
        "reprocess",
        "skip",
        "cancel",
        "enable",
        "disable",
        "submit",
        "status-of",
    ):
        sub.choices[name].add_argument("--json", action="store_true", help="print the API's JSON")


@contextlib.contextmanager
def service_context(settings: Settings, actor: str = "cli") -> Iterator[ServiceContext]:
    """A ServiceContext on the installation's store and broker, closed afterwards."""
    with open_store(settings.store_uri) as store:
        store.init_schema()
        with open_broker(settings.broker_uri, store) as broker:
            yield ServiceContext(
                store=store,
                clock=SystemClock(),
                publish=lambda queue, body, delay: broker.publish(queue, body, delay=delay),
                queue_prefix=settings.queue_prefix,
                timezone=settings.timezone,
                actor=actor,
            )


def _print(args: argparse.Namespace, out: Out, data: Any, summary: str) -> int:
    out(json.dumps(data, indent=2) if args.json else summary)
    return 0


def cmd_trigger(args: argparse.Namespace, settings: Settings, out: Out) -> int:
    with service_context(settings) as ctx:
        result = actions.trigger(ctx, args.process)
    uow = result["uow"]
    text = (
        f"{args.process}: unit of work {uow['id']} requested"
        if uow
        else f"{args.process}: scheduler asked to look now"
    )
    return _print(args, out, result, text)


def cmd_reprocess(args: argparse.Namespace, settings: Settings, out: Out) -> int:
    with service_context(settings) as ctx:
        changed = actions.reprocess(ctx, args.process, args.timeperiod)
    lines = [f"  {j['process']} {j['timeperiod']} -> {j['state']}" for j in changed]
    return _print(args, out, changed, "\n".join([f"{len(changed)} jobs changed", *lines]))


def cmd_skip(args: argparse.Namespace, settings: Settings, out: Out) -> int:
    with service_context(settings) as ctx:
        changed = actions.skip(ctx, args.process, args.timeperiod)
    lines = [f"  {j['process']} {j['timeperiod']} -> {j['state']}" for j in changed]
    return _print(args, out, changed, "\n".join([f"{len(changed)} jobs changed", *lines]))


def cmd_cancel(args: argparse.Namespace, settings: Settings, out: Out) -> int:
    with service_context(settings) as ctx:
        uow = actions.cancel(ctx, args.uow_id)
    return _print(args, out, uow, f"unit of work {uow['id']}: {uow['state']}")


def _set_enabled(args: argparse.Namespace, settings: Settings, out: Out, enabled: bool) -> int:
    with service_context(settings) as ctx:
        process = actions.set_enabled(ctx, args.process, enabled)
    state = "enabled" if process["enabled"] else "disabled"
    return _print(args, out, process, f"{process['name']}: {state}")


def cmd_enable(args: argparse.Namespace, settings: Settings, out: Out) -> int:
    return _set_enabled(args, settings, out, True)


def cmd_disable(args: argparse.Namespace, settings: Settings, out: Out) -> int:
    return _set_enabled(args, settings, out, False)


def cmd_submit(args: argparse.Namespace, settings: Settings, out: Out) -> int:
    with service_context(settings) as ctx:
        task = tasks.submit(
            ctx, args.task_command, scheduled_at=args.scheduled_at, retries=args.retries
        )
    return _print(args, out, task, task["task_id"])


def cmd_status_of(args: argparse.Namespace, settings: Settings, out: Out) -> int:
    with service_context(settings) as ctx:
        task = tasks.status_of(ctx, args.id)
    keys = (
        "state",
        "scheduled_at",
        "picked_at",
        "started_at",
        "completed_at",
        "failed_at",
        "exit_code",
    )
    lines = [f"{args.id}"] + [f"  {k}: {task[k]}" for k in keys if task.get(k) is not None]
    return _print(args, out, task, "\n".join(lines))


COMMANDS = {
    "trigger": cmd_trigger,
    "reprocess": cmd_reprocess,
    "skip": cmd_skip,
    "cancel": cmd_cancel,
    "enable": cmd_enable,
    "disable": cmd_disable,
    "submit": cmd_submit,
    "status-of": cmd_status_of,
}
