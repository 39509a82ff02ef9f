"""Verbs on registered processes: register a file, list and show them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from db.errors import InvalidInput
from db.models import Event, ProcessRecord
from db.payloads import entry_with_stored_payload
from db.registration import RegistrationPlan, load_file, plan_registration
from db.states import ProcessKind, ProcessSource
from db.timeperiod import Timeperiod
from db.triggers import parse_trigger
from mx.services import validate
from mx.services.serialize import process_json

if TYPE_CHECKING:
    from collections.abc import Mapping

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
        return registration_summary(registration_json(self))


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
    return register_entries(
        store, load_file(path), source=str(path), clock=clock, actor=actor, check=check, prune=prune
    )


def register_entries(
    store: Store,
    entries: list[ProcessEntry],
    *,
    source: str,
    clock: Clock,
    actor: str,
    check: bool = False,
    prune: bool = False,
) -> RegistrationResult:
    """Upsert validated entries as one registration file's (:func:`register_file`; the REST
    API's registration, sent by ``launch.py register --url``, comes here with the entries the
    sender read from ``source``)."""
    for entry in entries:
        try:
            validate.json_value(entry.to_dict(), "entry")
            validate.process_name(entry.name, "name")
        except InvalidInput as exc:
            raise InvalidInput(exc.field, exc.problem, entity=f"process {entry.name!r}") from None
    now = clock.now()
    if not check:
        # Inline payloads are stored first (once per content: harmless if the rest fails).
        entries = [entry_with_stored_payload(store, entry, now) for entry in entries]
    existing = {r.name: (r.entry, r.registered, r.source.value) for r in store.list_processes()}
    plan = plan_registration(existing, entries, prune=prune)
    if check:
        return RegistrationResult(plan=plan, applied=False)
    for entry in plan.create:
        record = ProcessRecord(
            entry=_resolve_start(entry, now),
            source=ProcessSource.FILE,
            registered=entry.to_dict(),
            created_at=now,
            updated_at=now,
        )
        store.insert_process(record)
        store.append_event(_event(entry.name, "register", now, actor, f"created from {source}"))
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
            event=_event(planned.name, "register", now, actor, f"updated from {source}"),
        )
    for name in plan.prune:
        store.delete_process(name)
    result = RegistrationResult(plan=plan, applied=True)
    log.info("register %s: %s", source, result.summary())
    return result


def registration_summary(done: Mapping[str, Any]) -> str:
    """One line of what a registration did, from its API shape (:func:`registration_json`)."""
    verb = "registered" if done["applied"] else "would register (check only)"
    return (
        f"{verb}: {len(done['created'])} created, {len(done['updated'])} updated, "
        f"{len(done['unchanged'])} unchanged, {len(done['pruned'])} pruned"
    )


def registration_json(result: RegistrationResult) -> dict[str, Any]:
    """The API's shape of a registration: what was (or, with check, would be) done."""
    plan = result.plan
    return {
        "applied": result.applied,
        "created": [entry.name for entry in plan.create],
        "updated": [update.name for update in plan.update],
        "unchanged": list(plan.unchanged),
        "pruned": list(plan.prune),
    }


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
    """Every registered process in its API shape, with job or unit-of-work counts by state.

    For all processes at once (the command line): two grouped counts over the whole history.
    A page of the API counts only its own processes (:func:`process_views`).
    """
    job_counts = _by_process(store.count_jobs())
    uow_counts = _by_process(store.count_uows())
    return [
        _view(record, job_counts, uow_counts, now, default_timezone)
        for record in store.list_processes(kind)
    ]


def process_records(store: Store, kind: ProcessKind | None = None) -> list[ProcessRecord]:
    """The registered processes (optionally of one kind) by name, without counts: the list a
    page is cut from before :func:`process_views` counts for the page."""
    return store.list_processes(kind)


def process_views(
    store: Store, records: list[ProcessRecord], *, now: datetime, default_timezone: str
) -> list[dict[str, Any]]:
    """Some processes (a page) in their API shape: job counts by state for managed processes,
    unit-of-work counts by state for the others, and the next fire.

    The counts are exact and read for these processes only, through the (process, state)
    indexes, so a page costs what its own processes' histories cost: a grouped count of every
    process takes 150-300 ms over 1,000,000 units of work (SQLite or PostgreSQL); a page is one
    grouped query for its managed processes and one for the others.
    """
    managed = [r.name for r in records if r.entry.kind is ProcessKind.MANAGED]
    others = [r.name for r in records if r.entry.kind is not ProcessKind.MANAGED]
    job_counts = _by_process(store.count_jobs(managed)) if managed else {}
    uow_counts = _by_process(store.count_uows(others)) if others else {}
    return [_view(record, job_counts, uow_counts, now, default_timezone) for record in records]


def _view(
    record: ProcessRecord,
    job_counts: Mapping[str, dict[str, int]],
    uow_counts: Mapping[str, dict[str, int]],
    now: datetime,
    default_timezone: str,
) -> dict[str, Any]:
    counts = job_counts if record.entry.kind is ProcessKind.MANAGED else uow_counts
    return process_json(
        record,
        counts=counts.get(record.name, {}),
        next_fire=next_fire(record, now, default_timezone),
    )


def _by_process(counts: Mapping[tuple[str, Any], int]) -> dict[str, dict[str, int]]:
    """``{(process, state): n}`` -> ``{process: {state: n}}``, in one pass (a lookup per
    process would read every pair once per process: millions of steps for 1,000 processes)."""
    grouped: dict[str, dict[str, int]] = {}
    for (process, state), n in counts.items():
        grouped.setdefault(process, {})[str(state)] = n
    return grouped
