"""Which supervised processes belong on a box: the registered processes, placed by their fields.

Rules (documented in docs/supervisor.md):

- A process runs on a box when one of its ``boxes`` regular expressions matches the *whole*
  ``box_id`` (``re.fullmatch``, case-sensitive): ``web[0-9]+`` matches ``web1`` but not
  ``web1-old``, and ``dev`` does not match ``devops``. Write ``dev.*`` for a prefix.
- Only ``enabled`` processes run. A disabled one stays listed (and stopped) on its boxes.
- A managed or freerun process runs ``workers`` instances per box; a daemon runs one. Instance 0
  is named like the process, the others ``<process>.<n>`` (``site_hourly``, ``site_hourly.1``,
  ``site_hourly.2``). A process name never holds a dot (``[a-z0-9_]+``), so the two cannot clash.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from db.models import ProcessEntry
from db.states import ProcessKind

#: Separates a process name from its instance number.
INSTANCE_SEPARATOR = "."


@dataclass(frozen=True, kw_only=True, slots=True)
class Placement:
    """One supervised instance the registration puts on a box."""

    #: The supervised record's name (``site_hourly.1``).
    instance: str
    entry: ProcessEntry
    #: False for a disabled process: listed here but not run.
    runnable: bool


def instance_name(process: str, index: int) -> str:
    """``site_hourly`` for instance 0, ``site_hourly.<index>`` for the others."""
    return process if index == 0 else f"{process}{INSTANCE_SEPARATOR}{index}"


def process_of(instance: str) -> str:
    """The registered process an instance runs: ``site_hourly.2`` -> ``site_hourly``."""
    return instance.split(INSTANCE_SEPARATOR, 1)[0]


def runs_on(entry: ProcessEntry, box_id: str) -> bool:
    """Whether one of the entry's ``boxes`` patterns matches the whole ``box_id``."""
    return any(re.fullmatch(pattern, box_id) for pattern in entry.boxes)


def instance_count(entry: ProcessEntry) -> int:
    """``workers`` for managed and freerun processes; a daemon runs once per box."""
    return 1 if entry.kind == ProcessKind.DAEMON else max(entry.workers, 0)


def place(entries: Iterable[ProcessEntry], box_id: str) -> dict[str, Placement]:
    """Every supervised instance that belongs on ``box_id``, by instance name."""
    placed = {}
    for entry in entries:
        if not runs_on(entry, box_id):
            continue
        for index in range(instance_count(entry)):
            name = instance_name(entry.name, index)
            placed[name] = Placement(instance=name, entry=entry, runnable=entry.enabled)
    return placed
