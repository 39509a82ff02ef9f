"""Tables and indexes of the SQL store, and the one datetime type every instant goes through.

Key and name columns have lengths that fit MySQL's index limits with utf8mb4 (4 bytes a
character), and compare bytewise on every backend (``C`` collation on PostgreSQL, ``utf8mb4_bin``
on MySQL, SQLite's default ``BINARY``), so orders and keyset cursors agree across backends.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from db.clock import require_aware, truncate_ms

#: Names of processes, boxes, workers and actors (191 characters keep MySQL indexes small).
NAME_LENGTH = 191
#: Our ids are 24 hex characters (``db.ids.new_id``); a little room for hand-made ones.
ID_LENGTH = 32
#: SPEC section 2 timeperiod strings (``2026010513``).
TIMEPERIOD_LENGTH = 10
#: A unit of work's window bounds: timeperiods, or a freerun fire's ``%Y%m%d%H%M%S`` stamp.
WINDOW_LENGTH = 20
#: Run keys of units of work.
RUN_KEY_LENGTH = 64
#: State and enum values.
STATE_LENGTH = 16
#: History ids: ``process/timeperiod``, ``box_id/process``, a process name or a uow id.
ENTITY_ID_LENGTH = 400

_MYSQL_TABLE = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def _key(length: int) -> sa.types.TypeEngine[str]:
    """A string compared bytewise (``C`` collation on PostgreSQL; the table's on MySQL)."""
    return sa.String(length).with_variant(postgresql.VARCHAR(length, collation="C"), "postgresql")


def _long_text() -> sa.types.TypeEngine[str]:
    """Unbounded text; MEDIUMTEXT on MySQL, whose TEXT stops at 64 KiB."""
    return sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


def _long_binary() -> sa.types.TypeEngine[bytes]:
    """Bytes; MEDIUMBLOB on MySQL, whose BLOB stops at 64 KiB (BYTEA, SQLite's BLOB)."""
    return sa.LargeBinary().with_variant(mysql.MEDIUMBLOB(), "mysql", "mariadb")


def _serial_id() -> sa.Column[int]:
    """An auto-incremented 64-bit primary key (INTEGER on SQLite, which auto-increments only an
    INTEGER PRIMARY KEY, not a BIGINT one)."""
    return sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    )


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """A real datetime column holding UTC instants with millisecond precision.

    TIMESTAMP WITH TIME ZONE on PostgreSQL, DATETIME(6) on MySQL (naive, always UTC) and SQLite's
    fixed-width ``YYYY-MM-DD HH:MM:SS.ffffff`` text (naive, always UTC, so text order is time
    order). Binds refuse naive datetimes; results are always aware UTC.
    """

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True))
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime())

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        value = truncate_ms(require_aware(value))
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = sa.MetaData()

