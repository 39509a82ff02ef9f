"""Behaviour only the SQL store has: URI schemes, SQLite locking, column types, error masking.

The store contract itself lives in ``tests/contract/test_store_*.py``; nothing here repeats it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from db.backends.sql import SqlStore
from db.errors import InvalidInput, StoreUnavailable
from db.ids import new_id
from db.models import Job
from db.states import Qualifier
from tests.conftest import fresh_store_uri

T0 = datetime(2026, 1, 5, 13, 0, tzinfo=UTC)


def _job(**fields) -> Job:
    values = {
        "id": new_id(),
        "process": "site_hourly",
        "qualifier": Qualifier.HOURLY,
        "timeperiod": "2026010513",
        "created_at": T0,
        "updated_at": T0,
    }
    return Job(**{**values, **fields})


@pytest.fixture
def sqlite_store(tmp_path):
    store = SqlStore(f"sqlite:///{tmp_path / 'tactus.db'}")
    store.init_schema()
    yield store
    store.close()


@pytest.mark.parametrize(
    ("uri", "drivername"),
    [
        ("postgresql://u:pw@db.example/tactus", "postgresql+psycopg"),
        ("postgres://u:pw@db.example/tactus", "postgresql+psycopg"),
        ("mysql://u:pw@db.example/tactus", "mysql+pymysql"),
        ("mariadb://u:pw@db.example/tactus", "mysql+pymysql"),
        ("postgresql+psycopg://u:pw@db.example/tactus", "postgresql+psycopg"),
        ("sqlite:///tactus.db", "sqlite+pysqlite"),
    ],
)
def test_sql_store_maps_public_schemes_to_drivers(uri, drivername):
    store = SqlStore(uri)
    try:
        assert store.engine.url.drivername == drivername
        if ":pw@" in uri:
            assert ":***@" in store.describe()
    finally:
        store.close()


def test_sql_store_refuses_foreign_scheme_and_missing_uri():
    with pytest.raises(InvalidInput) as err:
        SqlStore("redis://localhost/0")
    assert err.value.field == "store_uri"
    with pytest.raises(InvalidInput):
        SqlStore()


def test_sql_store_unreachable_server_is_unavailable_with_password_masked():
    # given a port nothing listens on
    store = SqlStore("postgresql://tactus:s3cret@127.0.0.1:1/tactus")
    # when / then
    with pytest.raises(StoreUnavailable) as err:
        store.ping()
    assert "s3cret" not in str(err.value) and "***" in str(err.value)
    assert isinstance(err.value.__cause__, sa.exc.OperationalError)
    store.close()


def test_sql_store_close_keeps_an_engine_it_was_given(tmp_path):
    # given
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'given.db'}")
    pool = engine.pool
    store = SqlStore(engine=engine)
    store.init_schema()
    # when
    store.close()
    # then the engine was not disposed (dispose replaces the pool)
    assert engine.pool is pool
    engine.dispose()


def test_sqlite_uses_wal_and_begins_writes_immediate(sqlite_store):
    # given
    begins: list[str] = []

    def capture(conn, cursor, statement, *args):
        if statement.startswith("BEGIN"):
            begins.append(statement)

    sa.event.listen(sqlite_store.engine, "before_cursor_execute", capture)
    # when
    sqlite_store.create_job(_job())
    sqlite_store.get_job("site_hourly", "2026010513")
    # then a write takes the lock up front, a read does not
    assert begins == ["BEGIN IMMEDIATE", "BEGIN"]
    with sqlite_store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0


def test_sql_store_refuses_naive_datetimes(sqlite_store):
    with pytest.raises(InvalidInput) as err:
        sqlite_store.create_job(_job(created_at=datetime(2026, 1, 5, 13)))
    assert err.value.field == "created_at"


def test_sql_store_reset_schema_empties_the_store(sqlite_store):
    sqlite_store.create_job(_job())
    sqlite_store.init_schema()  # idempotent: keeps the rows
    assert sqlite_store.count_jobs() != {}
    sqlite_store.reset_schema()
    assert sqlite_store.count_jobs() == {}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_sql_store_instants_are_real_datetime_columns(backend, tmp_path):
    with fresh_store_uri(backend, tmp_path, None) as uri:
        store = SqlStore(uri)
        try:
            store.init_schema()
            columns = {c["name"]: c["type"] for c in sa.inspect(store.engine).get_columns("jobs")}
            assert isinstance(columns["created_at"], sa.DateTime)
            if backend == "postgresql":
                assert columns["created_at"].timezone is True
            if backend == "mariadb":
                assert columns["created_at"].fsp == 6
        finally:
            store.close()
