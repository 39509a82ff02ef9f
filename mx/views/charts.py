"""The page's charts laid out for inline SVG: bars, rows and axis ticks in pixels, drawn by
``_charts.html`` with their labels and ``<title>`` tooltips (readable without JavaScript; colours
come from the stylesheet's state classes, so nothing inline breaks the CSP).

- :func:`timeline`: a job's attempts, one row each, on a time axis.
- :func:`durations`: a process's recent runs, how long each took and when it landed.
- :func:`gantt`: the dashboard's last 24 hours, one row per process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from mx.views.filters import run_span, span, when

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from mx.services.runs import Attempt, Run

#: The width of every chart's drawing (the SVG's viewBox; CSS scales it to the page).
WIDTH = 960
#: Room on the left for row names.
GUTTER = 190
#: Height of one row of bars, and of the axis below them.
ROW = 22
AXIS = 30
#: The narrowest bar drawn: a one-second run on a 24 hour axis still shows.
MIN_BAR = 3.0
#: Tick steps tried on a time axis, finest first (seconds).
TIME_STEPS = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    state: str
    #: The tooltip (``<title>``): exact values.
    title: str
    href: str | None = None
    #: A short text drawn beside or under the bar ("" for none).
    label: str = ""
    #: Marks the bar (e.g. ``current`` or ``superseded``).
    mark: str = ""


@dataclass(frozen=True, slots=True)
class Tick:
    x: float
    label: str
    #: A second line (the day under an hour where the day changes).
    sub: str = ""


@dataclass(frozen=True, slots=True)
class Lane:
    """One row's name on the left, at ``y`` (the row's middle)."""

    y: float
    label: str
    href: str | None = None
    mark: str = ""


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    bars: list[Bar] = field(default_factory=list)
    lanes: list[Lane] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)
    #: Where the plot area starts and ends, and the axis line's y.
    left: float = GUTTER
    right: float = WIDTH - 10
    axis_y: float = 0
    #: A second panel under the first (the landing times of the duration chart).
    below: Chart | None = None
    caption: str = ""


def _time_ticks(start: datetime, end: datetime, left: float, scale: float) -> list[Tick]:
    """Ticks on round instants, about eight of them; the day is named where it changes."""
    seconds = max(1.0, (end - start).total_seconds())
    step = next((s for s in TIME_STEPS if seconds / s <= 8), TIME_STEPS[-1])
    first = datetime.fromtimestamp(math.ceil(start.timestamp() / step) * step, UTC)
    ticks = []
    day = None
    at = first
    while at <= end:
        fmt = "%H:%M" if step >= 60 else "%H:%M:%S"
        sub = at.strftime("%b %-d") if at.date() != day else ""
        day = at.date()
        ticks.append(
            Tick(x=left + (at - start).total_seconds() * scale, label=at.strftime(fmt), sub=sub)
        )
        at += timedelta(seconds=step)
    return ticks


def _time_chart(
    lanes: Sequence[tuple[str, str | None, str]],
    bars: Sequence[tuple[int, datetime, datetime, str, str, str | None, str]],
    start: datetime,
    end: datetime,
) -> Chart:
    """Rows of bars on a time axis from ``start`` to ``end``.

    ``lanes``: (label, href, mark) per row. ``bars``: (row, from, to, state, title, href, mark).
    """
    right = WIDTH - 10
    # Room for the longest row name (about 7 px a character at the lanes' font size).
    left = max(GUTTER, 7.2 * max((len(label) for label, _, _ in lanes), default=0) + 16)
    scale = (right - left) / max(1.0, (end - start).total_seconds())
    drawn = []
    for row, first, last, state, title, href, mark in bars:
        first, last = max(first, start), min(last, end)
        x = left + (first - start).total_seconds() * scale
        width = max(MIN_BAR, (last - first).total_seconds() * scale)
        drawn.append(
            Bar(
                x=round(min(x, right - MIN_BAR), 1),
                y=row * ROW + 4,
                width=round(width, 1),
                height=ROW - 8,
                state=state,
                title=title,
                href=href,
                mark=mark,
            )
        )
    axis_y = len(lanes) * ROW
    return Chart(
        width=WIDTH,
        height=axis_y + AXIS,
        bars=drawn,
        lanes=[
            Lane(y=i * ROW + ROW / 2, label=label, href=href, mark=mark)
            for i, (label, href, mark) in enumerate(lanes)
        ],
        ticks=_time_ticks(start, end, left, scale),
        left=round(left, 1),
        right=right,
        axis_y=axis_y,
    )


def timeline(
    attempts: Sequence[Attempt],
    *,
    now: datetime,
    current: str | None,
    uow_href: Callable[[str], str],
) -> Chart | None:
    """A job's attempts, oldest on top; ``current`` is the job's unit of work (the others are
    superseded). ``uow_href`` gives a unit of work's page."""
    if not attempts:
        return None
    ordered = sorted(attempts, key=lambda a: a.started)
    start = ordered[0].started
    end = max(a.finished or now for a in ordered)
    pad = max(timedelta(seconds=1), (end - start) * 0.02)
    lanes, bars = [], []
    for row, attempt in enumerate(ordered):
        mark = "current" if attempt.uow_id == current else "superseded"
        href = uow_href(attempt.uow_id)
        what = attempt.returned or (
            "" if attempt.exit_code is None else f"exit {attempt.exit_code}"
        )
        title = (
            f"{attempt.uow_id} attempt {attempt.number}: {attempt.outcome}"
            f"{f' ({what})' if what else ''}, {when(attempt.started)} – "
            f"{when(attempt.finished) if attempt.finished else 'running'}, "
            f"took {run_span(((attempt.finished or now) - attempt.started).total_seconds())}"
        )
        lanes.append((f"{attempt.uow_id} #{attempt.number}", href, mark))
        bars.append(
            (row, attempt.started, attempt.finished or now, attempt.outcome, title, href, mark)
        )
    return _time_chart(lanes, bars, start - pad, end + pad)


