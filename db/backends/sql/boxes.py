"""Supervised processes (per box) and workers in the SQL store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from db.backends.base import SUPERVISED_CHANGEABLE_FIELDS, check_changes
from db.backends.sql import rows
from db.backends.sql.core import SqlCore
from db.backends.sql.schema import supervised, workers
from db.errors import NotFound
from db.states import SupervisedState, WorkerState

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

    from db.models import Event, SupervisedProcess, WorkerRecord

_WORKER_UPDATABLE = tuple(c.name for c in workers.c if c.name != "worker_id")


class BoxesMixin(SqlCore):
    """The supervisor's and the workers' part of :class:`~db.store.Store` on SQL."""

    # -- supervised processes ---------------------------------------------------------------------

    def list_supervised(self, box_id: str | None = None) -> list[SupervisedProcess]:
        """Supervised processes of one box or all, ordered by (box_id, process)."""
        c = supervised.c
        stmt = sa.select(supervised).order_by(c.box_id, c.process)
        if box_id is not None:
            stmt = stmt.where(c.box_id == box_id)
        found = self._read(lambda conn: conn.execute(stmt).all())
        return [rows.supervised_from(row._mapping) for row in found]

    def get_supervised(self, box_id: str, process: str) -> SupervisedProcess:
        """One supervised process; NotFound if missing."""
        keys = {"box_id": box_id, "process": process}
        row = self._read(lambda conn: self._get_row(conn, supervised, keys))
        if row is None:
            raise NotFound("supervised", f"{box_id}/{process}")
        return rows.supervised_from(row)

    def ensure_supervised(self, record: SupervisedProcess) -> SupervisedProcess:
        """Insert if (box_id, process) is new, then return the stored record either way."""
        row = rows.supervised_row(record)
        keys = {"box_id": record.box_id, "process": record.process}
        stmt = self._insert_ignore(supervised)

        def work(conn: sa.Connection) -> SupervisedProcess:
            conn.execute(stmt, row)
            return rows.supervised_from(self._get_row(conn, supervised, keys))

        return self._write(work, entity="supervised", key=record.key)

    def set_desired(self, box_id: str, process: str, desired: bool, *, event: Event) -> None:
        """Set the operator's wish for the process on the box; the event commits with it."""
        c = supervised.c
        stmt = (
            sa.update(supervised)
            .where(c.box_id == box_id, c.process == process)
            .values(desired=desired, updated_at=rows.instant(event.at, "at"), version=c.version + 1)
        )
        key = f"{box_id}/{process}"

        def work(conn: sa.Connection) -> None:
            if conn.execute(stmt).rowcount == 0:
                raise NotFound("supervised", key)
            self._add_event(conn, event)

        self._write(work, entity="supervised", key=key)

    def transition_supervised(
        self,
        box_id: str,
        process: str,
        *,
        expected_state: SupervisedState,
        new_state: SupervisedState,
        event: Event,
        changes: Mapping[str, Any] | None = None,
    ) -> SupervisedProcess:
        """Compare-and-set the supervised state with ``changes``; the event commits with it."""
        values = rows.normalise(check_changes("supervised", changes, SUPERVISED_CHANGEABLE_FIELDS))
        values["state"] = SupervisedState(new_state).value
        values["updated_at"] = rows.instant(event.at, "at")
        key = f"{box_id}/{process}"

        def work(conn: sa.Connection) -> SupervisedProcess:
            row = self._cas(
                conn,
                supervised,
                {"box_id": box_id, "process": process},
                entity="supervised",
                key=key,
                expected_state=expected_state,
                expected_version=None,
                values=values,
            )
            self._add_event(conn, event)
            return rows.supervised_from(row)

        return self._write(work, entity="supervised", key=key)

    def update_supervised_stats(
        self, box_id: str, process: str, stats: Mapping[str, Any], at: datetime
    ) -> None:
        """Refresh the psutil facts; not a state change, so neither history nor version."""
        c = supervised.c
        stmt = (
            sa.update(supervised)
            .where(c.box_id == box_id, c.process == process)
            .values(stats=dict(stats), updated_at=rows.instant(at, "at"))
        )
        self._write(lambda conn: conn.execute(stmt))

    def delete_supervised(self, box_id: str, process: str) -> None:
        """Forget a process on a box (no error if absent)."""
        c = supervised.c
        stmt = sa.delete(supervised).where(c.box_id == box_id, c.process == process)
        self._write(lambda conn: conn.execute(stmt))

    # -- workers ----------------------------------------------------------------------------------

    def save_worker(self, worker: WorkerRecord) -> None:
        """Insert or replace a worker's registration."""
        stmt = self._upsert(workers, _WORKER_UPDATABLE)
        row = rows.worker_row(worker)
        self._write(lambda conn: conn.execute(stmt, row))

    def beat_worker(self, worker_id: str, at: datetime, *, current_uow: str | None = None) -> None:
        """Record a heartbeat and the unit of work being run (a lost worker is alive again);
        NotFound for an unknown worker."""
        c = workers.c
        stmt = (
            sa.update(workers)
            .where(c.worker_id == worker_id)
            .values(
                heartbeat_at=rows.instant(at, "at"),
                current_uow=current_uow,
                # a lost worker that beats again is alive again (a stopped one stays stopped)
                state=sa.case(
                    (c.state == WorkerState.LOST.value, WorkerState.ALIVE.value), else_=c.state
                ),
            )
        )

        def work(conn: sa.Connection) -> None:
            # MySQL reports matched rows (CLIENT_FOUND_ROWS), so an unchanged beat still counts.
            if conn.execute(stmt).rowcount == 0:
                raise NotFound("worker", worker_id)

        self._write(work)

    def set_worker_state(self, worker_id: str, state: str, *, expected_state: str) -> bool:
        """Compare-and-set a worker's state; True if this call changed it."""
        c = workers.c
        stmt = (
            sa.update(workers)
            .where(c.worker_id == worker_id, c.state == expected_state)
            .values(state=state)
        )
        return self._write(lambda conn: conn.execute(stmt).rowcount == 1)

    def list_workers(
        self, *, box_id: str | None = None, process: str | None = None
    ) -> list[WorkerRecord]:
        """Registered workers, ordered by (process, worker_id)."""
        c = workers.c
        stmt = sa.select(workers).order_by(c.process, c.worker_id)
        if box_id is not None:
            stmt = stmt.where(c.box_id == box_id)
        if process is not None:
            stmt = stmt.where(c.process == process)
        found = self._read(lambda conn: conn.execute(stmt).all())
        return [rows.worker_from(row._mapping) for row in found]

    def delete_worker(self, worker_id: str) -> None:
        """Forget a worker (no error if absent)."""
        stmt = sa.delete(workers).where(workers.c.worker_id == worker_id)
        self._write(lambda conn: conn.execute(stmt))
