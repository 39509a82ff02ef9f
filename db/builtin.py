"""Processes Tactus registers itself."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from db.errors import DuplicateKey, NotFound
from db.models import ProcessEntry, ProcessRecord
from db.states import ProcessKind, ProcessSource

if TYPE_CHECKING:
    from db.clock import Clock
    from db.store import Store

#: Name of the built-in process that runs ad-hoc tasks (``launch.py submit``, POST /tasks).
ADHOC = "adhoc"

#: Its entry: a freerun whose trigger never fires again; tasks are its units of work, each
#: carrying its shell command in ``arguments["command"]``, which the shell driver runs through
#: ``/bin/sh -c`` in place of this placeholder ``command``.
ADHOC_ENTRY = ProcessEntry(
    name=ADHOC,
    kind=ProcessKind.FREERUN,
    command=("true",),
    trigger="once 2000-01-01T00:00:00Z",
    max_active=1000,
    retries=0,
    workers=1,
    description="Built-in: runs ad-hoc tasks (launch.py submit, POST /api/v1/tasks).",
)


def ensure_builtin_processes(store: Store, clock: Clock) -> None:
    """Register the built-in processes if they are missing (idempotent, race-safe)."""
    try:
        store.get_process(ADHOC)
        return
    except NotFound:
        pass
    now = clock.now()
    try:
        store.insert_process(
            ProcessRecord(
                entry=replace(ADHOC_ENTRY),
                source=ProcessSource.API,
                registered=None,
                created_at=now,
                updated_at=now,
            )
        )
    except DuplicateKey:
        pass
