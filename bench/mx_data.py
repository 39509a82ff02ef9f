"""Loading bench/mx.py's store: 1,000 processes and 1,000,000 units of work in a SQL database.

The rows come from :mod:`mx_history`, so they are exactly what the store writes; only the way
in differs: executemany through SQLAlchemy Core in batches of ``BATCH`` rows, one transaction
each, with the secondary indexes dropped during the load and created again after it (the same
definitions, from :mod:`db.backends.sql.schema`), then ``ANALYZE`` (``VACUUM ANALYZE`` on
PostgreSQL, the steady state autovacuum reaches, so that index-only scans work).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from mx_history import History
from mx_shape import Shape, process_records

from db.backends.sql.schema import events, jobs, metadata, processes, uows

#: Rows per executemany, one transaction each.
BATCH = 10_000
#: Tables loaded by the generator, in load order.
TABLES = (processes, jobs, uows, events)


def _secondary_indexes() -> list[sa.Index]:
    return [index for table in TABLES for index in table.indexes]


def load(engine: sa.Engine, shape: Shape, progress=lambda text: None) -> dict[str, int]:
    """Create the schema on an empty database and fill it; returns rows per table."""
    metadata.create_all(engine)
    with engine.begin() as conn:
        for index in _secondary_indexes():
            index.drop(conn)
    counts = {table.name: 0 for table in TABLES}
    pending: dict[str, list[dict[str, Any]]] = {table.name: [] for table in TABLES}
    statements = {table.name: sa.insert(table) for table in TABLES}

    def flush(name: str) -> None:
        batch = pending[name]
        if batch:
            with engine.begin() as conn:
                conn.execute(statements[name], batch)
            counts[name] += len(batch)
            pending[name] = []

    history = History(shape)
    for n, (table, row) in enumerate(history.all(process_records(shape)), 1):
        batch = pending[table.name]
        batch.append(row)
        if len(batch) >= BATCH:
            flush(table.name)
        if n % 500_000 == 0:
            progress(f"{n:,} rows made ({counts['uows']:,} units of work stored)")
    for name in pending:
        flush(name)
    _finish(engine, progress)
    return counts


def _finish(engine: sa.Engine, progress) -> None:
    """Create the secondary indexes, then gather the planner's statistics."""
    progress("creating the indexes")
    with engine.begin() as conn:
        for index in _secondary_indexes():
            index.create(conn)
    progress("analyzing")
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")


def copy(source: sa.Engine, target: sa.Engine, progress=lambda text: None) -> dict[str, int]:
    """Copy a store :func:`load` made into an empty database, the same way (no secondary
    indexes during the copy, then ``ANALYZE``). Events go in id order without their ids, so
    each entity's history keeps its order and the target numbers them itself."""
    metadata.create_all(target)
    with target.begin() as conn:
        for index in _secondary_indexes():
            index.drop(conn)
    counts = {}
    for table in TABLES:
        columns = [c for c in table.c if not (table is events and c.name == "id")]
        order = list(table.primary_key.columns)
        insert = sa.insert(table)
        counts[table.name] = 0
        with source.connect() as reader:
            result = reader.execution_options(yield_per=BATCH).execute(
                sa.select(*columns).order_by(*order)
            )
            for chunk in result.mappings().partitions(BATCH):
                with target.begin() as conn:
                    conn.execute(insert, [dict(row) for row in chunk])
                counts[table.name] += len(chunk)
        progress(f"copied {counts[table.name]:,} {table.name}")
    _finish(target, progress)
    return counts
