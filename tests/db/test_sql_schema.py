"""The SQL schema on stores made by an earlier version: ``init_schema`` adds the indexes a table
lacks and drops the retired ones, on every SQL backend."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from db.backends.sql import SqlStore
from db.backends.sql.schema import RETIRED_INDEXES, jobs, metadata
from tests.conftest import fresh_store_uri


def _index_names(store: SqlStore, table: str) -> set[str]:
    with store.engine.connect() as conn:
        return {index["name"] for index in sa.inspect(conn).get_indexes(table)}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_init_schema_adds_missing_and_drops_retired_indexes(backend, tmp_path):
    with fresh_store_uri(backend, tmp_path, None) as uri:
        store = SqlStore(uri)
        try:
            # given a store whose jobs table has the retired index instead of the current one
            store.init_schema()
            (newest,) = [index for index in jobs.indexes if index.name == "ix_jobs_state_newest"]
            with store.engine.begin() as conn:
                conn.execute(sa.schema.DropIndex(newest))
                for name in RETIRED_INDEXES["jobs"]:
                    conn.execute(sa.text(f"CREATE INDEX {name} ON jobs (state, timeperiod)"))
            assert "ix_jobs_state_newest" not in _index_names(store, "jobs")
            # when
            store.init_schema()
            store.init_schema()  # idempotent
            # then
            names = _index_names(store, "jobs")
            assert "ix_jobs_state_newest" in names
            assert not names & set(RETIRED_INDEXES["jobs"])
            for table in metadata.sorted_tables:
                assert {i.name for i in table.indexes} <= _index_names(store, table.name)
        finally:
            store.close()
