"""The transaction runner every SQL store operation goes through, and shared statements.

One operation is one transaction: :meth:`SqlCore._write` (``BEGIN IMMEDIATE`` on SQLite) or
:meth:`SqlCore._read`. Both retry the whole transaction after a deadlock or serialization failure
(it was rolled back, so running it again is safe) and translate driver errors at the boundary:
a unique key becomes :class:`~db.errors.DuplicateKey`, bad values :class:`~db.errors.InvalidInput`
and anything else :class:`~db.errors.StoreUnavailable` naming the store with its password hidden.

Statements are built once per shape (``functools.cache`` on the table and column names) and bound
with parameters, so the hot paths (get, compare-and-set) cost neither construction nor
compilation after the first call.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from db.backends.sql import rows
from db.backends.sql.engine import is_transient, is_unique_violation, reason
from db.backends.sql.schema import events
from db.errors import (
    DuplicateKey,
    InvalidInput,
    NotFound,
    StateConflict,
    StoreUnavailable,
    TactusError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from db.models import Event

log = logging.getLogger(f"tactus.{__name__}")

T = TypeVar("T")

#: Times a transaction runs before a deadlock or busy lock is reported as StoreUnavailable.
MAX_ATTEMPTS = 5
#: First pause before running a transaction again; doubled each time, with jitter.
RETRY_PAUSE = 0.01

_INSERT_EVENT = sa.insert(events)


class SqlCore:
    """Transactions, error translation and compare-and-set shared by the store's parts."""

    backend: str
    engine: sa.Engine
    #: Engine view whose transactions write (SQLite begins them IMMEDIATE); same pool.
    _writer: sa.Engine
    #: Whether UPDATE ... RETURNING saves the read after a compare-and-set (not MySQL).
    _returning: bool

    def describe(self) -> str:
        """The store's URL with the password hidden."""
        return self.engine.url.render_as_string(hide_password=True)

    # -- transactions -----------------------------------------------------------------------------

    def _read(
        self, work: Callable[[sa.Connection], T], *, entity: str | None = None, key: object = None
    ) -> T:
        """Run ``work`` in a read transaction (no write lock on SQLite)."""
        return self._run(self.engine, work, entity, key)

    def _write(
        self, work: Callable[[sa.Connection], T], *, entity: str | None = None, key: object = None
    ) -> T:
        """Run ``work`` in one write transaction; committed when it returns, rolled back when it
        raises. ``entity``/``key`` name what a unique-key violation is reported as."""
        return self._run(self._writer, work, entity, key)

    def _run(
        self,
        engine: sa.Engine,
        work: Callable[[sa.Connection], T],
        entity: str | None,
        key: object,
    ) -> T:
        attempt = 1
        while True:
            committing = False
            try:
                with engine.begin() as conn:
                    result = work(conn)
                    committing = True
                return result
            except sa.exc.StatementError as exc:
                if isinstance(exc.orig, TactusError):
                    # Raised by our own bind processing (a naive datetime): not a driver error.
                    raise exc.orig from None
                if (
                    isinstance(exc, sa.exc.DBAPIError)
                    and exc.connection_invalidated
                    and not committing
                    and attempt < MAX_ATTEMPTS
                ):
                    # The connection was dead (a server restart, an idle timeout) before the
                    # commit was sent, so nothing was written: run it again on a fresh one. Pools
                    # do not ping each connection before use; this is the cheaper safety net.
                    # A connection lost during the commit is not retried: the commit may have
                    # happened.
                    log.warning(
                        "%s store: connection lost (%s); running the transaction again on a new "
                        "connection",
                        self.backend,
                        reason(exc),
                    )
                    attempt += 1
                    continue
                if (
                    isinstance(exc, sa.exc.DBAPIError)
                    and is_transient(exc)
                    and attempt < MAX_ATTEMPTS
                ):
                    log.warning(
                        "%s store: %s; running the transaction again (attempt %d of %d)",
                        self.backend,
                        reason(exc),
                        attempt + 1,
                        MAX_ATTEMPTS,
                    )
                    time.sleep(random.uniform(0.5, 1.0) * RETRY_PAUSE * 2**attempt)
                    attempt += 1
                    continue
                raise self._translate(exc, entity, key) from exc
            except sa.exc.SQLAlchemyError as exc:
                raise self._translate(exc, entity, key) from exc

    def _translate(self, exc: Exception, entity: str | None, key: object) -> TactusError:
        if isinstance(exc, sa.exc.DBAPIError):
            if entity is not None and is_unique_violation(exc):
                return DuplicateKey(entity, key)
            if isinstance(exc, sa.exc.IntegrityError | sa.exc.DataError):
                return InvalidInput(entity or "record", reason(exc))
        return StoreUnavailable(f"{self.backend} store {self.describe()} failed: {reason(exc)}")

    # -- shared statements ------------------------------------------------------------------------

    def _get_row(
        self, conn: sa.Connection, table: sa.Table, keys: Mapping[str, Any]
    ) -> sa.RowMapping | None:
        """The row with these key values, or None."""
        stmt = _select_by(table, tuple(keys))
        row = conn.execute(stmt, {f"k_{name}": value for name, value in keys.items()}).first()
        return None if row is None else row._mapping

    def _cas(
        self,
        conn: sa.Connection,
        table: sa.Table,
        keys: Mapping[str, Any],
        *,
        entity: str,
        key: object,
        expected_state: str,
        expected_version: int | None,
        values: Mapping[str, Any],
    ) -> sa.RowMapping:
        """Compare-and-set: update the row if its state (and version) are the expected ones,
        incrementing its version; return the updated row.

        Raises:
            NotFound: no row has these keys.
            StateConflict: the stored state or version differs; nothing was written.
        """
        names = tuple(sorted(values))
        stmt = _compare_and_set(
            table, tuple(keys), names, expected_version is not None, self._returning
        )
        params = {f"k_{name}": value for name, value in keys.items()}
        params["x_state"] = str(expected_state)
        if expected_version is not None:
            params["x_version"] = expected_version
        params.update({f"v_{name}": values[name] for name in names})
        if self._returning:
            row = conn.execute(stmt, params).first()
            updated = None if row is None else row._mapping
        else:
            # MySQL counts matched rows (SQLAlchemy sets CLIENT_FOUND_ROWS), and the version
            # always changes anyway.
            matched = conn.execute(stmt, params).rowcount
            updated = self._get_row(conn, table, keys) if matched else None
        if updated is not None:
            return updated
        current = self._get_row(conn, table, keys)
        if current is None:
            raise NotFound(entity, key)
        actual, expected = current["state"], str(expected_state)
        if current["state"] == expected and expected_version is not None:
            actual = f"{actual} (version {current['version']})"
            expected = f"{expected} (version {expected_version})"
        raise StateConflict(entity, key, expected, actual)

    def _add_event(self, conn: sa.Connection, event: Event | None) -> None:
        """Append ``event`` in the caller's transaction (so it commits with the change)."""
        if event is not None:
            conn.execute(_INSERT_EVENT, rows.event_row(event))

    def _add_events(self, conn: sa.Connection, events: Iterable[Event | None]) -> None:
        """Append several events in the caller's transaction, in one statement."""
        batch = [rows.event_row(event) for event in events if event is not None]
        if batch:
            conn.execute(_INSERT_EVENT, batch)

    def _insert_ignore(self, table: sa.Table) -> sa.Insert:
        """INSERT that silently skips rows whose unique key exists; rowcount counts the others."""
        return _insert_ignore(self.backend, table)

    def _upsert(self, table: sa.Table, update: Iterable[str]) -> sa.Insert:
        """INSERT that replaces the ``update`` columns of a row whose primary key exists."""
        return _upsert(self.backend, table, tuple(update))


