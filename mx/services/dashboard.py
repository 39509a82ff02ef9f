"""The dashboard grid: processes × their recent timeperiods (managed) or recent runs (freerun),
each cell one job or unit of work coloured by its state, the way Airflow's grid reads.

Under the grid, the last 24 hours of the same rows as a Gantt chart: each run a bar from its
start to its end, coloured by its outcome.

Cost is bounded by what is shown, never by the history: rows are paged; the managed rows of a
qualifier are one indexed read of their recent jobs, and each freerun row one indexed read of at
most ``columns`` units of work (by (process, id); a flow process's row reads its runs' steps too,
at most ``columns`` times its step count, and shows only the runs); the Gantt reads each row's
newest 50 units of work (by (process, id)). A flow process's row shows how far its newest run
got: one read of that run's steps (by parent) per such row. Nothing counts the whole history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from db import flows
from db.models import JobQuery, UowQuery
from db.states import FAILED_STEP_STATES, TERMINAL_UOW_STATES, ProcessKind, Qualifier
from db.store import MAX_PAGE_SIZE
from db.timeperiod import Timeperiod
from mx.services.runs import instant_of, last_day

if TYPE_CHECKING:
    from datetime import datetime

    from db.models import ProcessRecord
    from db.store import Store
    from mx.services.runs import Run

#: Columns of each section: recent periods of the grid, or recent runs of a freerun.
COLUMNS: dict[str, int] = {
    Qualifier.HOURLY.value: 24,
    Qualifier.DAILY.value: 14,
    Qualifier.MONTHLY.value: 12,
    Qualifier.YEARLY.value: 5,
    ProcessKind.FREERUN.value: 24,
}
#: Sections top to bottom: the finest grid first, freerun entries last.
SECTIONS = (*(q.value for q in Qualifier), ProcessKind.FREERUN.value)
#: Rows on one page of the dashboard.
ROWS_PER_PAGE = 50


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a flow run got: of its ``total`` steps, those that ended, and of them those that
    failed (canceled or upstream_failed)."""

    uow_id: str
    ended: int
    total: int
    failed: int

    @property
    def label(self) -> str:
        return f"{self.ended}/{self.total} steps"

    @property
    def title(self) -> str:
        failed = f" ({self.failed} failed)" if self.failed else ""
        return f"flow run {self.uow_id}: {self.ended} of {self.total} steps ended{failed}"

    @property
    def fraction(self) -> float:
        return self.ended / self.total if self.total else 0.0


