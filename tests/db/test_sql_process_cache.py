"""The SQL store keeps parsed process records between calls: a change made by another process
(another store on the same database) is still seen at once."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from db import open_store
from db.models import ProcessRecord
from db.registration import entry_from_mapping
from db.states import ProcessSource

T0 = datetime(2026, 1, 5, 13, 0, tzinfo=UTC)


def record(name: str, at: datetime = T0, **fields) -> ProcessRecord:
    entry = entry_from_mapping(
        {"name": name, "kind": "freerun", "trigger": "every 60", "command": ["true"], **fields}
    )
    return ProcessRecord(
        entry=entry, source=ProcessSource.API, registered=None, created_at=at, updated_at=at
    )


def test_changes_by_another_store_are_seen(tmp_path):
    uri = f"sqlite:///{tmp_path / 'cache.db'}"
    with open_store(uri) as writer, open_store(uri) as reader:
        writer.init_schema()
        writer.insert_process(record("a"))
        assert [r.entry.trigger for r in reader.list_processes()] == ["every 60"]
        # an edit: a new version
        current = writer.get_process("a")
        writer.update_process(
            replace(
                current,
                entry=replace(current.entry, trigger="every 120"),
                updated_at=T0 + timedelta(seconds=1),
            ),
            expected_version=current.version,
        )
        assert [r.entry.trigger for r in reader.list_processes()] == ["every 120"]
        # a new one and a deleted one
        writer.insert_process(record("b"))
        writer.delete_process("a")
        assert [r.name for r in reader.list_processes()] == ["b"]
        # deleted and made again under the same name, version and instants, by the same store
        reader.delete_process("b")
        reader.insert_process(record("b", description="again"))
        assert [r.entry.description for r in reader.list_processes()] == ["again"]
