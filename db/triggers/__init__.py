"""Triggers: when a freerun fires, or how often the scheduler looks at a managed process.

SPEC section 4 syntaxes, all parsed by :func:`parse_trigger`:

- cron, 5 fields (``*/5 * * * *``) or 6 with seconds last (croniter's convention), plus the
  ``@hourly``, ``@daily``, ``@midnight``, ``@weekly``, ``@monthly``, ``@yearly`` and
  ``@annually`` shorthands;
- ``every 300`` or ``every 1h30m`` (units ``d``, ``h``, ``m``, ``s`` in that order);
- ``at 10:00,22:00`` or ``at Mon-Fri 09:30`` (clock times in the trigger's zone);
- ``once 2026-12-24T18:00:00Z`` (ISO 8601; without an offset, in the trigger's zone).

Modules: ``base`` (the :class:`Trigger` interface, ``every`` and ``once``), ``wallclock`` (cron
and ``at``, with the daylight-saving rules they follow) and ``parsing`` (:func:`parse_trigger`,
its caches, :func:`preview` and :func:`format_preview_line`).
"""

from __future__ import annotations

from db.triggers.base import EPOCH, IntervalTrigger, OnceTrigger, Trigger
from db.triggers.parsing import SYNTAXES, format_preview_line, parse_trigger, preview
from db.triggers.wallclock import AtTrigger, CronTrigger, WallClockTrigger

__all__ = [
    "EPOCH",
    "SYNTAXES",
    "AtTrigger",
    "CronTrigger",
    "IntervalTrigger",
    "OnceTrigger",
    "Trigger",
    "WallClockTrigger",
    "format_preview_line",
    "parse_trigger",
    "preview",
]