def gantt(
    rows: Sequence[tuple[str, list[Run]]], *, now: datetime, process_href: Callable[[str], str]
) -> Chart:
    """The last 24 hours, one row per process (``process_href`` gives a process's page)."""
    start = now - timedelta(hours=24)
    lanes, bars = [], []
    for row, (process, runs) in enumerate(rows):
        lanes.append((process, process_href(process), ""))
        for run in runs:
            title = (
                f"{process} {run.label}: {run.state}, {when(run.started)} – "
                f"{when(run.finished) if run.finished else 'running'}, took {run_span(run.seconds)}"
            )
            bars.append((row, run.started, run.finished or now, run.state, title, None, ""))
    chart = _time_chart(lanes, bars, start, now)
    return chart


def short_label(label: str) -> str:
    """A run's label under its bar: the hour or the day of a timeperiod, a freerun's time."""
    if label.isdigit() and len(label) == 10:
        hour, day = label[8:10], datetime.strptime(label[:8], "%Y%m%d")
        if label.endswith("0000") and label[4:6] == "01" and label[6:8] == "01":
            return label[:4]
        if label.endswith("0000"):
            return day.strftime("%b %Y")
        if hour == "00":
            return day.strftime("%b %-d")
        return f"{day.strftime('%b %-d')} {hour}:00"
    return label[11:16] if len(label) >= 16 else label


def _relative(seconds: float) -> str:
    """How far a run landed from its period's close: ``3m 05s after``, or ``before`` (a
    continuous process's run of an open period lands before it closes)."""
    return f"{span(abs(seconds))} {'before' if seconds < 0 else 'after'}"


def _closed(run: Run) -> str:
    return "its period closed" if run.timeperiod else "its scheduled time"


def durations(runs: Sequence[Run], *, uow_href: Callable[[str], str]) -> Chart | None:
    """A bar per run (oldest on the left): how long it took, and under it, when it landed
    after its period closed (managed) or after it was scheduled (freerun)."""
    if not runs:
        return None
    height = 120
    right = WIDTH - 10
    slot = (right - GUTTER) / len(runs)
    longest = max(r.seconds for r in runs) or 1.0
    every = max(1, math.ceil(len(runs) / 8))
    bars, ticks = [], []
    for i, run in enumerate(runs):
        h = max(MIN_BAR, run.seconds / longest * height)
        x = GUTTER + i * slot + slot * 0.15
        title = (
            f"{run.label}: {run.state}, took {run_span(run.seconds)}, started {when(run.started)}, "
            f"finished {when(run.finished) if run.finished else '(running)'}"
            + (
                f", landed {_relative(run.landed_after)} {_closed(run)}"
                if run.landed_after is not None
                else ""
            )
        )
        bars.append(
            Bar(
                x=round(x, 1),
                y=round(height - h, 1),
                width=round(max(MIN_BAR, slot * 0.7), 1),
                height=round(h, 1),
                state=run.state,
                title=title,
                href=uow_href(run.uow_id),
                label=run_span(run.seconds),
            )
        )
        if i % every == 0 or i == len(runs) - 1:
            ticks.append(Tick(x=round(x + slot * 0.35, 1), label=short_label(run.label)))
    lanes = [Lane(y=8, label=f"took (longest {run_span(longest)})"), Lane(y=height - 4, label="0s")]
    landed = [r.landed_after for r in runs if r.landed_after is not None]
    below = None
    if landed:
        latest = max(max(landed), 1.0)
        low = 60
        marks = []
        for i, run in enumerate(runs):
            if run.landed_after is None:
                continue
            h = max(MIN_BAR, max(0.0, run.landed_after) / latest * low)
            marks.append(
                Bar(
                    x=round(GUTTER + i * slot + slot * 0.15, 1),
                    y=round(low - h, 1),
                    width=round(max(MIN_BAR, slot * 0.7), 1),
                    height=round(h, 1),
                    state="landed",
                    title=f"{run.label}: finished {when(run.finished)}, "
                    f"{_relative(run.landed_after)} {_closed(run)}",
                )
            )
        below = Chart(
            width=WIDTH,
            height=low + 6,
            bars=marks,
            lanes=[
                Lane(y=8, label=f"landed (latest +{span(latest)})"),
                Lane(y=low - 4, label="on time"),
            ],
            axis_y=low,
            right=right,
        )
    return Chart(
        width=WIDTH,
        height=height + AXIS,
        bars=bars,
        lanes=lanes,
        ticks=ticks,
        axis_y=height,
        right=right,
        below=below,
    )
