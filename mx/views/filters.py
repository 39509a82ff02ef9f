"""Template filters: instants, ages, durations and sizes as people read them."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from mx.auth import current_principal
from mx.runtime import runtime

if TYPE_CHECKING:
    from flask import Flask


def parse_instant(value: Any) -> datetime | None:
    """An API instant (``2026-11-01T05:30:00.123Z``) or a datetime -> an aware datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def when(value: Any) -> str:
    """``2026-11-01 05:30:00Z``, or an empty string."""
    instant = parse_instant(value)
    return instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if instant else ""


def span(seconds: float | None) -> str:
    """``45s``, ``3m 05s``, ``2h 01m``, ``3d 4h``."""
    if seconds is None:
        return ""
    total = int(abs(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        text = f"{days}d {hours}h"
    elif hours:
        text = f"{hours}h {minutes:02d}m"
    elif minutes:
        text = f"{minutes}m {secs:02d}s"
    else:
        text = f"{secs}s"
    return f"-{text}" if seconds < 0 else text


def run_span(seconds: float | None) -> str:
    """How long a run took: ``0.25s`` under ten seconds (most runs of a quick worker take less
    than one), else as :func:`span`."""
    if seconds is None:
        return ""
    return f"{seconds:.2f}s" if abs(seconds) < 10 else span(seconds)


def ago(value: Any) -> str:
    """``5s ago``, ``in 3m 05s``, or an empty string."""
    instant = parse_instant(value)
    if instant is None:
        return ""
    delta = (runtime().clock.now() - instant).total_seconds()
    return f"{span(delta)} ago" if delta >= 0 else f"in {span(-delta)}"


def took(start: Any, end: Any) -> str:
    """How long from ``start`` to ``end`` (or to now when ``end`` is empty)."""
    first = parse_instant(start)
    if first is None:
        return ""
    last = parse_instant(end) or runtime().clock.now()
    return span((last - first).total_seconds())


def size(value: Any) -> str:
    """Bytes as ``12.3 MiB``."""
    if not isinstance(value, int | float):
        return ""
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return ""


#: A lone surrogate: not Unicode text, so UTF-8 cannot encode a page holding one.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def shown(value: Any) -> Any:
    """Every value a template prints (Jinja's ``finalize``): a string stored before mx refused
    lone surrogates shows them as U+FFFD instead of making the page fail to encode."""
    if isinstance(value, str) and _SURROGATE.search(value):
        cleaned = _SURROGATE.sub("\ufffd", value)
        return Markup(cleaned) if isinstance(value, Markup) else cleaned
    return value


def init_app(app: Flask) -> None:
    app.jinja_env.finalize = shown
    app.jinja_env.filters.update(when=when, ago=ago, size=size, span=span, run_span=run_span)
    app.jinja_env.globals["took"] = took
    app.context_processor(lambda: {"principal": current_principal()})
