"""Jobs and units of work by (process, state), kept by the database instead of counted.

``count_jobs`` and ``count_uows`` used to GROUP BY the whole ``jobs`` and ``uows`` tables (a
million rows: hundreds of milliseconds on every ``/metrics`` scrape). Now triggers on both tables
append a -1 row for the old (process, state) and a +1 row for the new one to
``state_count_deltas`` in the writer's own transaction, whatever writes the row (the state-change
funnel, creation in batches, ``start_job``, flows, a hand-made ``UPDATE``). The ledger is
insert-only, so concurrent writers never queue on one counter row (a hot row would serialise
every transition of a process on PostgreSQL and MariaDB). A count is ``state_counts`` plus the
ledger's rows, read in one statement (one snapshot); when the ledger has grown past
:data:`FOLD_AT` rows, the reader first folds it into ``state_counts`` (``DELETE ... RETURNING``,
or on MySQL, which has no RETURNING, a locking read and a delete of those rows: exactly the
rows folded are removed, however many writers commit meanwhile).

Units of work that are steps of a flow run (``parent`` set) are not counted, as before: a flow
run counts once. ``state_counts`` is built from the tables when it is created (a new store, or an
existing one upgraded by ``init_schema``).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from db.backends.sql.core import SqlCore
from db.backends.sql.schema import jobs, metadata, state_count_deltas, state_counts, uows

if TYPE_CHECKING:
    from collections.abc import Iterable

log = logging.getLogger(f"tactus.{__name__}")

#: Ledger rows (by id span) past which a count first folds the ledger into ``state_counts``.
FOLD_AT = 2000
#: Ledger rows folded per transaction (a bulk load leaves a million: folded in steps).
FOLD_BATCH = 50_000
#: ``Connection.info`` key: ``state_counts`` was just created, so build it and the triggers.
_BUILD_FLAG = "tactus_build_state_counts"

_d = state_count_deltas.c
_c = state_counts.c
_SPAN = sa.select(sa.func.min(_d.id), sa.func.max(_d.id))
_RETURNED = (_d.entity, _d.process, _d.state, _d.delta)
_PRUNE = sa.delete(state_counts).where(_c.n == 0)


class CountsMixin(SqlCore):
    """Counts by (process, state) of jobs and units of work, read from the kept counts."""

    _fold_lock: threading.Lock

    def _state_counts(
        self, entity: str, process: str | Iterable[str] | None, states: Iterable[str] | None
    ) -> list[tuple[str, str, int]]:
        """(process, state, count) of ``entity`` (``job`` or ``uow``) with a non-zero count, of
        one process, several or all, of the given states or all."""
        names = None
        if isinstance(process, str):
            names = [process]
        elif process is not None:
            names = sorted(set(process))
            if not names:
                return []
        wanted = None if states is None else sorted(set(states))
        if wanted is not None and not wanted:
            return []
        low, high = self._read(lambda conn: conn.execute(_SPAN).one())
        if low is not None and high - low + 1 >= FOLD_AT:
            self.fold_state_counts()
        stmt = _count_statement(entity, names, wanted)
        found = self._read(lambda conn: conn.execute(stmt).all())
        return [(name, state, int(n)) for name, state, n in found]

    def fold_state_counts(self) -> int:
        """Move the ledger's deltas into ``state_counts``, :data:`FOLD_BATCH` rows a
        transaction; skipped when another thread of this store is folding (another store's
        fold may run at once: each row is deleted, so folded, by one). Returns the number of
        ledger rows folded."""
        if not self._fold_lock.acquire(blocking=False):
            return 0
        try:
            total = 0
            while True:
                folded = self._write(self._fold)
                total += folded
                if folded < FOLD_BATCH:
                    return total
        finally:
            self._fold_lock.release()

    def _fold(self, conn: sa.Connection) -> int:
        if conn.dialect.delete_returning:
            folded = conn.execute(_fold_statement(conn.dialect.name, FOLD_BATCH)).all()
        else:
            folded = _take_locked(conn, FOLD_BATCH)
        sums: Counter[tuple[str, str, str]] = Counter()
        for entity, process, state, delta in folded:
            sums[(entity, process, state)] += delta
        params = [
            {"entity": entity, "process": process, "state": state, "n": n}
            for (entity, process, state), n in sorted(sums.items())
            if n
        ]
        # Sorted, so two folds of two stores (or a fold and a rebuild) lock the rows in one
        # order and cannot deadlock.
        if params:
            conn.execute(_upsert(conn.dialect.name), params)
            conn.execute(_PRUNE)
        log.debug("%s store: folded %d count deltas", self.backend, len(folded))
        return len(folded)


def _fold_statement(dialect: str, batch: int) -> sa.Delete:
    """Delete any ``batch`` ledger rows, returning them. MySQL/MariaDB take DELETE ... LIMIT and
    no LIMIT in an IN subquery; the others the reverse."""
    if dialect in ("mysql", "mariadb"):
        stmt = sa.delete(state_count_deltas).with_dialect_options(mysql_limit=batch)
    else:
        some = sa.select(_d.id).limit(batch).scalar_subquery()
        stmt = sa.delete(state_count_deltas).where(_d.id.in_(some))
    return stmt.returning(*_RETURNED)


def _take_locked(conn: sa.Connection, batch: int) -> list[Any]:
    """:func:`_fold_statement` where DELETE has no RETURNING (MySQL): a locking read of
    ``batch`` rows, then their deletion by id. Another fold waits for these rows' locks and then
    finds them gone, so each row is still folded once."""
    taken = conn.execute(
        sa.select(_d.id, *_RETURNED).order_by(_d.id).limit(batch).with_for_update()
    ).all()
    if taken:
        ids = [row[0] for row in taken]
        conn.execute(sa.delete(state_count_deltas).where(_d.id.in_(ids)))
    return [row[1:] for row in taken]


def _count_statement(entity: str, names: list[str] | None, states: list[str] | None) -> sa.Select:
    kept = sa.select(_c.process, _c.state, _c.n.label("n")).where(_c.entity == entity)
    pending = sa.select(_d.process, _d.state, _d.delta.label("n")).where(_d.entity == entity)
    if names is not None:
        kept = kept.where(_c.process.in_(names))
        pending = pending.where(_d.process.in_(names))
    if states is not None:
        kept = kept.where(_c.state.in_(states))
        pending = pending.where(_d.state.in_(states))
    both = sa.union_all(kept, pending).subquery()
    total = sa.func.sum(both.c.n)
    return (
        sa.select(both.c.process, both.c.state, total)
        .group_by(both.c.process, both.c.state)
        .having(total != 0)
    )


def _upsert(dialect: str) -> Any:
    """Add ``n`` to the (entity, process, state) row, made when missing."""
    if dialect in ("mysql", "mariadb"):
        stmt = mysql.insert(state_counts)
        return stmt.on_duplicate_key_update(n=_c.n + stmt.inserted.n)
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(state_counts)
    return stmt.on_conflict_do_update(
        index_elements=[_c.entity, _c.process, _c.state], set_={"n": _c.n + stmt.excluded.n}
    )


# -- triggers and the first build --------------------------------------------------------------

#: (entity, table, what a counted row is): a flow run's steps are not counted.
_COUNTED = (("job", "jobs", None), ("uow", "uows", "parent IS NULL"))


def _triggers(dialect: str) -> list[str]:
    """The statements that (re)create the counting triggers of ``jobs`` and ``uows``."""
    made = []
    for entity, table, counted in _COUNTED:
        name = f"tactus_count_{table}"
        old_counted = f"OLD.{counted}" if counted else "TRUE"
        new_counted = f"NEW.{counted}" if counted else "TRUE"
        minus = (
            f"INSERT INTO state_count_deltas (entity, process, state, delta) "
            f"VALUES ('{entity}', OLD.process, OLD.state, -1)"
        )
        plus = (
            f"INSERT INTO state_count_deltas (entity, process, state, delta) "
            f"VALUES ('{entity}', NEW.process, NEW.state, 1)"
        )
        # the row moves from one count to another: its state, its process or (a unit of
        # work) whether it is counted at all changed
        distinct = {"postgresql": "IS DISTINCT FROM", "sqlite": "IS NOT"}.get(dialect)
        moved = [f"OLD.{column} {distinct} NEW.{column}" for column in ("state", "process")]
        kept = [f"OLD.{column} <=> NEW.{column}" for column in ("state", "process")]
        if counted:
            moved.append(f"({old_counted}) <> ({new_counted})")
            kept.append(f"({old_counted}) = ({new_counted})")
        changed, unchanged = " OR ".join(moved), " AND ".join(kept)
        if dialect == "postgresql":
            made += [
                f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
                f"BEGIN\n"
                f"  IF TG_OP <> 'INSERT' AND {old_counted} THEN {minus}; END IF;\n"
                f"  IF TG_OP <> 'DELETE' AND {new_counted} THEN {plus}; END IF;\n"
                f"  RETURN NULL;\n"
                f"END $$",
                f"DROP TRIGGER IF EXISTS {name} ON {table}",
                f"DROP TRIGGER IF EXISTS {name}_update ON {table}",
                f"CREATE TRIGGER {name} AFTER INSERT OR DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION {name}()",
                # WHEN: a heartbeat or an edit that keeps the state does not call the function
                f"CREATE TRIGGER {name}_update AFTER UPDATE OF state, process"
                f"{', parent' if counted else ''} ON {table} "
                f"FOR EACH ROW WHEN ({changed}) EXECUTE FUNCTION {name}()",
            ]
        elif dialect in ("mysql", "mariadb"):
            made += [
                f"DROP TRIGGER IF EXISTS {name}_insert",
                f"DROP TRIGGER IF EXISTS {name}_update",
                f"DROP TRIGGER IF EXISTS {name}_delete",
                f"CREATE TRIGGER {name}_insert AFTER INSERT ON {table} FOR EACH ROW "
                f"BEGIN IF {new_counted} THEN {plus}; END IF; END",
                f"CREATE TRIGGER {name}_update AFTER UPDATE ON {table} FOR EACH ROW "
                f"BEGIN IF NOT ({unchanged}) THEN "
                f"IF {old_counted} THEN {minus}; END IF; "
                f"IF {new_counted} THEN {plus}; END IF; "
                f"END IF; END",
                f"CREATE TRIGGER {name}_delete AFTER DELETE ON {table} FOR EACH ROW "
                f"BEGIN IF {old_counted} THEN {minus}; END IF; END",
            ]
        else:  # SQLite
            made += [
                f"DROP TRIGGER IF EXISTS {name}_insert",
                f"DROP TRIGGER IF EXISTS {name}_update",
                f"DROP TRIGGER IF EXISTS {name}_delete",
                f"CREATE TRIGGER {name}_insert AFTER INSERT ON {table} "
                f"WHEN {new_counted} BEGIN {plus}; END",
                f"CREATE TRIGGER {name}_update AFTER UPDATE OF state, process"
                f"{', parent' if counted else ''} ON {table} WHEN {changed} BEGIN "
                f"INSERT INTO state_count_deltas (entity, process, state, delta) "
                f"SELECT '{entity}', OLD.process, OLD.state, -1 WHERE {old_counted}; "
                f"INSERT INTO state_count_deltas (entity, process, state, delta) "
                f"SELECT '{entity}', NEW.process, NEW.state, 1 WHERE {new_counted}; END",
                f"CREATE TRIGGER {name}_delete AFTER DELETE ON {table} "
                f"WHEN {old_counted} BEGIN {minus}; END",
            ]
    return made


def build_state_counts(conn: sa.Connection) -> None:
    """(Re)create the triggers and count the tables into ``state_counts``, emptying the ledger.

    On SQLite and PostgreSQL this runs in the schema's transaction (DDL is transactional there,
    and PostgreSQL's CREATE TRIGGER waits for the writers of the table and holds them off until
    the commit), so no write is counted twice or missed. MySQL/MariaDB commit each DDL statement
    on their own: the tables are locked (``LOCK TABLES``) while the ledger is emptied and the
    counts built, so that a writer's row is in exactly one of the two.
    """
    dialect = conn.dialect.name
    for statement in _triggers(dialect):
        conn.exec_driver_sql(statement)
    locking = dialect in ("mysql", "mariadb")
    if locking:
        conn.exec_driver_sql(
            "LOCK TABLES state_counts WRITE, state_count_deltas WRITE, jobs READ, uows READ"
        )
    try:
        conn.execute(sa.delete(state_count_deltas))
        conn.execute(sa.delete(state_counts))
        for entity, table, counted in _COUNTED:
            source = jobs if table == "jobs" else uows
            select = sa.select(
                sa.literal(entity), source.c.process, source.c.state, sa.func.count()
            ).group_by(source.c.process, source.c.state)
            if counted:
                select = select.where(source.c.parent.is_(None))
            conn.execute(
                sa.insert(state_counts).from_select(["entity", "process", "state", "n"], select)
            )
        if locking:
            conn.exec_driver_sql("COMMIT")
    finally:
        if locking:
            conn.exec_driver_sql("UNLOCK TABLES")
    log.info("%s store: job and unit-of-work counts built", dialect)


@sa.event.listens_for(state_counts, "after_create")
def _created(_target: sa.Table, connection: sa.Connection, **_: Any) -> None:
    connection.info[_BUILD_FLAG] = True


@sa.event.listens_for(metadata, "after_create")
def _build_when_created(_target: sa.MetaData, connection: sa.Connection, **_: Any) -> None:
    """After ``create_all``: a ``state_counts`` made now (a new store, or one from before the
    counts) gets its triggers and its counts; the tables' columns are up to date by then
    (``schema._upgrade_indexes`` ran first)."""
    if connection.info.pop(_BUILD_FLAG, False):
        build_state_counts(connection)
