"""Fixtures of the supervisor tests: a SQLite store, registered processes, configs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest

from db import open_store
from db.errors import NotFound
from db.models import ProcessEntry, ProcessRecord
from db.states import ProcessKind, ProcessSource
from db.store import Store
from supervisor.config import SupervisorConfig

BOX = "box1"
#: The environment marker of the supervisors these tests build: unique per test session, so the
#: orphan sweep of a real-process test never touches another session's processes.
MARKER = f"test-{uuid.uuid4().hex}"


@pytest.fixture
def sqlite_store(tmp_path) -> Iterator[Store]:
    """A fresh SQLite store in a file (reachable from other OS processes too)."""
    store = open_store(f"sqlite:///{tmp_path / 'tactus.db'}")
    store.init_schema()
    yield store
    store.close()


def register(store: Store, clock, name: str, **fields) -> ProcessEntry:
    """Insert (or replace) a registered process; daemons by default."""
    fields.setdefault("kind", ProcessKind.DAEMON)
    if fields["kind"] == ProcessKind.DAEMON:
        fields.setdefault("command", ("sleep", "1000"))
    entry = ProcessEntry(name=name, **fields)
    now = clock.now()
    try:
        current = store.get_process(name)
    except NotFound:
        store.insert_process(
            ProcessRecord(entry=entry, source=ProcessSource.FILE, created_at=now, updated_at=now)
        )
    else:
        store.update_process(
            replace(current, entry=entry, updated_at=now), expected_version=current.version
        )
    return entry


def make_config(tmp_path, **changes) -> SupervisorConfig:
    """A config with small, round numbers and no jitter, so delays are exact."""
    config = SupervisorConfig(
        box_id=BOX,
        startsecs=timedelta(seconds=1),
        startretries=2,
        stopwaitsecs=timedelta(seconds=5),
        backoff_base=timedelta(seconds=1),
        backoff_cap=timedelta(seconds=4),
        backoff_jitter=0.0,
        poll=timedelta(seconds=1),
        stats_interval=timedelta(seconds=5),
        marker=MARKER,
        cwd=str(tmp_path),
        log_dir=None,
    )
    return replace(config, **changes)
