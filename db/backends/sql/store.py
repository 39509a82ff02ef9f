"""The SQL store: lifecycle, processes, history and freerun fires; jobs, units of work, boxes,
the embedded queue, the credentials, payloads and messages come from their mixins."""

from __future__ import annotations

import dataclasses
import logging
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from db.backends.sql import rows
from db.backends.sql.boxes import BoxesMixin
from db.backends.sql.core import KEYS_PER_STATEMENT
from db.backends.sql.credentials import CredentialsMixin
from db.backends.sql.engine import WRITE_OPTION, create_engine, prepare_sqlite, public_url
from db.backends.sql.jobs import JobsMixin
from db.backends.sql.messages import MessagesMixin
from db.backends.sql.payloads import PayloadsMixin
from db.backends.sql.queue import QueueMixin
from db.backends.sql.schema import (
    UtcDateTime,
    events,
    jobs,
    metadata,
    processes,
    supervised,
    uows,
)
from db.backends.sql.schema import fires as fires_table
from db.backends.sql.schema import processes as processes_table
from db.backends.sql.uows import UowsMixin
from db.clock import truncate_ms
from db.errors import Conflict, InvalidInput, NotFound, TactusError
from db.states import FireOutcome
from db.store import QueueStore, Store

if TYPE_CHECKING:
    from collections.abc import Sequence

    from db.errors import StateConflict
    from db.models import (
        Event,
        FireRecord,
        ProcessRecord,
        QueueSettled,
        QueueSettlement,
        UnitOfWork,
        UowTransition,
    )
    from db.states import ProcessKind

log = logging.getLogger(f"tactus.{__name__}")

#: SQLAlchemy dialect name -> the ``backend`` name Tactus reports.
_BACKENDS = {"sqlite": "sqlite", "postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql"}

_INSERT_PROCESS = sa.insert(processes)
#: Before every fire: the lower bound of a process's fires when it has fewer than asked for.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: The server's current instant, by backend (SQLite has no server: the local clock serves).
_SERVER_TIME = {
    "postgresql": sa.select(sa.func.now()),
    "mysql": sa.select(sa.func.utc_timestamp(6)),
}


