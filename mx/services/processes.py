"""Verbs on registered processes: register a file, list and show them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from db.models import Event, ProcessRecord
from db.registration import RegistrationPlan, load_file, plan_registration
from db.states import ProcessKind, ProcessSource
from db.timeperiod import Timeperiod
from db.triggers import parse_trigger
from mx.services.serialize import process_json

if TYPE_CHECKING:
    from db.clock import Clock
    from db.models import ProcessEntry
    from db.store import Store

log = logging.getLogger(f"tactus.{__name__}")


@dataclass(frozen=True, kw_only=True, slots=True)
class RegistrationResult:
    """What ``register`` did (or, with ``check``, would do)."""

    plan: RegistrationPlan
    applied: bool

    def summary(self) -> str:
        p = self.plan
        verb = "registered" if self.applied else "would register (check only)"
        return (
            f"{verb}: {len(p.create)} created, {len(p.update)} updated, "
            f"{len(p.unchanged)} unchanged, {len(p.prune)} pruned"
        )


def register_file(
    store: Store,
    path: str,
    *,
    clock: Clock,
    actor: str,
    check: bool = False,
    prune: bool = False,
) -> RegistrationResult:
    """Validate a registration file and upsert its processes (SPEC section 4).

    The whole file is validated, and the plan computed, before anything is written: a bad file
    changes nothing. Re-registering the same file changes nothing either; a field edited at run
    time survives unless the file changed that field.

    Args:
        store: the store.
        path: a ``process_context.py`` or YAML file.
        clock: for timestamps and the default ``start_timeperiod`` (the current period).
        actor: who registers, for the history.
        check: validate and plan only.
        prune: remove file-registered processes the file no longer defines.

    Returns:
        The plan and whether it was applied.

    Raises:
        InvalidInput: the file is unreadable or invalid (every problem named).
    """
    entries = load_file(path)
    existing = {r.name: (r.entry, r.registered, r.source.value) for r in store.list_processes()}
    plan = plan_registration(existing, entries, prune=prune)
    if check:
        return RegistrationResult(plan=plan, applied=False)
    now = clock.now()
    for entry in plan.create:
        record = ProcessRecord(
            entry=_resolve_start(entry, now),
            source=ProcessSource.FILE,
            registered=entry.to_dict(),
            created_at=now,
            updated_at=now,
        )
        store.insert_process(record)
        store.append_event(_event(entry.name, "register", now, actor, f"created from {path}"))
    for planned in plan.update:
        current = store.get_process(planned.name)
        record = replace(
            current,
            entry=_resolve_start(planned.entry, now),
            registered=planned.registered,
            source=ProcessSource.FILE,
            updated_at=now,
        )
        store.update_process(
            record,
            expected_version=current.version,
            event=_event(planned.name, "register", now, actor, f"updated from {path}"),
        )
    for name in plan.prune:
        store.delete_process(name)
    result = RegistrationResult(plan=plan, applied=True)
    log.info("register %s: %s", path, result.summary())
    return result


def _resolve_start(entry: ProcessEntry, now: datetime) -> ProcessEntry:
    if entry.kind is not ProcessKind.MANAGED or entry.start_timeperiod is not None:
        return entry
    current = Timeperiod.containing(entry.time_qualifier, now)
    return replace(entry, start_timeperiod=str(current))


def _event(name: str, trigger: str, at: datetime, actor: str, reason: str) -> Event:
    return Event(
        entity="process",
        entity_id=name,
        at=at,
        trigger=trigger,
        from_state=None,
        to_state=None,
        actor=actor,
        reason=reason,
    )


def next_fire(record: ProcessRecord, now: datetime, default_timezone: str) -> datetime | None:
    """When a freerun fires next (None for other kinds, disabled or exhausted triggers)."""
    entry = record.entry
    if entry.kind is not ProcessKind.FREERUN or not entry.enabled or not entry.trigger:
        return None
    trigger = parse_trigger(entry.trigger, entry.timezone or default_timezone)
    return trigger.next_fire(now)


def list_processes(
    store: Store,
    *,
    now: datetime,
    default_timezone: str,
    kind: ProcessKind | None = None,
) -> list[dict[str, Any]]:
    """Every registered process in its API shape, with job or unit-of-work counts by state."""
    job_counts = store.count_jobs()
    uow_counts = store.count_uows()
    result = []
    for record in store.list_processes(kind):
        counts_source = job_counts if record.entry.kind is ProcessKind.MANAGED else uow_counts
        counts = {
            str(state): n for (process, state), n in counts_source.items() if process == record.name
        }
        result.append(
            process_json(record, counts=counts, next_fire=next_fire(record, now, default_timezone))
        )
    return result
