"""How jobs relate: trees (children and parents) and ``depends_on`` counterparts (SPEC section 3).

Shared by the scheduler (finalizable, blocking) and the actions (reprocess and skip cascades),
so the rules are written once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from db.models import Job, JobQuery, ProcessEntry
from db.states import FINISHED_JOB_STATES, SUCCESSFUL_JOB_STATES, JobState, ProcessKind
from db.timeperiod import Timeperiod

if TYPE_CHECKING:
    from db.store import Store


@dataclass(frozen=True, slots=True)
class Registry:
    """An immutable snapshot of the managed processes and how they relate."""

    entries: Mapping[str, ProcessEntry]

    @classmethod
    def from_entries(cls, entries: Iterable[ProcessEntry]) -> Registry:
        return cls({e.name: e for e in entries})

    def managed(self) -> list[ProcessEntry]:
        return [e for e in self.entries.values() if e.kind is ProcessKind.MANAGED]

    def _tree(self, entry: ProcessEntry) -> list[ProcessEntry]:
        if not entry.tree:
            return [entry]
        members = [e for e in self.managed() if e.tree == entry.tree and e.time_qualifier]
        return sorted(members, key=lambda e: e.time_qualifier.rank)

    def child(self, name: str) -> ProcessEntry | None:
        """The next finer process in ``name``'s tree (its jobs are the children), or None."""
        entry = self.entries[name]
        tree = self._tree(entry)
        index = tree.index(entry)
        return tree[index - 1] if index > 0 else None

    def parent(self, name: str) -> ProcessEntry | None:
        """The next coarser process in ``name``'s tree, or None."""
        entry = self.entries[name]
        tree = self._tree(entry)
        index = tree.index(entry)
        return tree[index + 1] if index + 1 < len(tree) else None

    def dependencies(self, name: str) -> list[ProcessEntry]:
        """The managed processes ``name`` depends on."""
        return [self.entries[d] for d in self.entries[name].depends_on if d in self.entries]

    def dependents(self, name: str) -> list[ProcessEntry]:
        """The managed processes that depend on ``name``."""
        return [e for e in self.managed() if name in e.depends_on]


def timeperiod_of(job: Job) -> Timeperiod:
    return Timeperiod.parse(job.qualifier, job.timeperiod)


def related_jobs(store: Store, period: Timeperiod, other: ProcessEntry) -> tuple[list[Job], int]:
    """The jobs of ``other`` that relate to ``period`` (SPEC section 3): those ``period`` covers
    when ``other`` is finer or equal, or the one containing it when ``other`` is coarser.

    Returns:
        (the jobs that exist, how many there should be).
    """
    qualifier = other.time_qualifier
    if qualifier.rank > period.qualifier.rank:
        container = period.cast(qualifier)
        jobs = _jobs_between(store, other.name, container, container.next())
        return jobs, 1
    first = Timeperiod.containing(qualifier, period.start)
    end = Timeperiod.containing(qualifier, period.end)
    expected = len(period.covered(qualifier)) if qualifier != period.qualifier else 1
    return _jobs_between(store, other.name, first, end), expected


def _jobs_between(store: Store, process: str, first: Timeperiod, end: Timeperiod) -> list[Job]:
    query = JobQuery(
        process=process,
        from_timeperiod=str(first),
        to_timeperiod=str(end),
        newest_first=False,
    )
    jobs: list[Job] = []
    cursor = None
    while True:  # a year holds 8,784 hourly jobs: more than one page
        page = store.find_jobs(query, limit=1000, cursor=cursor)
        jobs.extend(page.items)
        if page.next_cursor is None:
            return jobs
        cursor = page.next_cursor


def all_finished(jobs: list[Job], expected: int) -> bool:
    return len(jobs) >= expected and all(j.state in FINISHED_JOB_STATES for j in jobs)


@dataclass(frozen=True, slots=True)
class Readiness:
    """What a job's relations allow right now."""

    #: Every dependency counterpart and every child is finished (SPEC "finalizable").
    finalizable: bool
    #: Every dependency counterpart is processed or noop (``dependencies`` blocking may run).
    dependencies_succeeded: bool
    #: Some dependency counterpart was skipped (``dependencies`` blocking skips the job).
    dependency_skipped: bool
    #: Why the job waits, for the history and the page ("" when nothing blocks).
    waiting_for: str = ""


def readiness(store: Store, registry: Registry, job: Job) -> Readiness:
    """Evaluate a job's dependencies and children."""
    period = timeperiod_of(job)
    waiting: list[str] = []
    deps_done = deps_ok = True
    skipped = False
    for dep in registry.dependencies(job.process):
        jobs, expected = related_jobs(store, period, dep)
        if not all_finished(jobs, expected):
            deps_done = deps_ok = False
            waiting.append(f"dependency {dep.name}")
        if any(j.state is JobState.SKIPPED for j in jobs):
            skipped = True
        if not (len(jobs) >= expected and all(j.state in SUCCESSFUL_JOB_STATES for j in jobs)):
            deps_ok = False
    children_done = True
    child = registry.child(job.process)
    if child is not None:
        jobs, expected = related_jobs(store, period, child)
        children_done = all_finished(jobs, expected)
        if not children_done:
            waiting.append(f"children {child.name}")
    return Readiness(
        finalizable=deps_done and children_done,
        dependencies_succeeded=deps_ok,
        dependency_skipped=skipped,
        waiting_for=", ".join(waiting),
    )
