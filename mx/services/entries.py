"""Run-time edits of registered entries (the API and the page): show one process, create a freerun
entry, edit any entry, delete a freerun entry.

Every value goes through the registration rules (:func:`db.registration.entry_from_mapping` for
one entry, :func:`db.registration.validate_entries` between entries), so an entry made here obeys
exactly what a registration file must. Edits are compare-and-set on the process's version, with a
history event; a run-time edit survives re-registering until the file changes that field
(:func:`db.registration.merge_registration`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from db.builtin import ADHOC
from db.errors import Conflict, DuplicateKey, InvalidInput
from db.models import Event, ProcessRecord
from db.payloads import entry_with_stored_payload
from db.registration import entry_from_mapping, step_where, validate_entries
from db.states import ProcessKind, ProcessSource
from mx.services import actions, validate
from mx.services.processes import next_fire
from mx.services.serialize import process_json

if TYPE_CHECKING:
    from datetime import datetime

    from db.models import ProcessEntry
    from db.store import Store
    from mx.services.context import ServiceContext

log = logging.getLogger(f"tactus.{__name__}")

#: Fields that make the entry, or one of its steps, run a shell command of the caller's choosing
#: (admin only). A ``worker`` can only name an installed :class:`workers.base.UowWorker` subclass.
PROGRAM_FIELDS = frozenset({"command", "shell"})
#: Fields an edit may not change (a process is renamed or re-kinded by its file).
FIXED_FIELDS = ("name", "kind")
#: Numeric fields of an entry: counts, and seconds (a step has those of them it shares).
COUNT_FIELDS = ("max_active", "retries", "workers", "noop_exit_code")
DURATION_FIELDS = ("lag", "retry_delay", "timeout")
#: Largest magnitude a numeric field may have at run time (about 31 years in seconds): beyond
#: it ``timedelta`` and the stores' 64-bit integers overflow, which the registration rules do
#: not catch yet, so the API answers 400 here instead of 500.
MAX_NUMBER = 10**9


def show_process(store: Store, name: str, *, now: datetime, default_timezone: str) -> dict:
    """One process in its API shape, with its counts by state and its next fire.

    Raises:
        InvalidInput: a malformed name.
        NotFound: no such process.
    """
    record = store.get_process(validate.process_name(name, "name"))
    if record.entry.kind is ProcessKind.MANAGED:
        counts_source: Mapping[tuple[str, Any], int] = store.count_jobs(name)
    else:
        counts_source = store.count_uows(name)
    counts = {str(state): n for (process, state), n in counts_source.items() if process == name}
    return process_json(record, counts=counts, next_fire=next_fire(record, now, default_timezone))


def create_freerun(ctx: ServiceContext, data: Any) -> dict[str, Any]:
    """Create a freerun entry from the fields of SPEC section 4 (``kind`` may be left out).

    Returns:
        The new process in its API shape.

    Raises:
        InvalidInput: a bad field (named), or a kind other than freerun.
        Conflict: a process of that name exists.
    """
    if not isinstance(data, Mapping):
        raise InvalidInput("body", "must be a JSON object with the fields of the entry")
    fields = dict(validate.json_value(data))
    if fields.get("kind") is None:
        fields["kind"] = ProcessKind.FREERUN.value
    if fields["kind"] != ProcessKind.FREERUN.value:
        # Managed and daemon entries need a registration file: their trees, dependencies and
        # boxes are checked together, and they are removed by registering again with --prune.
        raise InvalidInput("kind", "only freerun entries are created at run time")
    if "name" in fields:
        validate.process_name(fields["name"], "name")
    entry = _validated(fields, fields)
    stored = {r.name: r.entry for r in ctx.store.list_processes()}
    if entry.name in stored:
        raise DuplicateKey("process", entry.name)
    validate_entries([*stored.values(), entry])
    now = ctx.clock.now()
    entry = entry_with_stored_payload(ctx.store, entry, now)
    record = ctx.store.insert_process(
        ProcessRecord(
            entry=entry,
            source=ProcessSource.API,
            registered=None,
            created_at=now,
            updated_at=now,
        )
    )
    ctx.store.append_event(_event(entry.name, "create", now, ctx.actor, "created at run time"))
    log.info("process %s: created at run time by %s", entry.name, ctx.actor)
    ctx.wake(entry.name)
    return process_json(record, next_fire=next_fire(record, now, ctx.timezone))


def edit_process(ctx: ServiceContext, name: str, changes: Any) -> dict[str, Any]:
    """Change fields of a registered entry (``enabled``, ``trigger``, ``arguments``, ...).

    A field set to null goes back to its default. Turning ``enabled`` alone is
    :func:`mx.services.actions.set_enabled`.

    Returns:
        The process in its API shape after the edit.

    Raises:
        NotFound: no such process.
        InvalidInput: a bad field (named), or ``name`` or ``kind`` changed.
        Conflict: it changed concurrently (read it again and retry).
    """
    if not isinstance(changes, Mapping) or not changes:
        raise InvalidInput("body", "must be a JSON object with at least one field to change")
    validate.json_value(changes)
    record = ctx.store.get_process(validate.process_name(name, "name"))
    current = record.entry.to_dict()
    for field in FIXED_FIELDS:
        if field in changes and changes[field] != current[field]:
            raise InvalidInput(field, "cannot be changed at run time")
    merged = {**current, **changes}
    if changes.get("payload") is not None and "payload_id" not in changes:
        merged["payload_id"] = None  # an inline payload replaces the entry's payload
    now = ctx.clock.now()
    entry = entry_with_stored_payload(ctx.store, _validated(merged, changes), now)
    changed = sorted(f for f, v in entry.to_dict().items() if current.get(f) != v)
    if not changed:
        return show_process(ctx.store, name, now=now, default_timezone=ctx.timezone)
    if changed == ["enabled"]:
        actions.set_enabled(ctx, name, entry.enabled)
        return show_process(ctx.store, name, now=now, default_timezone=ctx.timezone)
    others = [r.entry for r in ctx.store.list_processes() if r.name != name]
    validate_entries([*others, entry])
    ctx.store.update_process(
        replace(record, entry=entry, updated_at=now),
        expected_version=record.version,
        event=_event(
            name, "edit", now, ctx.actor, "edited: " + ", ".join(changed), {"fields": changed}
        ),
    )
    log.info("process %s: %s edited by %s", name, ", ".join(changed), ctx.actor)
    ctx.wake(name)
    return show_process(ctx.store, name, now=now, default_timezone=ctx.timezone)


def delete_freerun(ctx: ServiceContext, name: str) -> dict[str, Any]:
    """Remove a freerun entry (its units of work stay as history).

    Returns:
        The removed entry in its API shape.

    Raises:
        NotFound: no such process.
        Conflict: it is not a freerun entry, or it is the built-in ad-hoc process.
    """
    record = ctx.store.get_process(validate.process_name(name, "name"))
    if record.entry.kind is not ProcessKind.FREERUN:
        raise Conflict(
            "process",
            name,
            f"is a {record.entry.kind.value} process: only freerun entries "
            "are deleted at run time (remove it from the file and register with --prune)",
        )
    if name == ADHOC:
        raise Conflict("process", name, "is built in (it runs the ad-hoc tasks)")
    # The history keeps who removed it (events outlive their process).
    ctx.store.append_event(_event(name, "delete", ctx.clock.now(), ctx.actor, "deleted"))
    ctx.store.delete_process(name)
    log.info("process %s: deleted by %s", name, ctx.actor)
    ctx.wake(name)
    return process_json(record)


def _validated(fields: Mapping[str, Any], given: Mapping[str, Any]) -> ProcessEntry:
    """The entry by the registration rules, with numbers kept in range first (its steps' too)."""
    fields = _numbers(fields, "")
    steps = fields.get("steps")
    if isinstance(steps, list):
        fields["steps"] = [
            _numbers(step, step_where(step, index) + ".") if isinstance(step, Mapping) else step
            for index, step in enumerate(steps)
        ]
    try:
        return entry_from_mapping(fields)
    except OverflowError as exc:
        # A date at the edge of the calendar (``once 9999-12-31T23:59:59-01:00``).
        field = next((f for f in ("trigger", "start_timeperiod") if f in given), "body")
        raise InvalidInput(field, f"out of range ({exc})") from exc


def _numbers(fields: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """``fields`` with whole JSON numbers of the count fields made ints; durations finer than
    a store keeps, and numbers out of range, refused (the field named after ``prefix``)."""
    fields = dict(fields)
    for field in COUNT_FIELDS:
        if field in fields:
            fields[field] = validate.whole(fields[field])
    for field in DURATION_FIELDS:
        validate.seconds(prefix + field, fields.get(field))
    for field in (*DURATION_FIELDS, *COUNT_FIELDS):
        value = fields.get(field)
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not -MAX_NUMBER <= value <= MAX_NUMBER:
                raise InvalidInput(
                    prefix + field, f"must be between -{MAX_NUMBER} and {MAX_NUMBER}"
                )
    return fields


def touches_program(data: Any, kind: ProcessKind = ProcessKind.FREERUN) -> bool:
    """Whether a create or edit body sets what runs as a program: ``command`` or ``shell`` of
    the entry or of one of its ``steps``, or a daemon's ``worker`` (any importable callable,
    where the other kinds' workers must be :class:`~workers.base.UowWorker` classes). Admin
    only."""
    if not isinstance(data, Mapping):
        return False
    steps = data.get("steps")
    in_steps = isinstance(steps, list) and any(
        isinstance(step, Mapping) and PROGRAM_FIELDS & set(step) for step in steps
    )
    return (
        bool(PROGRAM_FIELDS & set(data))
        or in_steps
        or (kind is ProcessKind.DAEMON and "worker" in data)
    )


def _event(
    name: str,
    trigger: str,
    at: datetime,
    actor: str,
    reason: str,
    details: Mapping[str, Any] | None = None,
) -> Event:
    return Event(
        entity="process",
        entity_id=name,
        at=at,
        trigger=trigger,
        from_state=None,
        to_state=None,
        actor=actor,
        reason=reason,
        details=dict(details or {}),
    )