processes = sa.Table(
    "processes",
    metadata,
    sa.Column("name", _key(NAME_LENGTH), primary_key=True),
    sa.Column("kind", sa.String(STATE_LENGTH), nullable=False),
    sa.Column("entry", sa.JSON(), nullable=False),
    sa.Column("registered", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("source", sa.String(STATE_LENGTH), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    **_MYSQL_TABLE,
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", _key(ID_LENGTH), primary_key=True),
    sa.Column("process", _key(NAME_LENGTH), nullable=False),
    sa.Column("qualifier", sa.String(STATE_LENGTH), nullable=False),
    sa.Column("timeperiod", _key(TIMEPERIOD_LENGTH), nullable=False),
    sa.Column("state", _key(STATE_LENGTH), nullable=False),
    sa.Column("uow_id", _key(ID_LENGTH), nullable=True),
    sa.Column("run", sa.Integer(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.UniqueConstraint("process", "timeperiod", name="uq_jobs_process_timeperiod"),
    **_MYSQL_TABLE,
)
sa.Index("ix_jobs_process_state_timeperiod", jobs.c.process, jobs.c.state, jobs.c.timeperiod)
# The UI's newest-first list orders by (timeperiod DESC, process ASC); an index in that order
# serves it (and its keyset cursor) without a sort on every backend.
sa.Index("ix_jobs_timeperiod_process", jobs.c.timeperiod.desc(), jobs.c.process)
# The same order within one state: a page of jobs in some states (each state read on its own,
# then merged) stops after the page instead of sorting every job in that state, and the planners
# choose it over walking the whole timeperiod order for a rare state.
sa.Index("ix_jobs_state_newest", jobs.c.state, jobs.c.timeperiod.desc(), jobs.c.process)

uows = sa.Table(
    "uows",
    metadata,
    sa.Column("id", _key(ID_LENGTH), primary_key=True),
    sa.Column("process", _key(NAME_LENGTH), nullable=False),
    sa.Column("kind", sa.String(STATE_LENGTH), nullable=False),
    sa.Column("start_timeperiod", _key(WINDOW_LENGTH), nullable=False),
    sa.Column("end_timeperiod", _key(WINDOW_LENGTH), nullable=False),
    sa.Column("run_key", _key(RUN_KEY_LENGTH), nullable=False),
    sa.Column("state", _key(STATE_LENGTH), nullable=False),
    sa.Column("timeperiod", _key(TIMEPERIOD_LENGTH), nullable=True),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("retries", sa.Integer(), nullable=False),
    sa.Column("arguments", sa.JSON(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("scheduled_at", UtcDateTime(), nullable=True),
    sa.Column("submitted_at", UtcDateTime(), nullable=True),
    sa.Column("started_at", UtcDateTime(), nullable=True),
    sa.Column("finished_at", UtcDateTime(), nullable=True),
    sa.Column("retry_at", UtcDateTime(), nullable=True),
    sa.Column("heartbeat_at", UtcDateTime(), nullable=True),
    sa.Column("worker_id", _key(NAME_LENGTH), nullable=True),
    sa.Column("box_id", _key(NAME_LENGTH), nullable=True),
    sa.Column("pid", sa.Integer(), nullable=True),
    sa.Column("exit_code", sa.Integer(), nullable=True),
    sa.Column("output", _long_text(), nullable=True),
    sa.Column("error", _long_text(), nullable=True),
    sa.Column("version", sa.Integer(), nullable=False),
    # flows (SPEC section 10); added to existing stores by _upgrade_columns
    sa.Column("flow", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("parent", _key(ID_LENGTH), nullable=True),
    sa.Column("step", _key(NAME_LENGTH), nullable=True),
    sa.Column("result", sa.JSON(none_as_null=True), nullable=True),
    # payloads (SPEC section 12); added to existing stores by _upgrade_columns
    sa.Column("payload_id", _key(ID_LENGTH), nullable=True),
    sa.UniqueConstraint(
        "process", "start_timeperiod", "end_timeperiod", "run_key", name="uq_uows_key"
    ),
    **_MYSQL_TABLE,
)
sa.Index("ix_uows_process_id", uows.c.process, uows.c.id)
# a process's units of work in some states (a freerun's in-flight count) without reading its
# whole history
sa.Index("ix_uows_process_state_id", uows.c.process, uows.c.state, uows.c.id)
sa.Index("ix_uows_state_id", uows.c.state, uows.c.id)
sa.Index("ix_uows_state_retry_at", uows.c.state, uows.c.retry_at)
sa.Index("ix_uows_state_submitted_at", uows.c.state, uows.c.submitted_at)
sa.Index("ix_uows_state_heartbeat_at", uows.c.state, uows.c.heartbeat_at)
sa.Index("ix_uows_process_timeperiod", uows.c.process, uows.c.timeperiod)
sa.Index("ix_uows_parent_step", uows.c.parent, uows.c.step)

events = sa.Table(
    "events",
    metadata,
    _serial_id(),
    sa.Column("entity", _key(STATE_LENGTH), nullable=False),
    sa.Column("entity_id", _key(ENTITY_ID_LENGTH), nullable=False),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("trigger", sa.String(64), nullable=False),
    sa.Column("from_state", sa.String(32), nullable=True),
    sa.Column("to_state", sa.String(32), nullable=True),
    sa.Column("actor", sa.String(NAME_LENGTH), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("details", sa.JSON(), nullable=False),
    **_MYSQL_TABLE,
)
sa.Index("ix_events_entity", events.c.entity, events.c.entity_id, events.c.id)

fires = sa.Table(
    "fires",
    metadata,
    # The primary key is the fire's identity: a fire can be recorded only once.
    sa.Column("process", _key(NAME_LENGTH), primary_key=True),
    sa.Column("scheduled_at", UtcDateTime(), primary_key=True),
    sa.Column("outcome", sa.String(STATE_LENGTH), nullable=False),
    sa.Column("uow_id", _key(ID_LENGTH), nullable=True),
    sa.Column("recorded_at", UtcDateTime(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    **_MYSQL_TABLE,
)

# A pass's repair of fires recorded without their unit of work: found without reading history.
sa.Index("ix_fires_unlinked", fires.c.uow_id, fires.c.outcome, fires.c.process)

supervised = sa.Table(
    "supervised",
    metadata,
    sa.Column("box_id", _key(NAME_LENGTH), primary_key=True),
    sa.Column("process", _key(NAME_LENGTH), primary_key=True),
    sa.Column("desired", sa.Boolean(), nullable=False),
    sa.Column("state", _key(STATE_LENGTH), nullable=False),
    sa.Column("pid", sa.Integer(), nullable=True),
    # psutil's create_time needs a double: a single-precision float loses the fraction.
    sa.Column("create_time", sa.Double(), nullable=True),
    sa.Column("started_at", UtcDateTime(), nullable=True),
    sa.Column("stopped_at", UtcDateTime(), nullable=True),
    sa.Column("exit_code", sa.Integer(), nullable=True),
    sa.Column("start_attempts", sa.Integer(), nullable=False),
    sa.Column("backoff_until", UtcDateTime(), nullable=True),
    sa.Column("stats", sa.JSON(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    **_MYSQL_TABLE,
)

workers = sa.Table(
    "workers",
    metadata,
    sa.Column("worker_id", _key(NAME_LENGTH), primary_key=True),
    sa.Column("process", _key(NAME_LENGTH), nullable=False),
    sa.Column("box_id", _key(NAME_LENGTH), nullable=False),
    sa.Column("pid", sa.Integer(), nullable=False),
    sa.Column("started_at", UtcDateTime(), nullable=False),
    sa.Column("heartbeat_at", UtcDateTime(), nullable=False),
    sa.Column("state", _key(STATE_LENGTH), nullable=False),
    sa.Column("current_uow", _key(ID_LENGTH), nullable=True),
    sa.Column("concurrency", sa.Integer(), nullable=False),
    **_MYSQL_TABLE,
)
sa.Index("ix_workers_box_id", workers.c.box_id)
sa.Index("ix_workers_process", workers.c.process)

# The embedded queue (``broker_uri = store``). A message is deliverable when it is available and
# unclaimed or its claim expired; claims take the oldest ids first.
queue_messages = sa.Table(
    "queue_messages",
    metadata,
    sa.Column("id", _key(ID_LENGTH), primary_key=True),
    sa.Column("queue", _key(NAME_LENGTH), nullable=False),
    sa.Column("body", _long_binary(), nullable=False),
    sa.Column("available_at", UtcDateTime(), nullable=False),
    sa.Column("deliveries", sa.Integer(), nullable=False),
    sa.Column("claimed_by", _key(NAME_LENGTH), nullable=True),
    sa.Column("claimed_until", UtcDateTime(), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    **_MYSQL_TABLE,
)
# The claim walks a queue in id order and stops after ``limit`` deliverable rows (claimed ones
# are few: prefetch times consumers); depth and purge select by queue.
sa.Index("ix_queue_messages_queue_id", queue_messages.c.queue, queue_messages.c.id)
# A queue holding many delayed messages: the planner can start from the due ones instead.
sa.Index(
    "ix_queue_messages_queue_available_at",
    queue_messages.c.queue,
    queue_messages.c.available_at,
)


# Jobs and units of work by (entity, process, state), kept by the database (``counts.py``): the
# triggers on ``jobs`` and ``uows`` append +1/-1 rows to ``state_count_deltas`` in the writer's
# transaction (insert-only: concurrent writers never wait on one counter row), and a reader
# folds the deltas into ``state_counts`` now and then. A count is the sum of both.
state_counts = sa.Table(
    "state_counts",
    metadata,
    sa.Column("entity", sa.String(STATE_LENGTH), primary_key=True),
    sa.Column("process", _key(NAME_LENGTH), primary_key=True),
    sa.Column("state", _key(STATE_LENGTH), primary_key=True),
    sa.Column("n", sa.BigInteger(), nullable=False),
    **_MYSQL_TABLE,
)

state_count_deltas = sa.Table(
    "state_count_deltas",
    metadata,
    _serial_id(),
    sa.Column("entity", sa.String(STATE_LENGTH), nullable=False),
    sa.Column("process", _key(NAME_LENGTH), nullable=False),
    sa.Column("state", _key(STATE_LENGTH), nullable=False),
    sa.Column("delta", sa.Integer(), nullable=False),
    **_MYSQL_TABLE,
)

# -- indexes added after a store was created -------------------------------------------------------

#: Indexes an earlier schema had and this one dropped, per table: :func:`_upgrade_indexes` drops
#: them from existing stores (``ix_jobs_state_timeperiod`` ordered timeperiods ascending, so a
#: newest-first page in one state had to sort; ``ix_jobs_state_newest`` replaces it).
RETIRED_INDEXES: dict[str, tuple[str, ...]] = {"jobs": ("ix_jobs_state_timeperiod",)}


#: Columns added after the first release, per table: :func:`_upgrade_indexes` adds them to
#: existing stores before it creates the indexes that use them.
ADDED_COLUMNS: dict[str, tuple[str, ...]] = {
    "uows": ("flow", "parent", "step", "result", "payload_id")
}


def _upgrade_columns(connection: sa.Connection, table: sa.Table) -> None:
    present = {column["name"] for column in sa.inspect(connection).get_columns(table.name)}
    for name in ADDED_COLUMNS.get(table.name, ()):
        if name in present:
            continue
        column = table.c[name]
        preparer = connection.dialect.identifier_preparer
        kind = column.type.compile(dialect=connection.dialect)
        default = ""
        if isinstance(column.server_default, sa.DefaultClause):
            # compiled per dialect: sa.false() is 0 on SQLite, false on PostgreSQL
            value = column.server_default.arg
            if isinstance(value, sa.ClauseElement):
                value = str(value.compile(dialect=connection.dialect))
            default = f" NOT NULL DEFAULT {value}"
        connection.exec_driver_sql(
            f"ALTER TABLE {preparer.quote(table.name)} ADD COLUMN {preparer.quote(name)} "
            f"{kind}{default}"
        )


@sa.event.listens_for(metadata, "after_create")
def _upgrade_indexes(target: sa.MetaData, connection: sa.Connection, **_: Any) -> None:
    """After ``create_all`` (``init_schema``): create the indexes an existing table lacks and
    drop the retired ones.

    ``create_all`` creates a missing table with its indexes but leaves an existing table as it
    is, so an index added to this module would never reach a store made before it.
    """
    for table in target.sorted_tables:
        _upgrade_columns(connection, table)
    inspector = sa.inspect(connection)
    for table in target.sorted_tables:
        present = {index["name"] for index in inspector.get_indexes(table.name)}
        # IF [NOT] EXISTS: two services starting together on an old store both see it missing.
        for index in table.indexes:
            if index.name not in present:
                connection.execute(sa.schema.CreateIndex(index, if_not_exists=True))
        for name in RETIRED_INDEXES.get(table.name, ()):
            if name in present:
                quoted = connection.dialect.identifier_preparer.quote(name)
                drop = f"DROP INDEX IF EXISTS {quoted}"
                if connection.dialect.name in ("mysql", "mariadb"):
                    drop += f" ON {connection.dialect.identifier_preparer.quote(table.name)}"
                connection.exec_driver_sql(drop)