# -- statement builders, one per shape ---------------------------------------------------------------


@functools.cache
def _select_by(table: sa.Table, names: tuple[str, ...]) -> sa.Select:
    return sa.select(table).where(*(table.c[n] == _bind(table, f"k_{n}", n) for n in names))


@functools.cache
def _compare_and_set(
    table: sa.Table,
    keys: tuple[str, ...],
    names: tuple[str, ...],
    with_version: bool,
    returning: bool,
) -> sa.Update:
    stmt = sa.update(table).where(
        *(table.c[n] == _bind(table, f"k_{n}", n) for n in keys),
        table.c.state == _bind(table, "x_state", "state"),
    )
    if with_version:
        stmt = stmt.where(table.c.version == _bind(table, "x_version", "version"))
    values: dict[Any, Any] = {table.c[n]: _bind(table, f"v_{n}", n) for n in names}
    values[table.c.version] = table.c.version + 1
    stmt = stmt.values(values)
    return stmt.returning(*table.c) if returning else stmt


@functools.cache
def _insert_ignore(backend: str, table: sa.Table) -> sa.Insert:
    if backend == "postgresql":
        stmt = postgresql.insert(table).on_conflict_do_nothing()
    elif backend == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing()
    else:
        # Unlike ON DUPLICATE KEY UPDATE, whose rowcount counts an untouched duplicate as 1
        # under CLIENT_FOUND_ROWS, INSERT IGNORE counts exactly the inserted rows.
        stmt = sa.insert(table).prefix_with("IGNORE")
    # SQLAlchemy keeps the driver's rowcount only for UPDATE and DELETE unless asked.
    return stmt.execution_options(preserve_rowcount=True)


@functools.cache
def _upsert(backend: str, table: sa.Table, update: tuple[str, ...]) -> sa.Insert:
    keys = [c.name for c in table.primary_key.columns]
    if backend in ("postgresql", "sqlite"):
        module = postgresql if backend == "postgresql" else sqlite
        stmt = module.insert(table)
        return stmt.on_conflict_do_update(
            index_elements=keys, set_={n: stmt.excluded[n] for n in update}
        )
    stmt = mysql.insert(table)
    return stmt.on_duplicate_key_update({n: stmt.inserted[n] for n in update})


def _bind(table: sa.Table, name: str, column: str) -> sa.BindParameter[Any]:
    return sa.bindparam(name, type_=table.c[column].type)
