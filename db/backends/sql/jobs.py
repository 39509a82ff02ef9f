"""Jobs in the SQL store: create once, ensure in batches, keyset pages, compare-and-set."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from db.backends.base import (
    JOB_CHANGEABLE_FIELDS,
    check_changes,
    check_limit,
    decode_cursor,
    encode_cursor,
)
from db.backends.sql import rows
from db.backends.sql.core import KEYS_PER_STATEMENT, CasStep, key_filter
from db.backends.sql.counts import CountsMixin
from db.backends.sql.queue import message_rows, put_in
from db.backends.sql.schema import jobs as job_table
from db.backends.sql.schema import uows as uow_table
from db.errors import DuplicateKey, InvalidInput, NotFound, StateConflict
from db.models import JobQuery, Page
from db.states import ACTIVE_JOB_STATES, JobState

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from datetime import datetime

    from db.models import Event, Job, JobChain, JobStart, JobTransition, UnitOfWork

#: Jobs per batch of ``ensure_jobs``: one transaction and one executemany each.
ENSURE_BATCH = 500

_INSERT_JOB = sa.insert(job_table)
_INSERT_UOW = sa.insert(uow_table)
#: A stored state's member: a dict look-up costs a tenth of ``JobState(value)`` (thousands a
#: count of every process).
_JOB_STATES = {state.value: state for state in JobState}


#: Branches of one ``UNION ALL`` in :meth:`JobsMixin._windows_ranged` (SQLite allows 500).
_BRANCHES_PER_STATEMENT = 400
#: :meth:`JobsMixin.job_windows` reads this many processes or fewer by ranges: a branch per
#: (process, state) costs more than one numbered read for a whole pass, and less than it for
#: a process with a backlog.
_RANGED_UP_TO = 16


class JobsMixin(CountsMixin):
    """The job half of :class:`~db.store.Store` on SQL."""

    def create_job(self, job: Job) -> Job:
        """Insert one job; DuplicateKey if (process, timeperiod) exists."""
        row = rows.job_row(job)
        self._write(lambda conn: conn.execute(_INSERT_JOB, row), entity="job", key=job.key)
        return rows.job_from(row)

    def ensure_jobs(self, jobs: Iterable[Job]) -> int:
        """Insert the jobs that do not exist yet, in batches; return how many this call made.

        Each batch is one transaction running ``INSERT ... ON CONFLICT DO NOTHING`` (``INSERT
        IGNORE`` on MySQL) over its rows, so racing callers skip each other's rows instead of
        failing, and the row count is exactly the rows this call inserted. The batch goes as one
        executemany of a statement compiled once (psycopg pipelines it, PyMySQL folds it into one
        multi-row INSERT); a literal multi-row VALUES would be compiled again for every batch. Rows go in key order so that concurrent batches lock index
        entries in the same order and cannot deadlock on each other.
        """
        stmt = self._insert_ignore(job_table)
        created = 0
        pending = iter(jobs)
        while batch := list(itertools.islice(pending, ENSURE_BATCH)):
            values = sorted(
                (rows.job_row(job) for job in batch), key=lambda r: (r["process"], r["timeperiod"])
            )
            created += self._write(
                lambda conn, values=values: conn.execute(stmt, values).rowcount,
                entity="job",
                key="(batch)",
            )
        return created

    def get_job(self, process: str, timeperiod: str) -> Job:
        """One job; NotFound if missing."""
        keys = {"process": process, "timeperiod": timeperiod}
        row = self._read(lambda conn: self._get_row(conn, job_table, keys))
        if row is None:
            raise NotFound("job", f"{process}/{timeperiod}")
        return rows.job_from(row)

    def find_jobs(
        self, query: JobQuery, *, limit: int = 100, cursor: str | None = None
    ) -> Page[Job]:
        """A page of jobs ordered by (timeperiod DESC or ASC, process ASC), keyset paginated.

        Several states of all processes (the UI's lists) are read as one branch per state,
        merged with UNION ALL: each branch walks the (state, timeperiod DESC, process) index in
        page order and stops after a page, so a page costs about the same however rare or
        common the states are. With one ``state IN (...)`` the planners walk the timeperiod
        order and filter instead, which reads every job when the states are rare (0.6 s for a
        page of 440,000 jobs on SQLite). Several states of one process stay one query: the
        scheduler asks that for every process on every pass, its matches are few, and building
        the union would cost more Python than the query.
        """
        limit = check_limit(limit)
        timeperiod, process = job_table.c.timeperiod, job_table.c.process
        stmt = sa.select(job_table)
        if query.process is not None:
            stmt = stmt.where(process == query.process)
        if query.processes is not None:
            stmt = stmt.where(process.in_(sorted(query.processes)))
        if query.from_timeperiod is not None:
            stmt = stmt.where(timeperiod >= query.from_timeperiod)
        if query.to_timeperiod is not None:
            stmt = stmt.where(timeperiod < query.to_timeperiod)
        newest = query.newest_first
        if cursor is not None:
            last_timeperiod, last_process = _decode_job_cursor(cursor)
            after = timeperiod < last_timeperiod if newest else timeperiod > last_timeperiod
            if query.process is None:
                # The leading bound lets the index seek straight to the cursor; the OR keeps
                # the rest of the cursor's own timeperiod (the processes after its process).
                bound = timeperiod <= last_timeperiod if newest else timeperiod >= last_timeperiod
                after = sa.and_(bound, sa.or_(after, process > last_process))
            stmt = stmt.where(after)
        states = None if query.states is None else sorted(str(s) for s in query.states)
        if states is not None and len(states) == len(JobState):
            states = None  # every state: no filter
        if states is not None and len(states) > 1 and query.process is None:
            branches = [
                self._job_order(stmt.where(job_table.c.state == state), job_table.c, query)
                .limit(limit + 1)
                .subquery()
                for state in states
            ]
            merged = sa.union_all(*(sa.select(branch) for branch in branches)).subquery()
            stmt = self._job_order(sa.select(merged), merged.c, query)
        else:
            if states is not None:
                stmt = stmt.where(job_table.c.state.in_(states))
            stmt = self._job_order(
                stmt, job_table.c, query, several=bool(states and len(states) > 1)
            )
        stmt = stmt.limit(limit + 1)
        found = self._read(lambda conn: conn.execute(stmt).all())
        items = [rows.job_from(row._mapping) for row in found[:limit]]
        next_cursor = None
        if len(found) > limit:
            next_cursor = encode_cursor(items[-1].timeperiod, items[-1].process)
        return Page(items, next_cursor)

    def newest_jobs(self, processes: Sequence[str]) -> dict[str, Job]:
        """The newest job of each process: two statements per chunk of names
        (:meth:`SqlCore._latest_rows`); a name not registered is read on its own."""
        newest, unregistered = self._latest_rows(job_table, "timeperiod", processes)
        found = {job.process: job for job in map(rows.job_from, newest)}
        for name in unregistered:
            page = self.find_jobs(JobQuery(process=name), limit=1).items
            if page:
                found[name] = page[0]
        return found

    def job_windows(
        self, limits: Mapping[str, int], states: Iterable[JobState]
    ) -> dict[str, list[Job]]:
        """Each process's first jobs in ``states``. For a few processes (a catch-up, a woken
        process), index ranges cut at each limit (:meth:`_windows_ranged`): the cost follows
        the limits, not the backlog of jobs in ``states``; for many (a scheduler pass over
        every due process), one numbered read per chunk of names (:meth:`_windows_numbered`),
        which reads each process's jobs in ``states`` once."""
        wanted = {name: check_limit(limit) for name, limit in limits.items()}
        found: dict[str, list[Job]] = {name: [] for name in wanted}
        values = sorted({JobState(state).value for state in states})
        if values and wanted:
            read = self._windows_ranged if len(wanted) <= _RANGED_UP_TO else self._windows_numbered
            read(wanted, values, found)
        return found

    def _windows_numbered(
        self, wanted: Mapping[str, int], values: list[str], found: dict[str, list[Job]]
    ) -> None:
        """Fill ``found``: one statement per chunk of names, numbering
        each process's matches in timeperiod order (``row_number``) over the (process, state,
        timeperiod) index and keeping those within the largest limit of the chunk; each
        process's own limit is applied here."""
        c = job_table.c
        # ``+timeperiod`` (as in _job_order): SQLite would otherwise number each process's
        # rows along the unique (process, timeperiod) index, reading its whole history.
        order = c.timeperiod
        if self.engine.dialect.name == "sqlite":
            order = sa.literal_column(f"+{job_table.name}.timeperiod")
        number = sa.func.row_number().over(partition_by=c.process, order_by=order)
        names = list(wanted)
        for start in range(0, len(names), KEYS_PER_STATEMENT):
            chunk = names[start : start + KEYS_PER_STATEMENT]
            numbered = (
                sa.select(job_table, number.label("n_in_window"))
                .where(c.process.in_(chunk), c.state.in_(values))
                .subquery()
            )
            stmt = (
                sa.select(*(numbered.c[column.name] for column in c))
                .where(numbered.c.n_in_window <= max(wanted[n] for n in chunk))
                .order_by(numbered.c.process, numbered.c.timeperiod)
            )
            for row in self._read(lambda conn, stmt=stmt: conn.execute(stmt).all()):
                job = rows.job_from(row._mapping)
                window = found[job.process]
                if len(window) < wanted[job.process]:
                    window.append(job)

    def _windows_ranged(
        self, wanted: Mapping[str, int], values: list[str], found: dict[str, list[Job]]
    ) -> None:
        """Fill ``found``: one ``UNION ALL`` statement per chunk of
        (process, state) pairs, each branch an index range of (process, state, timeperiod)
        cut at the process's limit, so the cost follows the limits, not the jobs in
        ``states`` (a year of embryos behind a catch-up is not read at each pass)."""
        c = job_table.c
        pairs = [(name, value) for name in wanted for value in values]
        for start in range(0, len(pairs), _BRANCHES_PER_STATEMENT):
            branches = [
                sa.select(job_table)
                .where(c.process == name, c.state == value)
                .order_by(c.timeperiod)
                .limit(wanted[name])
                .subquery()
                for name, value in pairs[start : start + _BRANCHES_PER_STATEMENT]
            ]
            if len(branches) == 1:
                stmt = sa.select(branches[0])
            else:
                stmt = sa.union_all(*(sa.select(branch) for branch in branches))
            for row in self._read(lambda conn, stmt=stmt: conn.execute(stmt).all()):
                job = rows.job_from(row._mapping)
                found[job.process].append(job)
        for name, window in found.items():
            window.sort(key=lambda job: job.timeperiod)
            del window[wanted[name] :]

    def _job_order(
        self, stmt: sa.Select, columns: Any, query: JobQuery, *, several: bool = False
    ) -> sa.Select:
        """``stmt`` in page order: by timeperiod (newest first unless the query says oldest),
        then by process unless the query names one. ``several``: ``stmt`` filters one process
        by several states."""
        order_key = columns.timeperiod
        if several and self.engine.dialect.name == "sqlite":
            # The scheduler's active window (a few jobs of one process in some states). SQLite's
            # planner would walk the unique (process, timeperiod) index to avoid a sort, reading
            # every historical job of the process; ``+timeperiod`` (no index can order by it)
            # makes it use the (process, state, timeperiod) index and sort the few matches.
            # With one state that index is in page order already and SQLite takes it.
            order_key = sa.literal_column(f"+{job_table.name}.timeperiod")
        stmt = stmt.order_by(order_key.desc() if query.newest_first else order_key.asc())
        if query.process is None:
            # With one process the second key is constant; leaving it out lets MySQL read the
            # (process, timeperiod) index in order instead of sorting.
            stmt = stmt.order_by(columns.process.asc())
        return stmt

    def transition_job(
        self,
        process: str,
        timeperiod: str,
        *,
        expected_state: JobState,
        new_state: JobState,
        event: Event,
        changes: Mapping[str, Any] | None = None,
        expected_version: int | None = None,
    ) -> Job:
        """Compare-and-set the job's state with ``changes``; the event commits with it."""
        values = _job_values(changes, new_state, event.at)
        key = f"{process}/{timeperiod}"

        def work(conn: sa.Connection) -> Job:
            row = self._cas(
                conn,
                job_table,
                {"process": process, "timeperiod": timeperiod},
                entity="job",
                key=key,
                expected_state=expected_state,
                expected_version=expected_version,
                values=values,
            )
            self._add_event(conn, event)
            return rows.job_from(row)

        return self._write(work, entity="job", key=key)

    def transition_jobs(
        self, steps: Sequence[JobTransition]
    ) -> list[Job | NotFound | StateConflict]:
        """Several compare-and-sets in one transaction (:meth:`SqlCore._cas_many`: a few
        statements whatever their number), each step's event with it in one insert."""
        cas = []
        for step in steps:  # bad changes: refused now, before the transaction
            values = _job_values(step.changes, step.new_state, step.event.at)
            cas.append(_job_cas(step.process, step.timeperiod, step, values))
        if not cas:
            return []

        def work(conn: sa.Connection) -> list[Job | NotFound | StateConflict]:
            stored = self._cas_many(conn, job_table, _JOB_KEY, cas, entity="job")
            self._add_events(
                conn,
                (s.event for s, r in zip(steps, stored, strict=True) if not _refused(r)),
            )
            return [r if _refused(r) else rows.job_from(r) for r in stored]

        return self._write(work, entity="job", key=f"{len(cas)} jobs")

    def start_jobs(
        self, starts: Sequence[JobStart]
    ) -> list[tuple[Job, UnitOfWork] | NotFound | StateConflict | DuplicateKey]:
        """Several starts in one transaction: the units of work already stored under their
        keys read in one statement, the jobs compare-and-set together
        (:meth:`SqlCore._cas_many`), the new units of work and every event inserted in one
        statement each. Should another writer take a unit of work's key in between
        (PostgreSQL, MariaDB), the starts run again one by one (:meth:`start_job`)."""
        for start in starts:
            self._check_start(start.process, start.timeperiod, start.uow)
        prepared = [(start, rows.uow_row(start.uow)) for start in starts]  # bad values: now
        if not prepared:
            return []

        def work(
            conn: sa.Connection,
        ) -> list[tuple[Job, UnitOfWork] | NotFound | StateConflict | DuplicateKey]:
            twins = _stored_by_key(conn, [row for _, row in prepared])
            done: list[Any] = [None] * len(prepared)
            cas: list[CasStep] = []
            casting: list[tuple[int, UnitOfWork | None]] = []
            for i, (start, uow_row) in enumerate(prepared):
                twin = twins.get(_uow_key(uow_row))
                if twin is not None:
                    try:
                        twin = self._start_twin(start.timeperiod, start.uow, twin)
                    except DuplicateKey as exc:
                        done[i] = exc
                        continue
                values = _job_values(
                    {"uow_id": (twin or start.uow).id}, start.new_state, start.event.at
                )
                cas.append(_job_cas(start.process, start.timeperiod, start, values))
                casting.append((i, twin))
            stored = self._cas_many(conn, job_table, _JOB_KEY, cas, entity="job")
            inserts: list[dict[str, Any]] = []
            events: list[Event] = []
            for (i, twin), answer in zip(casting, stored, strict=True):
                if _refused(answer):
                    done[i] = answer
                    continue
                start, uow_row = prepared[i]
                linked = twin
                if linked is None:
                    inserts.append(uow_row)
                    events.append(start.uow_event)
                    linked = rows.uow_from(uow_row)
                events.append(self._start_event(start.event, linked, adopted=twin is not None))
                done[i] = (rows.job_from(answer), linked)
            if inserts:
                conn.execute(_INSERT_UOW, inserts)
            self._add_events(conn, events)
            return done

        try:
            return self._write(work, entity="uow", key=f"{len(prepared)} job starts")
        except DuplicateKey:
            return super().start_jobs(starts)

    def start_job(
        self,
        process: str,
        timeperiod: str,
        *,
        expected_state: JobState,
        expected_version: int,
        new_state: JobState,
        event: Event,
        uow: UnitOfWork,
        uow_event: Event,
    ) -> tuple[Job, UnitOfWork]:
        """Compare-and-set the job, insert its unit of work, both events: one transaction.

        The job's row is updated first, so of racing callers the others wait on its lock (or,
        on SQLite, for the write transaction) and then find the state changed: they insert
        nothing. A unit of work already stored under the key (which only a start interrupted
        under an older Tactus can leave on SQL) is linked instead of inserted.
        """
        self._check_start(process, timeperiod, uow)
        uow_row = rows.uow_row(uow)  # bad values: refused before the transaction
        values = _job_values({"uow_id": uow.id}, new_state, event.at)
        key = f"{process}/{timeperiod}"
        uow_key = {
            name: uow_row[name]
            for name in ("process", "start_timeperiod", "end_timeperiod", "run_key")
        }

        def work(conn: sa.Connection) -> tuple[Job, UnitOfWork]:
            stored = self._get_row(conn, uow_table, uow_key)
            twin = None
            if stored is not None:
                twin = self._start_twin(timeperiod, uow, rows.uow_from(stored))
            row = self._cas(
                conn,
                job_table,
                {"process": process, "timeperiod": timeperiod},
                entity="job",
                key=key,
                expected_state=expected_state,
                expected_version=expected_version,
                values=values if twin is None else {**values, "uow_id": twin.id},
            )
            linked = twin
            if linked is None:
                conn.execute(_INSERT_UOW, uow_row)
                self._add_event(conn, uow_event)
                linked = rows.uow_from(uow_row)
            self._add_event(conn, self._start_event(event, linked, adopted=twin is not None))
            return rows.job_from(row), linked

        return self._write(work, entity="uow", key=f"{key} ({uow.run_key})")

    def _chain_writer(self, chain: JobChain) -> Callable[[sa.Connection], str]:
        """The statements of a step's chain (:attr:`~db.models.UowTransition.chain`), for the
        step's write transaction: the job finished, the next one compare-and-set and its unit
        of work inserted (never linked to one stored under its key: that refuses the chain),
        the events, the message announcing the unit of work; returns that unit of work's id. A
        refusal raises (StateConflict, NotFound, or the insert's IntegrityError) and the caller
        rolls the chain back."""
        finish, start = chain.finish, chain.start
        self._check_start(start.process, start.timeperiod, start.uow)
        uow_row = rows.uow_row(start.uow)  # bad values: refused before the transaction
        moves = [
            (finish, _job_values(finish.changes, finish.new_state, finish.event.at)),
            (start, _job_values({"uow_id": start.uow.id}, start.new_state, start.event.at)),
        ]
        put = message_rows(chain.put, chain.put_at or finish.event.at)[1] if chain.put else []
        events = [
            finish.event,
            start.uow_event,
            *([] if chain.claim_event is None else [chain.claim_event]),
            self._start_event(start.event, start.uow, adopted=False),
        ]
        guard = _chain_guard(start.process, start.timeperiod)

        def write(conn: sa.Connection) -> str:
            for step, values in moves:
                self._cas(
                    conn,
                    job_table,
                    {"process": step.process, "timeperiod": step.timeperiod},
                    entity="job",
                    key=f"{step.process}/{step.timeperiod}",
                    expected_state=step.expected_state,
                    expected_version=step.expected_version,
                    values=values,
                )
            if conn.execute(guard).first() is not None:
                key = f"{start.process}/{start.timeperiod}"
                raise StateConflict("job", key, "the only active job", "another is active")
            conn.execute(_INSERT_UOW, uow_row)
            self._add_events(conn, events)
            put_in(conn, put)
            return start.uow.id

        return write

    def count_jobs(
        self, process: str | Iterable[str] | None = None
    ) -> dict[tuple[str, JobState], int]:
        """Jobs per (process, state), of one process, several or all: read from the kept
        counts (``counts.py``), not counted."""
        found = self._state_counts("job", process, None)
        return {(name, _JOB_STATES[state]): count for name, state, count in found}