@dataclass(frozen=True, slots=True)
class Cell:
    """One job (``timeperiod`` set) or one unit of work (``uow_id`` set); state None: no job
    exists for that period yet."""

    state: str | None
    label: str
    timeperiod: str | None = None
    uow_id: str | None = None
    #: A freerun run's instant (scheduled, else made): its column label.
    at: datetime | None = None
    #: The steps of its flow run, on the newest run of a flow process's row only.
    progress: Progress | None = None


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a grid: its period, the short label over it (``14`` of an hour), the
    coarser unit it belongs to (``Dec 6``: the label row above) and its full date (tooltip)."""

    timeperiod: str
    label: str
    group: str
    title: str


#: Per qualifier: the strftime of a column's label, of its group (the row above), of its title.
COLUMN_FORMATS: dict[str, tuple[str, str, str]] = {
    Qualifier.HOURLY.value: ("%H", "%a %b %-d", "%Y-%m-%d %H:00 UTC"),
    Qualifier.DAILY.value: ("%d", "%b %Y", "%a %Y-%m-%d"),
    Qualifier.MONTHLY.value: ("%b", "%Y", "%B %Y"),
    Qualifier.YEARLY.value: ("%Y", "", "%Y"),
}


@dataclass(frozen=True, slots=True)
class Row:
    process: str
    enabled: bool
    description: str
    cells: tuple[Cell, ...]

    @property
    def progress(self) -> Progress | None:
        """The progress of the row's newest flow run (a flow process's row), else None."""
        return next((c.progress for c in self.cells if c.progress is not None), None)


@dataclass(frozen=True, slots=True)
class Section:
    """Rows of one qualifier (their columns are shared) or of the freerun entries."""

    name: str
    #: The columns of a qualifier's grid (none for the freerun section: each of its rows has
    #: its own runs, labelled by their cells' instants).
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]

    @property
    def groups(self) -> list[tuple[str, int]]:
        """The label row over the columns: each group (a day over hours) and its column count."""
        spans: list[tuple[str, int]] = []
        for column in self.columns:
            if spans and spans[-1][0] == column.group:
                spans[-1] = (column.group, spans[-1][1] + 1)
            else:
                spans.append((column.group, 1))
        return spans


@dataclass(frozen=True, slots=True)
class Dashboard:
    sections: tuple[Section, ...]
    #: Processes matching the filter, on every page.
    total: int
    offset: int
    limit: int
    #: The last 24 hours of the page's processes: (process, its runs), in the grid's order.
    day: tuple[tuple[str, list[Run]], ...] = ()

    @property
    def next_offset(self) -> int | None:
        return self.offset + self.limit if self.offset + self.limit < self.total else None

    @property
    def previous_offset(self) -> int | None:
        return max(0, self.offset - self.limit) if self.offset > 0 else None


def section_of(record: ProcessRecord) -> str:
    entry = record.entry
    if entry.kind is ProcessKind.MANAGED and entry.time_qualifier is not None:
        return entry.time_qualifier.value
    return ProcessKind.FREERUN.value


def build(
    store: Store,
    *,
    now: datetime,
    search: str = "",
    offset: int = 0,
    limit: int = ROWS_PER_PAGE,
) -> Dashboard:
    """The grid of the processes whose name contains ``search``, ``limit`` rows from ``offset``.

    Args:
        store: where jobs and units of work live.
        now: the instant whose timeperiod is the rightmost column.
        search: case-insensitive part of a process name ('' for all).
        offset, limit: the page of rows (over every section, in section order then by name).
    """
    needle = search.strip().lower()
    records = sorted(
        (
            r
            for r in store.list_processes()
            if r.entry.kind is not ProcessKind.DAEMON and needle in r.name.lower()
        ),
        key=lambda r: (SECTIONS.index(section_of(r)), r.name),
    )
    shown = records[offset : offset + limit]
    sections = []
    for name in SECTIONS:
        members = [r for r in shown if section_of(r) == name]
        if not members:
            continue
        if name == ProcessKind.FREERUN.value:
            sections.append(_freerun_section(store, members))
        else:
            sections.append(_managed_section(store, Qualifier(name), members, now))
    return Dashboard(
        sections=tuple(sections),
        total=len(records),
        offset=offset,
        limit=limit,
        day=tuple(last_day(store, shown, now=now)),
    )


def _managed_section(
    store: Store, qualifier: Qualifier, records: list[ProcessRecord], now: datetime
) -> Section:
    count = COLUMNS[qualifier.value]
    last = Timeperiod.containing(qualifier, now)
    periods = [str(last.previous(n)) for n in range(count - 1, -1, -1)]
    states: dict[tuple[str, str], str] = {}
    uow_ids: dict[tuple[str, str], str | None] = {}
    query = JobQuery(processes=frozenset(r.name for r in records), from_timeperiod=periods[0])
    cursor = None
    while True:  # one read for the section, paged only past MAX_PAGE_SIZE cells
        page = store.find_jobs(query, limit=MAX_PAGE_SIZE, cursor=cursor)
        for job in page.items:
            states[(job.process, job.timeperiod)] = job.state.value
            uow_ids[(job.process, job.timeperiod)] = job.uow_id
        if (cursor := page.next_cursor) is None:
            break
    rows = []
    for record in records:
        # a flow process: the newest period whose job has a unit of work shows its progress
        newest = None
        if record.entry.steps:
            newest = next((tp for tp in reversed(periods) if uow_ids.get((record.name, tp))), None)
        cells = tuple(
            Cell(
                state=states.get((record.name, tp)),
                label=tp,
                timeperiod=tp if (record.name, tp) in states else None,
                progress=(
                    _progress(store, uow_ids[(record.name, tp)] or "", len(record.entry.steps))
                    if tp == newest
                    else None
                ),
            )
            for tp in periods
        )
        rows.append(_row(record, cells))
    return Section(name=qualifier.value, columns=_columns(qualifier, periods), rows=tuple(rows))


def _columns(qualifier: Qualifier, periods: list[str]) -> tuple[Column, ...]:
    label, group, title = COLUMN_FORMATS[qualifier.value]
    starts = [(p, Timeperiod.parse(qualifier, p).start) for p in periods]
    return tuple(
        Column(
            timeperiod=p,
            label=start.strftime(label),
            group=start.strftime(group) if group else "",
            title=start.strftime(title),
        )
        for p, start in starts
    )


def _freerun_section(store: Store, records: list[ProcessRecord]) -> Section:
    count = COLUMNS[ProcessKind.FREERUN.value]
    rows = []
    for record in records:
        # runs only: a flow run's steps are units of work of its process too
        uows = store.find_uows(UowQuery(process=record.name, top_level=True), limit=count).items
        newest = next((u for u in uows if u.flow), None)
        cells = [
            Cell(
                state=u.state.value,
                label=f"{u.id} {u.state.value}",
                uow_id=u.id,
                at=instant_of(u),
                progress=_progress(store, u.id, len(record.entry.steps)) if u is newest else None,
            )
            for u in reversed(uows)
        ]
        padding = [Cell(state=None, label="")] * (count - len(cells))
        rows.append(_row(record, tuple(padding + cells)))
    return Section(name=ProcessKind.FREERUN.value, columns=(), rows=tuple(rows))


def _row(record: ProcessRecord, cells: tuple[Cell, ...]) -> Row:
    return Row(
        process=record.name,
        enabled=record.entry.enabled,
        description=record.entry.description,
        cells=cells,
    )


def _progress(store: Store, flow_run_id: str, declared: int) -> Progress:
    """The progress of a flow run from its stored steps (one read); before its expansion it
    has none, out of the ``declared`` steps of its process."""
    steps = flows.steps_of(store, flow_run_id).values()
    return Progress(
        uow_id=flow_run_id,
        ended=sum(1 for s in steps if s.state in TERMINAL_UOW_STATES),
        total=len(steps) or declared,
        failed=sum(1 for s in steps if s.state in FAILED_STEP_STATES),
    )
