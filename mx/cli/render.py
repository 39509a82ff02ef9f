"""How the command line shows things: plain tables, durations, sizes, and ISO instants read from
arguments."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from db.errors import InvalidInput

#: Writes one line of output.
Out = Callable[[str], None]


def print_json(out: Out, data: Any) -> None:
    """The API's JSON, indented (the same text in both modes for the same data)."""
    out(json.dumps(data, indent=2))


def render_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain text table; empty cells for None."""
    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    if not rows:
        lines.append("(none)")
    return "\n".join(line.rstrip() for line in lines)


def cell(value: Any) -> str:
    """One table cell: empty for None, yes/no for booleans."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def duration(delta: timedelta) -> str:
    """``1d 2:03:04`` or ``2:03:04``."""
    seconds = max(int(delta.total_seconds()), 0)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    text = f"{hours:d}:{minutes:02d}:{seconds:02d}"
    return f"{days}d {text}" if days else text


def human_bytes(value: int | None) -> str | None:
    """``512 B``, ``1.5 MiB`` ...; None for None."""
    if value is None:
        return None
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return None


def iso_instant(text: str, field: str) -> datetime:
    """An ISO 8601 instant (UTC when it has no offset).

    Raises:
        InvalidInput: ``field`` is not an ISO 8601 instant.
    """
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput(field, f"not an ISO 8601 instant: {text!r}") from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
