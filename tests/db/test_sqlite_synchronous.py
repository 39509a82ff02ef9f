"""The ``synchronous`` option of a SQLite store URI: ``full`` unless the URI asks for ``normal``."""

from __future__ import annotations

import pytest

from db.backends.sql import SqlStore
from db.errors import InvalidInput

#: SQLite's ``PRAGMA synchronous`` values.
FULL, NORMAL = 2, 1


def _synchronous(store: SqlStore) -> int:
    with store.engine.connect() as conn:
        return conn.exec_driver_sql("PRAGMA synchronous").scalar()


@pytest.mark.parametrize(
    ("query", "expected"),
    [("", FULL), ("?synchronous=full", FULL), ("?synchronous=normal", NORMAL)],
)
def test_sqlite_commits_wait_for_the_disk_unless_the_uri_says_normal(tmp_path, query, expected):
    store = SqlStore(f"sqlite:///{tmp_path / 'tactus.db'}{query}")
    try:
        store.init_schema()
        assert _synchronous(store) == expected
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert "synchronous" not in store.describe()  # never handed to the driver
    finally:
        store.close()


@pytest.mark.parametrize(
    "uri",
    [
        "sqlite:///{tmp}/tactus.db?synchronous=off",
        "sqlite:///{tmp}/tactus.db?synchronous=1",
        "postgresql://tactus@127.0.0.1/tactus?synchronous=normal",
    ],
)
def test_sqlite_synchronous_refuses_other_values_and_other_stores(tmp_path, uri):
    with pytest.raises(InvalidInput) as err:
        SqlStore(uri.format(tmp=tmp_path))
    assert err.value.field == "store_uri"
