"""Engines for the SQL store: public URI schemes to drivers, SQLite locking, driver errors.

Everything that depends on the driver rather than on the SQL lives here: which ``+driver`` a
public scheme means, how SQLite is made safe for several writers (threads and OS processes on one
file), how long a SQLite commit waits for the disk (the ``synchronous`` option of a ``sqlite://``
URI), and which driver errors are a lost race on a unique key, a transient deadlock worth
retrying, or an unreachable server.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url

from db.errors import InvalidInput, StoreUnavailable

#: Public scheme -> SQLAlchemy drivername used when the URI names no ``+driver``.
DEFAULT_DRIVERS = {
    "sqlite": "sqlite+pysqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
}
#: Seconds a SQLite connection waits for another writer's lock before giving up.
SQLITE_BUSY_TIMEOUT = 30.0
#: ``synchronous`` values a ``sqlite://`` store URI may ask for (``?synchronous=normal``).
#: ``full`` (the default): every commit waits until the write-ahead log is on disk, so a
#: committed change survives a power loss. ``normal``: commits do not wait for the disk (the log
#: is synced at checkpoints); a committed change survives a crash of any process, but the last
#: ones may be lost when the machine itself crashes or loses power.
SQLITE_SYNCHRONOUS = ("full", "normal")
#: The URI query key of the SQLite ``synchronous`` option (Tactus reads it; the driver never
#: sees it).
SYNCHRONOUS_OPTION = "synchronous"
#: Seconds to wait for a PostgreSQL or MySQL server to accept a connection.
CONNECT_TIMEOUT = 10
#: Execution option marking a transaction that writes (SQLite then begins it IMMEDIATE).
WRITE_OPTION = "tactus_write"

#: Unique violations: PostgreSQL SQLSTATE, MySQL error numbers, SQLite extended codes.
_PG_UNIQUE = "23505"
_MYSQL_UNIQUE = frozenset({1062, 1586})
_SQLITE_UNIQUE = frozenset({sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY})
#: Transient failures after which the whole transaction may simply run again.
_PG_RETRY = frozenset({"40001", "40P01"})  # serialization failure, deadlock detected
# Deadlock only: a lock wait timeout (1205) already waited innodb_lock_wait_timeout seconds.
_MYSQL_RETRY = frozenset({1213})
# Plain SQLITE_BUSY means the busy timeout already ran out: waiting again would only double it.
# These codes are returned without waiting (recovery of another connection's WAL, a stale read
# snapshot, a table lock) and pass quickly.
_SQLITE_RETRY = frozenset(
    {sqlite3.SQLITE_BUSY_RECOVERY, sqlite3.SQLITE_BUSY_SNAPSHOT, sqlite3.SQLITE_LOCKED}
)


def public_url(uri: str) -> URL:
    """Parse a store URI and pick the driver for a public scheme (``postgresql://`` ...).

    Raises:
        InvalidInput: the URI cannot be parsed or its scheme is not a SQL one (``store_uri``).
    """
    try:
        url = make_url(uri)
    except sa.exc.ArgumentError as exc:
        raise InvalidInput("store_uri", "is not a database URI") from exc
    scheme, _, driver = url.drivername.partition("+")
    scheme = scheme.lower()
    if scheme not in DEFAULT_DRIVERS:
        raise InvalidInput("store_uri", f"{scheme!r} is not a SQL scheme")
    if driver:
        base = "postgresql" if scheme == "postgres" else scheme
        url = url.set(drivername=f"{base}+{driver}")
    else:
        url = url.set(drivername=DEFAULT_DRIVERS[scheme])
    if url.get_backend_name() in ("mysql", "mariadb") and "charset" not in url.query:
        url = url.update_query_dict({"charset": "utf8mb4"})
    if SYNCHRONOUS_OPTION in url.query:
        if url.get_backend_name() != "sqlite":
            raise InvalidInput("store_uri", f"{SYNCHRONOUS_OPTION} applies to SQLite only")
        sqlite_synchronous(url)  # refuse a bad value now, not at the first connection
    return url


def sqlite_synchronous(url: URL) -> str:
    """The ``synchronous`` mode a SQLite store URI asks for: ``full`` unless it says otherwise.

    Raises:
        InvalidInput: a value other than those of :data:`SQLITE_SYNCHRONOUS` (``store_uri``).
    """
    value = url.query.get(SYNCHRONOUS_OPTION, "full")
    if not isinstance(value, str) or value.lower() not in SQLITE_SYNCHRONOUS:
        allowed = " or ".join(SQLITE_SYNCHRONOUS)
        raise InvalidInput("store_uri", f"{SYNCHRONOUS_OPTION} must be {allowed}, got {value!r}")
    return value.lower()


def create_engine(url: URL) -> sa.Engine:
    """An engine with the pool, timeouts and isolation the store relies on.

    Raises:
        StoreUnavailable: the driver is not installed.
    """
    kwargs: dict[str, Any] = {}
    backend = url.get_backend_name()
    synchronous = None
    if backend == "sqlite":
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT}
        synchronous = sqlite_synchronous(url)
        url = url.difference_update_query([SYNCHRONOUS_OPTION])
    else:
        # A daemon outlives server restarts and idle timeouts. Testing every connection on
        # checkout (pool_pre_ping) would cost a round trip per transaction; instead the store
        # runs a transaction again when its connection turns out dead before the commit
        # (SqlCore._run), and connections are replaced after half an hour.
        kwargs.update(pool_recycle=1800)
        timeout_key = "connect_timeout"
        if timeout_key not in url.query:
            kwargs["connect_args"] = {timeout_key: CONNECT_TIMEOUT}
        if backend in ("mysql", "mariadb"):
            # As on PostgreSQL: the look-up after a lost compare-and-set sees the winner's
            # commit, not a snapshot, and InnoDB takes fewer gap locks (fewer deadlocks).
            kwargs["isolation_level"] = "READ COMMITTED"
    try:
        engine = sa.create_engine(url, **kwargs)
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        masked = url.render_as_string(hide_password=True)
        raise StoreUnavailable(f"no driver for {masked}: {exc}", transient=False) from exc
    if synchronous is not None:
        event.listen(engine, "connect", _SqliteSynchronous(synchronous))
    return engine


def prepare_sqlite(engine: sa.Engine) -> None:
    """Make a SQLite engine safe for concurrent writers; idempotent, so a shared engine is fine.

    Every connection gets WAL (readers never block the writer) and a busy timeout, and pysqlite's
    own transaction handling is switched off so that we emit BEGIN ourselves: ``BEGIN IMMEDIATE``
    for a write transaction takes the write lock up front. A deferred BEGIN would take it only at
    the first write, and two such readers-turned-writers fail with "database is locked" instead of
    waiting (SQLite cannot upgrade both). Read transactions stay deferred and take no write lock.
    """
    if not event.contains(engine, "connect", _sqlite_connect):
        event.listen(engine, "connect", _sqlite_connect)
    if not event.contains(engine, "begin", _sqlite_begin):
        event.listen(engine, "begin", _sqlite_begin)


def _sqlite_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
    finally:
        cursor.close()


class _SqliteSynchronous:
    """Connect listener: ``PRAGMA synchronous`` of the store URI on every new connection."""

    def __init__(self, mode: str) -> None:
        self.statement = f"PRAGMA synchronous = {mode.upper()}"

    def __call__(self, dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.execute(self.statement)


def _sqlite_begin(connection: sa.Connection) -> None:
    write = connection.get_execution_options().get(WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


# -- driver errors ----------------------------------------------------------------------------------


def _codes(exc: sa.exc.DBAPIError) -> tuple[str | None, int | None]:
    """(SQLSTATE, numeric code) of the driver exception, whichever the driver provides."""
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    number = getattr(orig, "sqlite_errorcode", None)
    if number is None and orig is not None and orig.args and isinstance(orig.args[0], int):
        number = orig.args[0]
    return sqlstate, number


def is_unique_violation(exc: sa.exc.DBAPIError) -> bool:
    """The statement broke a unique key or primary key."""
    if not isinstance(exc, sa.exc.IntegrityError):
        return False
    sqlstate, number = _codes(exc)
    return sqlstate == _PG_UNIQUE or number in _MYSQL_UNIQUE or number in _SQLITE_UNIQUE


def is_transient(exc: sa.exc.DBAPIError) -> bool:
    """A deadlock, serialization failure or busy lock: the transaction may run again."""
    if exc.connection_invalidated:
        return False
    sqlstate, number = _codes(exc)
    if sqlstate in _PG_RETRY:
        return True
    if isinstance(exc.orig, sqlite3.Error):
        return number in _SQLITE_RETRY or number == sqlite3.SQLITE_LOCKED_SHAREDCACHE
    return number in _MYSQL_RETRY


def reason(exc: BaseException) -> str:
    """The driver's one-line reason, without SQL text or parameters."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__
