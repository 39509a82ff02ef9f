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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from db.backends.sql import rows
from db.backends.sql.engine import is_transient, is_unique_violation, reason
from db.backends.sql.schema import events, processes
from db.errors import (
    DuplicateKey,
    InvalidInput,
    NotFound,
    StateConflict,
    StoreUnavailable,
    TactusError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from db.models import Event

log = logging.getLogger(f"tactus.{__name__}")

T = TypeVar("T")

#: Times a transaction runs before a deadlock or busy lock is reported as StoreUnavailable.
MAX_ATTEMPTS = 5
#: First pause before running a transaction again; doubled each time, with jitter.
RETRY_PAUSE = 0.01

#: Keys bound in one ``IN`` list (well under every backend's limit on bound values).
KEYS_PER_STATEMENT = 500

_INSERT_EVENT = sa.insert(events)


@dataclass(frozen=True, slots=True)
class CasStep:
    """One compare-and-set of :meth:`SqlCore._cas_many`: the arguments of
    :meth:`SqlCore._cas` but the connection, the table and the entity."""

    #: The row's key values, in the order of the key names.
    keys: tuple[Any, ...]
    #: How the row is named in a NotFound or StateConflict.
    label: str
    expected_state: str
    expected_version: int | None
    values: Mapping[str, Any]


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
        raise _conflict(entity, key, current, expected_state, expected_version) or StateConflict(
            entity, key, str(expected_state), str(current["state"])
        )

    def _cas_many(
        self,
        conn: sa.Connection,
        table: sa.Table,
        key_names: tuple[str, ...],
        steps: Sequence[CasStep],
        *,
        entity: str,
    ) -> list[Mapping[str, Any] | NotFound | StateConflict]:
        """Several compare-and-sets (:meth:`_cas`) in the caller's transaction, in a few
        statements whatever their number: the rows are read and locked (``FOR UPDATE``; SQLite's
        write transaction holds the only writer), each step is checked against its row, and the
        steps that match are written by an executemany of the compare-and-set itself (one per
        set of changed columns; each still matches on the state, and the version when
        expected). Steps naming one row twice run one at a time, in order (a later one sees
        what an earlier one wrote). ``values`` must be as :meth:`_cas` binds them (instants
        normalised): the rows returned are the rows read with them applied.

        Returns:
            In the order of ``steps``: the updated row, or the NotFound or StateConflict that
            refused the step (it wrote nothing).
        """
        results: list[Mapping[str, Any] | NotFound | StateConflict] = []
        if len({step.keys for step in steps}) < len(steps):
            for step in steps:
                try:
                    results.append(
                        self._cas(
                            conn,
                            table,
                            dict(zip(key_names, step.keys, strict=True)),
                            entity=entity,
                            key=step.label,
                            expected_state=step.expected_state,
                            expected_version=step.expected_version,
                            values=step.values,
                        )
                    )
                except (NotFound, StateConflict) as exc:
                    results.append(exc)
            return results
        current = self._rows_by_keys(conn, table, key_names, [s.keys for s in steps], lock=True)
        groups: dict[tuple[tuple[str, ...], bool], list[CasStep]] = {}
        for step in steps:
            row = current.get(step.keys)
            if row is None:
                results.append(NotFound(entity, step.label))
                continue
            conflict = _conflict(
                entity, step.label, row, step.expected_state, step.expected_version
            )
            if conflict is not None:
                results.append(conflict)
                continue
            results.append(row)  # replaced by the row as written, below
            names = tuple(sorted(step.values))
            groups.setdefault((names, step.expected_version is not None), []).append(step)
        for (names, with_version), members in groups.items():
            stmt = _compare_and_set(table, key_names, names, with_version, False)
            params = []
            for step in members:
                bound = {f"k_{n}": v for n, v in zip(key_names, step.keys, strict=True)}
                bound["x_state"] = str(step.expected_state)
                if with_version:
                    bound["x_version"] = step.expected_version
                bound.update({f"v_{n}": step.values[n] for n in names})
                params.append(bound)
            matched = conn.execute(stmt, params).rowcount
            if conn.dialect.supports_sane_multi_rowcount and matched != len(members):
                # the rows are locked since they were read: only a bug can get here
                raise RuntimeError(
                    f"{entity}: {len(members)} locked rows checked, {matched} compare-and-set"
                )
        # each row as written: locked since read, so exactly its values and the next version
        return [
            answer
            if isinstance(answer, NotFound | StateConflict)
            else {**answer, **step.values, "version": answer["version"] + 1}
            for step, answer in zip(steps, results, strict=True)
        ]

    def _latest_rows(
        self, table: sa.Table, column: str, names: Sequence[str]
    ) -> tuple[list[sa.RowMapping], list[str]]:
        """The row of each process in ``names`` with the largest ``column`` (its latest fire,
        its newest job), in two statements per chunk of names: each registered process's
        largest value (a scalar subquery per process row: an index lookup each, whatever the
        history; a grouped ``max`` would read every row), then those rows by their key.

        Returns:
            (the rows found, the names not registered: the caller reads those on its own).
        """
        p = processes.c
        latest = sa.select(sa.func.max(table.c[column])).where(table.c.process == p.name)
        found: list[sa.RowMapping] = []
        unregistered: list[str] = []
        ordered = list(dict.fromkeys(names))
        for start in range(0, len(ordered), KEYS_PER_STATEMENT):
            chunk = ordered[start : start + KEYS_PER_STATEMENT]
            heads = sa.select(p.name, latest.scalar_subquery()).where(p.name.in_(chunk))

            def read(conn: sa.Connection, heads=heads) -> tuple[list[sa.RowMapping], list[str]]:
                registered = conn.execute(heads).all()
                keys = {(name, value) for name, value in registered if value is not None}
                by_key = key_filter((table.c.process, table.c[column]), keys)
                stmt = sa.select(table).where(by_key)
                latest = [
                    row._mapping
                    for row in (conn.execute(stmt) if keys else ())
                    if (row._mapping["process"], row._mapping[column]) in keys
                ]
                return latest, [n for n, _ in registered]

            latest_rows, registered = self._read(read)
            found += latest_rows
            unregistered += sorted(set(chunk) - set(registered))
        return found, unregistered

    def _rows_by_keys(
        self,
        conn: sa.Connection,
        table: sa.Table,
        key_names: tuple[str, ...],
        keys: Sequence[tuple[Any, ...]],
        *,
        lock: bool,
    ) -> dict[tuple[Any, ...], sa.RowMapping]:
        """The rows with these key values, by key, in statements of KEYS_PER_STATEMENT keys;
        with ``lock``, locked for the rest of the transaction in key order."""
        columns = [table.c[n] for n in key_names]
        found: dict[tuple[Any, ...], sa.RowMapping] = {}
        ordered = sorted(set(keys))
        for start in range(0, len(ordered), KEYS_PER_STATEMENT):
            chunk = ordered[start : start + KEYS_PER_STATEMENT]
            wanted = set(chunk)
            stmt = sa.select(table).where(key_filter(columns, wanted))
            stmt = stmt.order_by(*columns)
            if lock:
                stmt = stmt.with_for_update()
            for row in conn.execute(stmt):
                mapping = row._mapping
                key = tuple(mapping[n] for n in key_names)
                if key in wanted:
                    found[key] = mapping
        return found

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


def key_filter(
    columns: Sequence[sa.ColumnElement[Any]], keys: Iterable[tuple[Any, ...]]
) -> sa.ColumnElement[bool]:
    """A WHERE clause that selects the rows with these key values (of ``columns``), and
    maybe more: the caller keeps the rows whose key is one of ``keys``.

    One ``IN`` list per column, which an index on the columns serves (a few extra rows at
    most, when keys share values): a row-value ``IN`` list is scanned whole by SQLite (0.9 s
    over 1.8M jobs), and PostgreSQL read it 2-3 times slower on a 5-year history too.
    """
    keys = list(keys)
    return sa.and_(
        *(column.in_(sorted({key[i] for key in keys})) for i, column in enumerate(columns))
    )


def _conflict(
    entity: str,
    key: object,
    current: Mapping[str, Any],
    expected_state: str,
    expected_version: int | None,
) -> StateConflict | None:
    """The StateConflict of a compare-and-set on ``current`` (None: it matches)."""
    actual, expected = current["state"], str(expected_state)
    if actual == expected and (expected_version is None or current["version"] == expected_version):
        return None
    if actual == expected:
        actual = f"{actual} (version {current['version']})"
        expected = f"{expected} (version {expected_version})"
    return StateConflict(entity, key, expected, actual)


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