_JOB_KEY = ("process", "timeperiod")


def _job_values(
    changes: Mapping[str, Any] | None, new_state: JobState, at: datetime
) -> dict[str, Any]:
    """The column values of a job's compare-and-set: ``changes`` (checked: bad ones refused
    before any transaction), the new state, ``updated_at`` = ``at``."""
    values = rows.normalise(check_changes("job", changes, JOB_CHANGEABLE_FIELDS))
    values["state"] = JobState(new_state).value
    values["updated_at"] = rows.instant(at, "at")
    return values


def _chain_guard(process: str, timeperiod: str) -> sa.Select:
    """A job of ``process`` that forbids a chain once its moves are made (:mod:`db.chain`): one
    started other than the job at ``timeperiod`` (it would hold the only slot), or one still
    active before it (periods start in time order)."""
    c = job_table.c
    started = [JobState.IN_PROGRESS.value, JobState.FINAL_RUN.value]
    active = [state.value for state in ACTIVE_JOB_STATES]
    other_started = sa.select(c.timeperiod).where(
        c.process == process, c.state.in_(started), c.timeperiod != timeperiod
    )
    older_active = sa.select(c.timeperiod).where(
        c.process == process, c.state.in_(active), c.timeperiod < timeperiod
    )
    return sa.select(sa.literal(1)).where(sa.or_(other_started.exists(), older_active.exists()))


