"""The ledger: one embryo job for every timeperiod of a managed process, up to now.

After any downtime every missed period is created in one bulk call, so none is silently dropped.
The cost depends on what is missing, not on the length of history: only the newest stored job is
read to know where to continue.
"""

from __future__ import annotations

import itertools
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from db.ids import new_id
from db.models import Job, JobQuery
from db.timeperiod import Timeperiod

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from db.models import ProcessEntry
    from db.store import Store

log = logging.getLogger(f"tactus.{__name__}")

#: Jobs inserted per ``ensure_jobs`` call while catching up.
BATCH = 2000


def materialize(store: Store, entry: ProcessEntry, now: datetime) -> int:
    """Create the missing jobs of ``entry`` from its ``start_timeperiod`` (or after its newest
    job) up to the period containing ``now``.

    Returns:
        How many jobs were created.
    """
    newest = store.find_jobs(JobQuery(process=entry.name), limit=1).items
    created = _ensure(store, _missing(entry, newest[0] if newest else None, now))
    if created:
        log.info("process %s: %d new jobs up to %s", entry.name, created, now.isoformat())
    return created


def materialize_many(store: Store, entries: Sequence[ProcessEntry], now: datetime) -> int:
    """:func:`materialize` of several processes: their newest jobs read in one go
    (:meth:`~db.store.Store.newest_jobs`), their missing jobs inserted together.

    Returns:
        How many jobs were created.
    """
    newest = store.newest_jobs([entry.name for entry in entries])
    created = _ensure(
        store,
        (job for entry in entries for job in _missing(entry, newest.get(entry.name), now)),
    )
    if created:
        log.info("%d processes: %d new jobs up to %s", len(entries), created, now.isoformat())
    return created


def _missing(entry: ProcessEntry, newest: Job | None, now: datetime) -> Iterator[Job]:
    """The jobs of ``entry`` after ``newest`` (or from its start) through the period
    containing ``now``."""
    qualifier = entry.time_qualifier
    if newest is not None:
        first = Timeperiod.parse(qualifier, newest.timeperiod).next()
    elif entry.start_timeperiod:
        first = Timeperiod.parse(qualifier, entry.start_timeperiod)
    else:
        first = Timeperiod.containing(qualifier, now)
    # through the period containing ``now`` (``between`` stops before its bound)
    for period in Timeperiod.between(qualifier, first, now + timedelta(milliseconds=1)):
        yield Job(
            id=new_id(),
            process=entry.name,
            qualifier=qualifier,
            timeperiod=str(period),
            created_at=now,
            updated_at=now,
        )


def _ensure(store: Store, jobs: Iterable[Job]) -> int:
    """Insert ``jobs`` that do not exist yet, BATCH per ``ensure_jobs`` call."""
    created = 0
    pending = iter(jobs)
    while batch := list(itertools.islice(pending, BATCH)):
        created += store.ensure_jobs(batch)
    return created
