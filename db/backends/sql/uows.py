"""Units of work in the SQL store: create once, lookups, keyset pages by id, compare-and-set."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from db.backends.base import (
    UOW_CHANGEABLE_FIELDS,
    check_changes,
    check_limit,
    decode_cursor,
    encode_cursor,
)
from db.backends.sql import rows
from db.backends.sql.core import KEYS_PER_STATEMENT
from db.backends.sql.counts import CountsMixin
from db.backends.sql.engine import is_unique_violation
from db.backends.sql.schema import uows
from db.errors import DuplicateKey, InvalidInput, NotFound, StateConflict
from db.models import Page, UowInstants, UowTransition
from db.states import UowState

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from db.models import Event, UnitOfWork, UowQuery

_INSERT_UOW = sa.insert(uows)
#: A stored state's member: a dict look-up costs a tenth of ``UowState(value)`` (thousands a
#: count of every process).
_UOW_STATES = {state.value: state for state in UowState}


class UowsMixin(CountsMixin):
    """The unit-of-work half of :class:`~db.store.Store` on SQL."""

    def create_uow(self, uow: UnitOfWork, *, event: Event | None = None) -> UnitOfWork:
        """Insert a unit of work and its creation event in one transaction."""
        row = rows.uow_row(uow)
        key = _uow_key(uow)

        def work(conn: sa.Connection) -> None:
            conn.execute(_INSERT_UOW, row)
            self._add_event(conn, event)

        self._write(work, entity="uow", key=key)
        return rows.uow_from(row)

    def create_uows(
        self, items: Sequence[tuple[UnitOfWork, Event | None]]
    ) -> list[UnitOfWork | DuplicateKey]:
        """Insert them in one transaction: the keys already taken are read first, the others
        inserted with their events in two statements. Should another writer take a key in
        between (PostgreSQL, MariaDB), the transaction runs again with each insert in a
        savepoint of its own."""
        prepared = [(uow, rows.uow_row(uow), event) for uow, event in items]  # bad values: now
        if not prepared:
            return []

        def batched(conn: sa.Connection) -> list[UnitOfWork | DuplicateKey]:
            taken = _taken_keys(conn, [uow for uow, _, _ in prepared])
            fresh = [(row, event) for uow, row, event in prepared if _key_of(uow) not in taken]
            if fresh:
                conn.execute(_INSERT_UOW, [row for row, _ in fresh])
                self._add_events(conn, (event for _, event in fresh))
            return [
                DuplicateKey("uow", _uow_key(uow)) if _key_of(uow) in taken else rows.uow_from(row)
                for uow, row, _ in prepared
            ]

        def one_by_one(conn: sa.Connection) -> list[UnitOfWork | DuplicateKey]:
            done: list[UnitOfWork | DuplicateKey] = []
            for uow, row, event in prepared:
                try:
                    with conn.begin_nested():
                        conn.execute(_INSERT_UOW, row)
                        self._add_event(conn, event)
                    done.append(rows.uow_from(row))
                except sa.exc.IntegrityError as exc:
                    if not is_unique_violation(exc):
                        raise
                    done.append(DuplicateKey("uow", _uow_key(uow)))
            return done

        key = f"{len(prepared)} units of work"
        try:
            return self._write(batched, entity="uow", key=key)
        except DuplicateKey:
            return self._write(one_by_one, entity="uow", key=key)

    def get_uow(self, uow_id: str) -> UnitOfWork:
        """One unit of work; NotFound if missing."""
        row = self._read(lambda conn: self._get_row(conn, uows, {"id": uow_id}))
        if row is None:
            raise NotFound("uow", uow_id)
        return rows.uow_from(row)

    def get_uows(self, uow_ids: Sequence[str]) -> dict[str, UnitOfWork]:
        """The units of work with these ids, one statement per chunk of ids."""
        ids = list(dict.fromkeys(uow_ids))
        found: dict[str, UnitOfWork] = {}
        for start in range(0, len(ids), KEYS_PER_STATEMENT):
            stmt = sa.select(uows).where(uows.c.id.in_(ids[start : start + KEYS_PER_STATEMENT]))
            for row in self._read(lambda conn, stmt=stmt: conn.execute(stmt).all()):
                uow = rows.uow_from(row._mapping)
                found[uow.id] = uow
        return found

    def find_uow_by_key(
        self, process: str, start_timeperiod: str, end_timeperiod: str, run_key: str
    ) -> UnitOfWork | None:
        """The unit of work with that unique key, or None."""
        keys = {
            "process": process,
            "start_timeperiod": start_timeperiod,
            "end_timeperiod": end_timeperiod,
            "run_key": run_key,
        }
        row = self._read(lambda conn: self._get_row(conn, uows, keys))
        return None if row is None else rows.uow_from(row)

    def find_uows(
        self, query: UowQuery, *, limit: int = 100, cursor: str | None = None
    ) -> Page[UnitOfWork]:
        """A page of units of work ordered by id (time order), keyset paginated."""
        limit = check_limit(limit)
        c = uows.c
        stmt = sa.select(uows)
        if query.process is not None:
            stmt = stmt.where(c.process == query.process)
        states = None if query.states is None else sorted(str(s) for s in query.states)
        if states is not None and len(states) == len(UowState):
            states = None  # every state: no filter
        if states is not None and len(states) == 1:
            stmt = stmt.where(c.state == states[0])
        if query.kind is not None:
            stmt = stmt.where(c.kind == str(query.kind))
        if query.timeperiod is not None:
            stmt = stmt.where(c.timeperiod == query.timeperiod)
        if query.retry_due_before is not None:
            stmt = stmt.where(
                c.retry_at <= rows.instant(query.retry_due_before, "retry_due_before")
            )
        if query.submitted_before is not None:
            before = rows.instant(query.submitted_before, "submitted_before")
            stmt = stmt.where(c.submitted_at < before)
        if query.heartbeat_before is not None:
            before = rows.instant(query.heartbeat_before, "heartbeat_before")
            stmt = stmt.where(sa.or_(c.heartbeat_at < before, c.heartbeat_at.is_(None)))
        if query.parent is not None:
            stmt = stmt.where(c.parent == query.parent)
            if len(states or ()) > 1:
                # a flow run's few steps: filtered along (parent, step), not one page per state
                stmt = stmt.where(c.state.in_(states or ()))
                states = None
        if query.steps is not None:
            stmt = stmt.where(c.step.in_(sorted(query.steps)))
        if query.top_level:
            stmt = stmt.where(c.parent.is_(None))
        if query.flow is not None:
            stmt = stmt.where(c.flow == sa.true() if query.flow else c.flow == sa.false())
        if cursor is not None:
            last_id = _decode_uow_cursor(cursor)
            stmt = stmt.where(c.id < last_id if query.newest_first else c.id > last_id)
        if states is not None and len(states) > 1:
            # One page per state, each read along its (state, id) or (process, state, id) index
            # from the cursor, then merged: ``state IN (...)`` would walk the id order and
            # filter it, reading the whole history when those states are rare (2 s over
            # 1,000,000 units of work on SQLite; bench/mx.py).
            branches = [
                _in_id_order(stmt.where(c.state == state), c.id, query.newest_first)
                .limit(limit + 1)
                .subquery()
                for state in states
            ]
            merged = sa.union_all(*(sa.select(branch) for branch in branches)).subquery()
            stmt = _in_id_order(sa.select(merged), merged.c.id, query.newest_first)
        else:
            stmt = _in_id_order(stmt, c.id, query.newest_first)
        stmt = stmt.limit(limit + 1)
        found = self._read(lambda conn: conn.execute(stmt).all())
        items = [rows.uow_from(row._mapping) for row in found[:limit]]
        next_cursor = encode_cursor(items[-1].id) if len(found) > limit else None
        return Page(items, next_cursor)

    def transition_uow(
        self,
        uow_id: str,
        *,
        expected_state: UowState,
        new_state: UowState,
        event: Event,
        changes: Mapping[str, Any] | None = None,
        expected_version: int | None = None,
    ) -> UnitOfWork:
        """Compare-and-set the state with ``changes``; the event commits with it."""
        step = UowTransition(
            uow_id=uow_id,
            expected_state=expected_state,
            new_state=new_state,
            event=event,
            changes=changes,
            expected_version=expected_version,
        )
        write = self._transition_writer(step)
        return self._write(write, entity="uow", key=uow_id)

    def transition_uows(
        self, steps: Sequence[UowTransition]
    ) -> list[UnitOfWork | NotFound | StateConflict]:
        """Several compare-and-sets in one transaction; a refused one writes nothing and the
        others go on (see :meth:`db.store.Store.transition_uows`)."""
        write = self._transitions_writer(steps)  # bad changes: refused now
        return self._write(write, entity="uow", key=", ".join(s.uow_id for s in steps))

    def _transitions_writer(
        self, steps: Sequence[UowTransition], chained: list[str] | None = None
    ) -> Callable[[sa.Connection], list[UnitOfWork | NotFound | StateConflict]]:
        """The statements of :meth:`transition_uows`, for a write transaction; the ids of the
        units of work the chains that apply start are added to ``chained``."""
        writes = [
            (
                self._transition_writer(step),
                [self._transition_writer(t) for t in step.together],
                None if step.chain is None else self._chain_writer(step.chain),
            )
            for step in steps
        ]

        def work(conn: sa.Connection) -> list[UnitOfWork | NotFound | StateConflict]:
            done: list[UnitOfWork | NotFound | StateConflict] = []
            for write, together, chain in writes:
                try:
                    if not together:
                        stored = write(conn)
                    else:
                        # all or none: a refused member rolls its group back to the savepoint
                        with conn.begin_nested():
                            stored = write(conn)
                            for member in together:
                                member(conn)
                except (NotFound, StateConflict) as exc:
                    # The compare-and-set matched no row: nothing of this step was written.
                    done.append(exc)
                    continue
                done.append(stored)
                if chain is not None:
                    try:
                        with conn.begin_nested():
                            started = chain(conn)
                    except (NotFound, StateConflict, sa.exc.IntegrityError):
                        continue  # moved meanwhile: the step stands alone, the scheduler decides
                    if chained is not None:
                        chained.append(started)
            return done

        return work

    def _transition_writer(self, step: UowTransition) -> Callable[[sa.Connection], UnitOfWork]:
        """The statements of one compare-and-set with its event, for a write transaction."""
        values = rows.normalise(check_changes("uow", step.changes, UOW_CHANGEABLE_FIELDS))
        values["state"] = UowState(step.new_state).value
        values["updated_at"] = rows.instant(step.event.at, "at")

        def write(conn: sa.Connection) -> UnitOfWork:
            row = self._cas(
                conn,
                uows,
                {"id": step.uow_id},
                entity="uow",
                key=step.uow_id,
                expected_state=step.expected_state,
                expected_version=step.expected_version,
                values=values,
            )
            self._add_event(conn, step.event)
            return rows.uow_from(row)

        return write

    def update_uow(
        self,
        uow_id: str,
        *,
        expected_state: UowState,
        changes: Mapping[str, Any],
        expected_version: int | None = None,
    ) -> UnitOfWork:
        """Apply ``changes`` if the state (and version) still match; no history."""
        values = rows.normalise(check_changes("uow", changes, UOW_CHANGEABLE_FIELDS))

        def work(conn: sa.Connection) -> UnitOfWork:
            row = self._cas(
                conn,
                uows,
                {"id": uow_id},
                entity="uow",
                key=uow_id,
                expected_state=expected_state,
                expected_version=expected_version,
                values=values,
            )
            return rows.uow_from(row)

        return self._write(work, entity="uow", key=uow_id)

    def newest_uow_instants(self, limit: int) -> list[UowInstants]:
        """The newest units of work's process and dispatch instants: five columns, not rows."""
        c = uows.c
        stmt = (
            sa.select(c.process, c.created_at, c.scheduled_at, c.submitted_at, c.started_at)
            .order_by(c.id.desc())
            .limit(check_limit(limit))
        )
        found = self._read(lambda conn: conn.execute(stmt).all())
        return [
            UowInstants(
                process=process,
                created_at=created,
                scheduled_at=scheduled,
                submitted_at=submitted,
                started_at=started,
            )
            for process, created, scheduled, submitted, started in found
        ]

    def count_uows(
        self,
        process: str | Iterable[str] | None = None,
        *,
        states: Iterable[UowState] | None = None,
    ) -> dict[tuple[str, UowState], int]:
        """Units of work per (process, state), of one process, several or all, of ``states``
        or all: read from the kept counts (``counts.py``), not counted."""
        wanted = None if states is None else [UowState(state).value for state in states]
        found = self._state_counts("uow", process, wanted)
        return {(name, _UOW_STATES[state]): count for name, state, count in found}


