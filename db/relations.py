"""How jobs relate: trees (children and parents) and ``depends_on`` counterparts (SPEC section 3).

Shared by the scheduler (finalizable, blocking) and the actions (reprocess and skip cascades),
so the rules are written once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from db.models import Job, JobQuery, ProcessEntry
from db.states import FINISHED_JOB_STATES, SUCCESSFUL_JOB_STATES, JobState, ProcessKind
from db.timeperiod import Timeperiod

if TYPE_CHECKING:
    from datetime import datetime

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


def related_names(registry: Registry) -> frozenset[str]:
    """The managed processes whose jobs relate to another process's: in a tree, depending on
    another process, or depended on (one pass over the registry)."""
    related: set[str] = set()
    for entry in registry.managed():
        if entry.tree or entry.depends_on:
            related.add(entry.name)
            related.update(entry.depends_on)
    return frozenset(related)


def timeperiod_of(job: Job) -> Timeperiod:
    return Timeperiod.parse(job.qualifier, job.timeperiod)


def related_jobs(store: Store, period: Timeperiod, other: ProcessEntry) -> tuple[list[Job], int]:
    """The jobs of ``other`` that relate to ``period`` (SPEC section 3): those ``period`` covers
    when ``other`` is finer or equal, or the one containing it when ``other`` is coarser.

    Returns:
        (the jobs that exist, how many periods relate).
    """
    wanted = _related_periods(period, other)
    return _jobs_between(store, other.name, wanted[0], wanted[-1].next()), len(wanted)


def _related_periods(period: Timeperiod, other: ProcessEntry) -> list[Timeperiod]:
    qualifier = other.time_qualifier
    if qualifier.rank > period.qualifier.rank:
        return [period.cast(qualifier)]
    return period.covered(qualifier)


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


def first_period(store: Store, entry: ProcessEntry, now: datetime) -> Timeperiod:
    """The first period of ``entry`` that has or will have a job; earlier ones never get one.

    The ledger begins a process at its ``start_timeperiod`` (without one, at the period
    containing the moment it first runs) and then only continues after its newest job, so
    once a process has jobs its oldest one is the first, whatever the entry says now.
    """
    qualifier = entry.time_qualifier
    oldest = store.find_jobs(JobQuery(process=entry.name, newest_first=False), limit=1).items
    if oldest:
        return Timeperiod.parse(qualifier, oldest[0].timeperiod)
    if entry.start_timeperiod:
        return Timeperiod.parse(qualifier, entry.start_timeperiod)
    return Timeperiod.containing(qualifier, now)


@dataclass(frozen=True, slots=True)
class Relation:
    """The jobs of one related process (a dependency, or the tree children) for one period."""

    #: How the relation is named in words: ``children site_hourly``, ``dependency site_daily``.
    label: str
    #: The related jobs that exist.
    jobs: list[Job]
    #: Related periods that have no job yet but will (the ledger has not reached them).
    missing: list[Timeperiod]
    #: Related periods that never get a job: before the related process's first period.
    absent: list[Timeperiod]
    #: The related process's first period (None when no period was missing).
    first: Timeperiod | None

    @property
    def unfinished(self) -> list[Job]:
        return [j for j in self.jobs if j.state not in FINISHED_JOB_STATES]

    @property
    def finished(self) -> bool:
        """Every related period that can have a job has one, and it is finished."""
        return not self.missing and not self.unfinished

    @property
    def succeeded(self) -> bool:
        """Every related period that can have a job has one, processed or noop."""
        return not self.missing and all(j.state in SUCCESSFUL_JOB_STATES for j in self.jobs)

    @property
    def skipped(self) -> bool:
        return any(j.state is JobState.SKIPPED for j in self.jobs)

    def waiting(self) -> dict[str, int]:
        """What is not finished yet, counted (history details)."""
        return {"unfinished": len(self.unfinished), "not_created_yet": len(self.missing)}

    def not_waited_for(self) -> str:
        """The periods that cannot exist, in words ("" when none)."""
        if not self.absent:
            return ""
        return (
            f"{self.label}: {len(self.absent)} period(s) before {self.first}, its first, "
            "never exist and are not waited for"
        )


def relation(
    store: Store, period: Timeperiod, other: ProcessEntry, now: datetime, label: str
) -> Relation:
    """The jobs of ``other`` related to ``period`` (:func:`related_jobs`), and which related
    periods lack a job: those that will get one (``missing``: they are waited for) and those
    before ``other``'s first period, which never will (``absent``: not waited for)."""
    wanted = _related_periods(period, other)
    jobs = _jobs_between(store, other.name, wanted[0], wanted[-1].next())
    have = {j.timeperiod for j in jobs}
    missing = [p for p in wanted if str(p) not in have]
    first = None
    absent: list[Timeperiod] = []
    if missing:  # only then is it worth a read: which of them can never exist?
        first = first_period(store, other, now)
        absent = [p for p in missing if p < first]
        missing = [p for p in missing if p >= first]
    if not other.enabled:
        label = f"{label} (disabled)"
    return Relation(label=label, jobs=jobs, missing=missing, absent=absent, first=first)


@dataclass(frozen=True, slots=True)
class Readiness:
    """What a job's relations allow right now."""

    #: Every dependency counterpart and every child is finished (SPEC "finalizable"); related
    #: periods that never get a job (before the related process's first period) do not count.
    finalizable: bool
    #: Every dependency counterpart is processed or noop (``dependencies`` blocking may run).
    dependencies_succeeded: bool
    #: The dependencies with a skipped counterpart (``dependencies`` blocking skips the job).
    skipped_dependencies: tuple[str, ...] = ()
    #: Why the job waits, in words, for the history ("" when nothing blocks).
    waiting_for: str = ""
    #: What each relation waited for lacks, counted (the wait event's details).
    waiting: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    #: Related periods that never exist and are not waited for, in words ("" when none).
    not_waited_for: str = ""

    @property
    def dependency_skipped(self) -> bool:
        """Some dependency counterpart was skipped."""
        return bool(self.skipped_dependencies)


def readiness(store: Store, registry: Registry, job: Job, now: datetime) -> Readiness:
    """Evaluate a job's dependencies and children at ``now``."""
    period = timeperiod_of(job)
    relations: list[Relation] = []
    deps_done = deps_ok = True
    skipped: list[str] = []
    for dep in registry.dependencies(job.process):
        rel = relation(store, period, dep, now, f"dependency {dep.name}")
        relations.append(rel)
        deps_done = deps_done and rel.finished
        deps_ok = deps_ok and rel.succeeded
        if rel.skipped:
            skipped.append(dep.name)
    children_done = True
    child = registry.child(job.process)
    if child is not None:
        rel = relation(store, period, child, now, f"children {child.name}")
        relations.append(rel)
        children_done = rel.finished
    blocking = [rel for rel in relations if not rel.finished]
    return Readiness(
        finalizable=deps_done and children_done,
        dependencies_succeeded=deps_ok,
        skipped_dependencies=tuple(skipped),
        waiting_for=", ".join(rel.label for rel in blocking),
        waiting={rel.label: rel.waiting() for rel in blocking},
        not_waited_for="; ".join(filter(None, (rel.not_waited_for() for rel in relations))),
    )