def _job_cas(
    process: str, timeperiod: str, step: JobTransition | JobStart, values: dict[str, Any]
) -> CasStep:
    return CasStep(
        keys=(process, timeperiod),
        label=f"{process}/{timeperiod}",
        expected_state=JobState(step.expected_state).value,
        expected_version=step.expected_version,
        values=values,
    )


def _refused(answer: object) -> bool:
    return isinstance(answer, NotFound | StateConflict)


def _uow_key(row: Mapping[str, Any]) -> tuple[str, str, str, str]:
    return (row["process"], row["start_timeperiod"], row["end_timeperiod"], row["run_key"])


def _stored_by_key(
    conn: sa.Connection, batch: Sequence[Mapping[str, Any]]
) -> dict[tuple[str, str, str, str], UnitOfWork]:
    """The units of work stored under the unique keys of ``batch`` (rows), by key: one read
    per chunk through the (process, timeperiod) index."""
    c = uow_table.c
    wanted = {_uow_key(row) for row in batch}
    found: dict[tuple[str, str, str, str], UnitOfWork] = {}
    pairs = sorted({(row["process"], row["timeperiod"]) for row in batch})
    for start in range(0, len(pairs), KEYS_PER_STATEMENT):
        chunk = pairs[start : start + KEYS_PER_STATEMENT]
        stmt = sa.select(uow_table).where(key_filter((c.process, c.timeperiod), chunk))
        for row in conn.execute(stmt):
            key = _uow_key(row._mapping)
            if key in wanted:
                found[key] = rows.uow_from(row._mapping)
    return found


def _decode_job_cursor(cursor: str) -> tuple[str, str]:
    values = decode_cursor(cursor, 2)
    if not all(isinstance(v, str) for v in values):
        raise InvalidInput("cursor", "is not a cursor this server issued")
    return values[0], values[1]
