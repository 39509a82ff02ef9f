"""The ledger: one embryo job for every timeperiod of a managed process, up to now.

After any downtime every missed period is created in one bulk call, so none is silently dropped.
The cost depends on what is missing, not on the length of history: only the newest stored job is
read to know where to continue.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from db.ids import new_id
from db.models import Job, JobQuery
from db.timeperiod import Timeperiod

if TYPE_CHECKING:
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
    qualifier = entry.time_qualifier
    newest = store.find_jobs(JobQuery(process=entry.name), limit=1).items
    if newest:
        first = Timeperiod.parse(qualifier, newest[0].timeperiod).next()
    elif entry.start_timeperiod:
        first = Timeperiod.parse(qualifier, entry.start_timeperiod)
    else:
        first = Timeperiod.containing(qualifier, now)
    created = 0
    batch: list[Job] = []
    # through the period containing ``now`` (``between`` stops before its bound)
    for period in Timeperiod.between(qualifier, first, now + timedelta(milliseconds=1)):
        batch.append(
            Job(
                id=new_id(),
                process=entry.name,
                qualifier=qualifier,
                timeperiod=str(period),
                created_at=now,
                updated_at=now,
            )
        )
        if len(batch) >= BATCH:
            created += store.ensure_jobs(batch)
            batch = []
    if batch:
        created += store.ensure_jobs(batch)
    if created:
        log.info("process %s: %d new jobs up to %s", entry.name, created, now.isoformat())
    return created