class SqlStore(
    JobsMixin,
    UowsMixin,
    BoxesMixin,
    QueueMixin,
    CredentialsMixin,
    PayloadsMixin,
    MessagesMixin,
    Store,
    QueueStore,
):
    """:class:`~db.store.Store` on SQLite, PostgreSQL or MariaDB/MySQL through SQLAlchemy Core.

    Args:
        uri: ``sqlite:///path``, ``postgresql://...``, ``mysql://...`` / ``mariadb://...``, or
            any of them with an explicit ``+driver``. The default drivers are pysqlite,
            psycopg 3 and PyMySQL.
        engine: a ready engine instead of ``uri``; the store then never disposes it.

    Raises:
        InvalidInput: neither or both of ``uri`` and ``engine``, or a bad URI (``store_uri``).
        StoreUnavailable: the driver is not installed.
    """

    #: A group of compare-and-sets commits as one transaction (a savepoint per group).
    atomic_groups = True

    def __init__(self, uri: str | None = None, *, engine: sa.Engine | None = None) -> None:
        if (uri is None) == (engine is None):
            raise InvalidInput("store_uri", "give either a URI or an engine")
        self._owns_engine = engine is None
        self.engine = engine if engine is not None else create_engine(public_url(uri or ""))
        dialect = self.engine.dialect
        self.backend = _BACKENDS.get(dialect.name, dialect.name)
        if self.backend == "sqlite":
            prepare_sqlite(self.engine)
        self._writer = self.engine.execution_options(**{WRITE_OPTION: True})
        #: Parsed process records by name (see :meth:`list_processes`).
        self._process_cache: dict[str, ProcessRecord] = {}
        self._process_lock = threading.Lock()
        self._fold_lock = threading.Lock()
        self._returning = bool(dialect.update_returning)
        log.debug("opened %s store %s", self.backend, self.describe())

    # -- lifecycle --------------------------------------------------------------------------------

    def init_schema(self) -> None:
        """Create the missing tables and indexes (idempotent)."""
        try:
            self._write(lambda conn: metadata.create_all(conn, checkfirst=True))
        except TactusError as exc:
            # Two first starts racing: the loser's CREATE fails on the winner's table, and a
            # second look finds everything in place.
            log.warning("%s store: creating the schema failed (%s); once more", self.backend, exc)
            self._write(lambda conn: metadata.create_all(conn, checkfirst=True))

    def reset_schema(self) -> None:
        """Drop every table of the store and create them again."""

        def work(conn: sa.Connection) -> None:
            metadata.drop_all(conn, checkfirst=True)
            metadata.create_all(conn, checkfirst=False)

        self._write(work)
        with self._process_lock:
            self._process_cache = {}
        log.info("%s store %s: schema reset", self.backend, self.describe())

    def ping(self) -> None:
        """Check the store answers; StoreUnavailable if not."""
        self._read(lambda conn: conn.execute(sa.select(1)).scalar_one())

    def server_time(self) -> datetime:
        """The database server's clock (SQLite: this machine's, where its file is)."""
        query = _SERVER_TIME.get(self.backend)
        if query is None:
            return super().server_time()
        value = self._read(lambda conn: conn.execute(query).scalar_one())
        if value.tzinfo is None:  # MariaDB's UTC_TIMESTAMP is naive UTC
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def close(self) -> None:
        """Dispose of the engine's pool if this store created the engine."""
        if self._owns_engine:
            self.engine.dispose()

    # -- units of work with the embedded queue ---------------------------------------------------

    def settle_uows(
        self, steps: Sequence[UowTransition], settlement: QueueSettlement
    ) -> tuple[list[UnitOfWork | NotFound | StateConflict], QueueSettled]:
        """The steps and the queue writes in one transaction (see
        :meth:`db.store.QueueStore.settle_uows`)."""
        chained: list[str] = []
        transitions = self._transitions_writer(steps, chained)
        queue = self.queue_settlement_writer(settlement)

        def work(
            conn: sa.Connection,
        ) -> tuple[list[UnitOfWork | NotFound | StateConflict], QueueSettled]:
            chained.clear()  # a try again after a lost connection starts over
            done = transitions(conn)
            return done, dataclasses.replace(queue(conn), chained=tuple(chained))

        return self._write(work, entity="uow", key=", ".join(s.uow_id for s in steps))

    # -- processes --------------------------------------------------------------------------------

    def list_processes(self, kind: ProcessKind | None = None) -> list[ProcessRecord]:
        """Registered processes, optionally of one kind, ordered by name."""
        # Parsing a record (two JSON columns and the entry) costs far more than reading its
        # version: read the versions, then the full rows of only what changed since last time.
        # Every call still reads the store, so no change is ever missed.
        c = processes.c
        stmt = sa.select(c.name, c.version, c.updated_at).order_by(c.name)
        if kind is not None:
            stmt = stmt.where(c.kind == str(kind))
        current = self._read(lambda conn: conn.execute(stmt).all())
        with self._process_lock:
            cache = dict(self._process_cache)
        stale = [
            name
            for name, version, updated_at in current
            if (cached := cache.get(name)) is None
            or (cached.version, cached.updated_at) != (version, updated_at)
        ]
        for start in range(0, len(stale), KEYS_PER_STATEMENT):
            chunk = stale[start : start + KEYS_PER_STATEMENT]
            full = sa.select(processes).where(c.name.in_(chunk))
            for row in self._read(lambda conn, full=full: conn.execute(full).all()):
                record = rows.process_from(row._mapping)
                cache[record.name] = record
        names = [name for name, _, _ in current]
        with self._process_lock:  # mx serves requests on threads sharing this store
            if kind is None:
                self._process_cache = {n: cache[n] for n in names if n in cache}
            else:
                self._process_cache.update((n, cache[n]) for n in names if n in cache)
        # A process deleted between the two reads is left out, as if listed a moment later.
        return [cache[name] for name in names if name in cache]

    def get_process(self, name: str) -> ProcessRecord:
        """One process; NotFound if missing."""
        row = self._read(lambda conn: self._get_row(conn, processes, {"name": name}))
        if row is None:
            raise NotFound("process", name)
        return rows.process_from(row)

    def insert_process(self, record: ProcessRecord) -> ProcessRecord:
        """Store a new process with version 1; DuplicateKey if the name is taken."""
        row = rows.process_row(record, version=1)
        self._write(
            lambda conn: conn.execute(_INSERT_PROCESS, row), entity="process", key=record.name
        )
        return rows.process_from(row)

    def update_process(
        self, record: ProcessRecord, *, expected_version: int, event: Event | None = None
    ) -> ProcessRecord:
        """Compare-and-set on the version: replace entry and registered values, add ``event``."""
        row = rows.process_row(record, version=expected_version + 1)
        c = processes.c
        stmt = (
            sa.update(processes)
            .where(c.name == record.name, c.version == expected_version)
            .values(
                kind=row["kind"],
                entry=row["entry"],
                registered=row["registered"],
                source=row["source"],
                version=c.version + 1,
                updated_at=row["updated_at"],
            )
        )

        def work(conn: sa.Connection) -> ProcessRecord:
            if conn.execute(stmt).rowcount == 0:
                current = self._get_row(conn, processes, {"name": record.name})
                if current is None:
                    raise NotFound("process", record.name)
                raise Conflict(
                    "process",
                    record.name,
                    f"expected version {expected_version} but it is {current['version']}"
                    " (changed concurrently)",
                )
            self._add_event(conn, event)
            return rows.process_from(self._get_row(conn, processes, {"name": record.name}))

        return self._write(work, entity="process", key=record.name)

    def delete_process(self, name: str) -> None:
        """Remove a process; its jobs and units of work stay. NotFound if missing."""
        stmt = sa.delete(processes).where(processes.c.name == name)

        def work(conn: sa.Connection) -> None:
            if conn.execute(stmt).rowcount == 0:
                raise NotFound("process", name)

        # A process made again under this name may repeat the old one's version and instants.
        with self._process_lock:
            self._process_cache.pop(name, None)
        self._write(work)

    # -- history ----------------------------------------------------------------------------------

    def append_event(self, event: Event) -> None:
        """Append an event outside a state change; the entity must exist."""
        exists = _entity_exists(event.entity, event.entity_id)

        def write(conn: sa.Connection) -> None:
            if conn.execute(exists).first() is None:
                raise NotFound(event.entity, event.entity_id)
            self._add_event(conn, event)

        self._write(write)

    def history(self, entity: str, entity_id: str, *, limit: int = 500) -> list[Event]:
        """The latest ``limit`` events of one entity, oldest first."""
        _check_positive(limit)
        c = events.c
        stmt = (
            sa.select(events)
            .where(c.entity == entity, c.entity_id == entity_id)
            .order_by(c.id.desc())
            .limit(limit)
        )
        found = self._read(lambda conn: conn.execute(stmt).all())
        return [rows.event_from(row._mapping) for row in reversed(found)]

    # -- freerun fires ----------------------------------------------------------------------------

    def record_fire(self, fire: FireRecord) -> bool:
        """Record a fire once; False if (process, scheduled_at) was recorded before."""
        return self.record_fires([fire])[0]

    def record_fires(self, fires: Sequence[FireRecord]) -> list[bool]:
        """Record fires once each, in one transaction: INSERT ... ON CONFLICT DO NOTHING
        RETURNING the keys inserted, in multi-row statements (SQLite, PostgreSQL), or INSERT
        IGNORE per fire, its rowcount telling (MariaDB): the ones recorded before are passed
        over."""
        if not fires:
            return []
        stmt = self._insert_ignore(fires_table)
        batch = [rows.fire_row(fire) for fire in fires]  # bad values: refused before writing
        if self.backend not in ("sqlite", "postgresql"):
            return self._write(
                lambda conn: [conn.execute(stmt, row).rowcount == 1 for row in batch]
            )
        c = fires_table.c
        returning = stmt.returning(c.process, c.scheduled_at)

        def write(conn: sa.Connection) -> set[tuple[str, datetime]]:
            return {(process, at) for process, at in conn.execute(returning, batch)}

        inserted = self._write(write)
        recorded = []
        for row in batch:
            key = (row["process"], truncate_ms(row["scheduled_at"]).astimezone(UTC))
            recorded.append(key in inserted)
            inserted.discard(key)  # the same fire twice in one batch: the first records it
        return recorded

    def set_fire_uow(self, process: str, scheduled_at: datetime, uow_id: str) -> None:
        """Link a recorded fire to its unit of work (nothing happens for an unknown fire)."""
        self.set_fire_uows([(process, scheduled_at, uow_id)])

    def set_fire_uows(self, links: Sequence[tuple[str, datetime, str]]) -> None:
        """Link recorded fires to their units of work, in one transaction."""
        if not links:
            return
        c = fires_table.c
        stmt = (
            sa.update(fires_table)
            .where(
                c.process == sa.bindparam("k_process", type_=c.process.type),
                c.scheduled_at == sa.bindparam("k_at", type_=c.scheduled_at.type),
            )
            .values(uow_id=sa.bindparam("v_uow", type_=c.uow_id.type))
        )
        params = [
            {"k_process": process, "k_at": rows.instant(at, "scheduled_at"), "v_uow": uow_id}
            for process, at, uow_id in links
        ]
        self._write(lambda conn: conn.execute(stmt, params))

    def last_fire(self, process: str) -> FireRecord | None:
        """The fire of ``process`` with the latest ``scheduled_at``, or None."""
        found = self.list_fires(process, limit=1)
        return found[0] if found else None

    def last_fires(self, processes: Sequence[str]) -> dict[str, FireRecord]:
        """The latest fire of each of ``processes``: two statements per chunk of names
        (:meth:`SqlCore._latest_rows`); a name not registered is read on its own."""
        latest, unregistered = self._latest_rows(fires_table, "scheduled_at", processes)
        found = {fire.process: fire for fire in map(rows.fire_from, latest)}
        for name in unregistered:
            fire = self.last_fire(name)
            if fire is not None:
                found[name] = fire
        return found

    def recent_fires(self, processes: Sequence[str], *, limit: int) -> dict[str, list[FireRecord]]:
        """The latest ``limit`` fires of each of ``processes``, one statement per chunk of
        names: each registered process's ``limit``-th latest ``scheduled_at`` (a scalar
        subquery per process row: an index lookup each) bounds an index range of its fires. A
        name not registered is read on its own."""
        _check_positive(limit)
        names = list(dict.fromkeys(processes))
        c = fires_table.c
        p = processes_table.c
        older = fires_table.alias("older")
        # the limit-th latest fire's instant, or the epoch for a process with fewer fires
        floor = sa.func.coalesce(
            sa.select(older.c.scheduled_at)
            .where(older.c.process == p.name)
            .order_by(older.c.scheduled_at.desc())
            .limit(1)
            .offset(limit - 1)
            .scalar_subquery(),
            sa.literal(_EPOCH, UtcDateTime()),
        )
        found: dict[str, list[FireRecord]] = {}
        unregistered: list[str] = []
        for start in range(0, len(names), KEYS_PER_STATEMENT):
            chunk = names[start : start + KEYS_PER_STATEMENT]
            heads = sa.select(p.name).where(p.name.in_(chunk))
            stmt = (
                sa.select(fires_table)
                .join(processes_table, c.process == p.name)
                .where(p.name.in_(chunk), c.scheduled_at >= floor)
                .order_by(c.process, c.scheduled_at.desc())
            )

            def read(conn: sa.Connection, heads=heads, stmt=stmt) -> tuple[list[Any], list[str]]:
                return conn.execute(stmt).all(), list(conn.execute(heads).scalars())

            fires, registered = self._read(read)
            for row in fires:
                fire = rows.fire_from(row._mapping)
                found.setdefault(fire.process, []).append(fire)
            unregistered += sorted(set(chunk) - set(registered))
        for name in unregistered:
            fires = self.list_fires(name, limit=limit)
            if fires:
                found[name] = fires
        return found

    def unlinked_fires(self, processes: Sequence[str]) -> list[FireRecord]:
        """Fired fires with no unit of work linked (``ix_fires_unlinked``)."""
        names = list(dict.fromkeys(processes))
        c = fires_table.c
        found: list[FireRecord] = []
        for start in range(0, len(names), KEYS_PER_STATEMENT):
            stmt = (
                sa.select(fires_table)
                .where(
                    c.uow_id.is_(None),
                    c.outcome == FireOutcome.FIRED.value,
                    c.process.in_(names[start : start + KEYS_PER_STATEMENT]),
                )
                .order_by(c.process, c.scheduled_at)
            )
            found += [
                rows.fire_from(row._mapping)
                for row in self._read(lambda conn, stmt=stmt: conn.execute(stmt).all())
            ]
        return found

    def list_fires(self, process: str, *, limit: int = 100) -> list[FireRecord]:
        """The latest fires of ``process``, newest first."""
        _check_positive(limit)
        c = fires_table.c
        stmt = (
            sa.select(fires_table)
            .where(c.process == process)
            .order_by(c.scheduled_at.desc())
            .limit(limit)
        )
        found = self._read(lambda conn: conn.execute(stmt).all())
        return [rows.fire_from(row._mapping) for row in found]

    def __repr__(self) -> str:
        return f"SqlStore({self.describe()!r})"


def _check_positive(limit: int) -> None:
    """Refuse a non-positive ``limit`` (lists that are not paginated are not capped either)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidInput("limit", f"must be a positive integer (got {limit!r})")


def _entity_exists(entity: str, entity_id: str) -> sa.Select:
    """A select that finds the entity an event belongs to (``job`` ids are ``process/tp``)."""
    if entity == "job":
        process, _, timeperiod = entity_id.partition("/")
        where = [jobs.c.process == process, jobs.c.timeperiod == timeperiod]
        table = jobs
    elif entity == "uow":
        table, where = uows, [uows.c.id == entity_id]
    elif entity == "process":
        table, where = processes, [processes.c.name == entity_id]
    elif entity == "supervised":
        box_id, _, process = entity_id.partition("/")
        table = supervised
        where = [supervised.c.box_id == box_id, supervised.c.process == process]
    else:
        raise InvalidInput("entity", f"unknown entity {entity!r}")
    return sa.select(sa.literal(1)).select_from(table).where(*where)
