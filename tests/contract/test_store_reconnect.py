"""A server-backed SQL store outlives its connections: when the server drops them (a restart, an
idle timeout), the next operation runs on a new connection instead of failing. The pool does not
ping each connection before use; the store runs a transaction again when its connection turns
out dead before the commit."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from db import open_store
from db.models import ProcessEntry, ProcessRecord
from db.states import ProcessKind, ProcessSource
from tests import servers

KILL_SESSIONS = {
    "postgresql": (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = :database AND pid <> pg_backend_pid()"
    ),
    "mariadb": "SELECT id FROM information_schema.processlist WHERE db = :database",
}


def _kill_sessions(server: servers.SqlServer, database: str) -> int:
    """Drop every server session connected to ``database``; how many there were."""
    engine = server._engine()
    try:
        with engine.connect() as conn:
            found = conn.execute(sa.text(KILL_SESSIONS[server.name]), {"database": database})
            ids = [row[0] for row in found]
            if server.name == "mariadb":
                for session in ids:
                    conn.execute(sa.text(f"KILL {int(session)}"))
        return len(ids)
    finally:
        engine.dispose()


@pytest.mark.needs_server
@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
def test_store_runs_again_on_a_new_connection_when_the_server_dropped_its_own(backend, clock):
    server = servers.POSTGRES if backend == "postgresql" else servers.MARIADB
    problem = server.available()
    if problem:
        servers.unavailable(problem)
    database, uri = server.create_database()
    store = open_store(uri)
    try:
        # given a store whose pool holds an idle connection
        store.init_schema()
        assert store.list_processes() == []
        # when the server drops it
        assert _kill_sessions(server, database) >= 1
        # then reads and writes go on, once each
        entry = ProcessEntry(name="after_drop", kind=ProcessKind.FREERUN, command=("true",))
        now = clock.now()
        store.insert_process(
            ProcessRecord(entry=entry, source=ProcessSource.API, created_at=now, updated_at=now)
        )
        assert [r.name for r in store.list_processes()] == ["after_drop"]
        assert store.engine.pool.checkedout() == 0
    finally:
        store.close()
        server.drop_database(database)
