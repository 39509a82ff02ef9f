"""Creating a unit of work exactly once, shared by the scheduler and the actions.

A freerun fire's or an ad-hoc task's unit of work is inserted under its unique key (process,
start, end, run_key); a second attempt with the same key (a retry after a crash, a race)
recovers the stored one instead of creating a twin.

A managed unit of work is not created here: it is a job's run, created with the job's start in
one store write (:func:`db.state_change.start_job`), so none ever exists without its job linked
to it. :func:`new_uow` builds it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from db.errors import DuplicateKey, InvalidInput
from db.flows import is_flow_run
from db.ids import new_ids
from db.models import Event, UnitOfWork
from db.states import UowKind

if TYPE_CHECKING:
    from db.clock import Clock
    from db.models import ProcessEntry
    from db.store import Store

log = logging.getLogger(f"tactus.{__name__}")


@dataclass(frozen=True, kw_only=True, slots=True)
class UowSpec:
    """What to create a unit of work of (the arguments of :func:`create_once`)."""

    entry: ProcessEntry
    kind: UowKind
    start: str
    end: str
    run_key: str
    reason: str
    timeperiod: str | None = None
    scheduled_at: datetime | None = None
    arguments: Mapping[str, Any] | None = None
    retries: int | None = None
    #: Its payload; None: the entry's (a freerun entry's ``payload_id``), if any.
    payload_id: str | None = None


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
    payload_id: str | None = None,
) -> tuple[UnitOfWork, bool]:
    """Insert a unit of work for ``entry``, or recover the one stored under the same key.

    Returns:
        (the unit of work, True if this call created it).

    Raises:
        InvalidInput: ``kind`` is managed (a job's run is created with the job's start).
    """
    spec = UowSpec(
        entry=entry,
        kind=kind,
        start=start,
        end=end,
        run_key=run_key,
        reason=reason,
        timeperiod=timeperiod,
        scheduled_at=scheduled_at,
        arguments=arguments,
        retries=retries,
        payload_id=payload_id,
    )
    uow, event = new_uow(spec, clock.now(), actor)
    try:
        return store.create_uow(uow, event=event), True
    except DuplicateKey:
        return _recovered(store, spec), False


def create_many_once(
    store: Store, specs: Sequence[UowSpec], *, clock: Clock, actor: str
) -> list[tuple[UnitOfWork, bool]]:
    """:func:`create_once` for several units of work, inserted in one store transaction
    (:meth:`~db.store.Store.create_uows`); each taken key recovers its stored twin.

    Returns:
        In the order of ``specs``: (the unit of work, True if this call created it).

    Raises:
        InvalidInput: a spec is of a managed unit of work; nothing was written.
    """
    now = clock.now()
    stored = store.create_uows([new_uow(spec, now, actor) for spec in specs])
    return [
        (_recovered(store, spec), False) if isinstance(result, DuplicateKey) else (result, True)
        for spec, result in zip(specs, stored, strict=True)
    ]


def new_uow(
    spec: UowSpec, now: datetime, actor: str, *, managed: bool = False
) -> tuple[UnitOfWork, Event]:
    """The unit of work ``spec`` describes, with its creation event, not stored yet.

    Args:
        spec: what to create.
        now: its creation instant.
        actor: who creates it (for the event).
        managed: True for a job's run (:func:`db.state_change.start_job`); else a managed
            ``spec`` is refused, so that none is created apart from its job.

    Raises:
        InvalidInput: a managed ``spec`` without ``managed``.
    """
    if (spec.kind is UowKind.MANAGED) is not managed:
        raise InvalidInput(
            "kind",
            "a managed unit of work is created with its job's start (db.state_change.start_job)"
            if not managed
            else f"a job's run is a managed unit of work (got {spec.kind})",
        )
    entry = spec.entry
    uow = UnitOfWork(
        # strictly increasing here: a pass makes many within one millisecond, and id order
        # is creation order (listings, the tests' "first" and "second")
        id=new_ids(1)[0],
        process=entry.name,
        kind=spec.kind,
        start_timeperiod=spec.start,
        end_timeperiod=spec.end,
        run_key=spec.run_key,
        timeperiod=spec.timeperiod,
        retries=entry.retries if spec.retries is None else spec.retries,
        arguments={**dict(entry.arguments), **dict(spec.arguments or {})},
        created_at=now,
        updated_at=now,
        scheduled_at=spec.scheduled_at,
        submitted_at=now,
        flow=is_flow_run(entry, spec.kind, spec.arguments),
        payload_id=spec.payload_id or entry.payload_id,
    )
    event = Event(
        entity="uow",
        entity_id=uow.id,
        at=now,
        trigger="create",
        from_state=None,
        to_state=uow.state.value,
        actor=actor,
        reason=spec.reason,
    )
    return uow, event


def _recovered(store: Store, spec: UowSpec) -> UnitOfWork:
    existing = store.find_uow_by_key(spec.entry.name, spec.start, spec.end, spec.run_key)
    if existing is None:  # removed between the two calls: nothing sane to recover
        raise DuplicateKey("uow", f"{spec.entry.name}/{spec.start}-{spec.end}/{spec.run_key}")
    log.info("uow %s: recovered the unit of work already stored for %s", existing.id, spec.run_key)
    return existing