def _in_id_order(stmt: sa.Select, id_column: Any, newest_first: bool) -> sa.Select:
    return stmt.order_by(id_column.desc() if newest_first else id_column.asc())


def _decode_uow_cursor(cursor: str) -> str:
    (value,) = decode_cursor(cursor, 1)
    if not isinstance(value, str):
        raise InvalidInput("cursor", "is not a cursor this server issued")
    return value


def _uow_key(uow: UnitOfWork) -> str:
    """How a unit of work's unique key is named in a DuplicateKey."""
    return f"{uow.process}/{uow.start_timeperiod}-{uow.end_timeperiod}/{uow.run_key}"


def _key_of(uow: UnitOfWork) -> tuple[str, str, str, str]:
    return (uow.process, uow.start_timeperiod, uow.end_timeperiod, uow.run_key)


def _taken_keys(conn: sa.Connection, batch: Sequence[UnitOfWork]) -> set[tuple[str, str, str, str]]:
    """The unique keys of ``batch`` already stored (one read through the key's index)."""
    c = uows.c
    stmt = sa.select(c.process, c.start_timeperiod, c.end_timeperiod, c.run_key).where(
        c.process.in_(sorted({u.process for u in batch})),
        c.start_timeperiod.in_(sorted({u.start_timeperiod for u in batch})),
    )
    wanted = {_key_of(u) for u in batch}
    return {tuple(row) for row in conn.execute(stmt)} & wanted  # type: ignore[misc]
