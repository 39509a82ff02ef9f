"""SQL stores made by an earlier release get the columns added since (``ADDED_COLUMNS``)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from db import open_store
from db.backends.sql.schema import ADDED_COLUMNS, uows
from tests.conftest import fresh_store_uri


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_init_schema_adds_the_columns_an_old_uows_table_lacks(backend, tmp_path, nx_server):
    with fresh_store_uri(backend, tmp_path, nx_server) as uri:
        store = open_store(uri)
        try:
            # given a uows table as the first release made it
            old = sa.MetaData()
            sa.Table(
                "uows",
                old,
                *(c._copy() for c in uows.c if c.name not in ADDED_COLUMNS["uows"]),
            )
            with store.engine.begin() as conn:
                old.create_all(conn)
            # when
            store.init_schema()
            # then
            with store.engine.connect() as conn:
                present = {c["name"] for c in sa.inspect(conn).get_columns("uows")}
            assert set(ADDED_COLUMNS["uows"]) <= present
        finally:
            store.close()
