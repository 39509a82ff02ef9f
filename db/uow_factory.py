"""Creating a unit of work exactly once, shared by the scheduler and the actions.

The unit of work is inserted under its unique key (process, start, end, run_key); a second
attempt with the same key (a retry after a crash, a race) recovers the stored one instead of
creating a twin.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from db.errors import DuplicateKey
from db.ids import new_id
from db.models import Event, UnitOfWork

if TYPE_CHECKING:
    from db.clock import Clock
    from db.models import ProcessEntry
    from db.states import UowKind
    from db.store import Store

log = logging.getLogger(f"tactus.{__name__}")


def create_once(
    store: Store,
    entry: ProcessEntry,
    *,
    clock: Clock,
    actor: str,
    reason: str,
    kind: UowKind,
    start: str,
    end: str,
    run_key: str,
    timeperiod: str | None = None,
    scheduled_at: datetime | None = None,
    arguments: Mapping[str, Any] | None = None,
    retries: int | None = None,
) -> tuple[UnitOfWork, bool]:
    """Insert a unit of work for ``entry``, or recover the one stored under the same key.

    Returns:
        (the unit of work, True if this call created it).
    """
    now = clock.now()
    uow = UnitOfWork(
        id=new_id(),
        process=entry.name,
        kind=kind,
        start_timeperiod=start,
        end_timeperiod=end,
        run_key=run_key,
        timeperiod=timeperiod,
        retries=entry.retries if retries is None else retries,
        arguments={**dict(entry.arguments), **dict(arguments or {})},
        created_at=now,
        updated_at=now,
        scheduled_at=scheduled_at,
        submitted_at=now,
    )
    event = Event(
        entity="uow",
        entity_id=uow.id,
        at=now,
        trigger="create",
        from_state=None,
        to_state=uow.state.value,
        actor=actor,
        reason=reason,
    )
    try:
        return store.create_uow(uow, event=event), True
    except DuplicateKey:
        existing = store.find_uow_by_key(entry.name, start, end, run_key)
        if existing is None:  # removed between the two calls: nothing sane to recover
            raise
        log.info("uow %s: recovered the unit of work already stored for %s", existing.id, run_key)
        return existing, False
