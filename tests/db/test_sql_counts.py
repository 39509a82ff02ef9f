"""Behaviour only the SQL store has: the counts by (process, state) kept by triggers
(``db/backends/sql/counts.py``) survive rows deleted by hand, are built for a store made before
them, and stay exact with writers and folds running at once. The contract (counts equal to the
rows through the store's own writes) is in ``tests/contract/test_store_counts.py``."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from db import open_store
from db.backends.sql import counts
from db.backends.sql.schema import jobs, state_count_deltas, state_counts, uows
from db.states import JobState, UowState
from tests.conftest import fresh_store_uri
from tests.contract.store_helpers import event, make_job, make_uow

SQL_BACKENDS = ["sqlite", "postgresql", "mariadb"]


def _grouped(store) -> tuple[dict, dict]:
    """The counts by a GROUP BY over the rows themselves."""
    with store.engine.connect() as conn:
        job_rows = conn.execute(
            sa.select(jobs.c.process, jobs.c.state, sa.func.count()).group_by(
                jobs.c.process, jobs.c.state
            )
        ).all()
        uow_rows = conn.execute(
            sa.select(uows.c.process, uows.c.state, sa.func.count())
            .where(uows.c.parent.is_(None))
            .group_by(uows.c.process, uows.c.state)
        ).all()
    return (
        {(p, JobState(s)): n for p, s, n in job_rows},
        {(p, UowState(s)): n for p, s, n in uow_rows},
    )


def _fill(store, n: int = 30, key: str = "") -> None:
    store.ensure_jobs(make_job("a", f"20260105{h:02d}") for h in range(5))
    made = store.create_uows(
        [(make_uow(process=f"p{i % 3}", run_key=f"{key}{i}"), None) for i in range(n)]
    )
    for uow in made[: n // 2]:
        store.transition_uow(
            uow.id,
            expected_state=UowState.REQUESTED,
            new_state=UowState.IN_PROGRESS,
            event=event("uow", uow.id, "claim", "requested", "in_progress"),
        )


@pytest.fixture(params=SQL_BACKENDS)
def sql_store(request, tmp_path, nx_server):
    with fresh_store_uri(request.param, tmp_path, nx_server) as uri:
        store = open_store(uri)
        try:
            store.init_schema()
            yield store
        finally:
            store.close()


def test_counts_follow_rows_deleted_and_moved_by_hand(sql_store):
    # given
    _fill(sql_store)
    # when rows are purged and moved outside the store's methods
    with sql_store.engine.begin() as conn:
        conn.execute(sa.delete(uows).where(uows.c.process == "p1"))
        conn.execute(sa.delete(jobs).where(jobs.c.timeperiod == "2026010500"))
        conn.execute(sa.update(uows).where(uows.c.process == "p2").values(state="noop"))
    # then
    assert (sql_store.count_jobs(), sql_store.count_uows()) == _grouped(sql_store)
    assert not any(p == "p1" for p, _ in sql_store.count_uows())


def test_a_fold_moves_the_ledger_into_the_counts(sql_store):
    # given
    _fill(sql_store)
    before = (sql_store.count_jobs(), sql_store.count_uows())
    # when
    folded = sql_store.fold_state_counts()
    # then
    assert folded > 0
    with sql_store.engine.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(state_count_deltas)).scalar() == 0
        )
        assert conn.execute(sa.select(sa.func.count()).select_from(state_counts)).scalar() > 0
    assert (sql_store.count_jobs(), sql_store.count_uows()) == before == _grouped(sql_store)


@pytest.mark.parametrize("returning", [True, False], ids=["delete_returning", "locked_read"])
def test_a_large_ledger_is_folded_in_batches(sql_store, returning, monkeypatch):
    # given a ledger of several batches (a bulk load, or a burst with no reader), folded by
    # DELETE ... RETURNING or, as on MySQL, by a locking read and a delete
    monkeypatch.setattr(sql_store.engine.dialect, "delete_returning", returning)
    monkeypatch.setattr(counts, "FOLD_BATCH", 7)
    _fill(sql_store)
    before = _grouped(sql_store)
    # when
    folded = sql_store.fold_state_counts()
    # then every row was folded, a batch per transaction
    assert folded > 7 * 3
    with sql_store.engine.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(state_count_deltas)).scalar() == 0
        )
    assert (sql_store.count_jobs(), sql_store.count_uows()) == before


@pytest.mark.parametrize("backend", SQL_BACKENDS)
def test_init_schema_builds_the_counts_of_a_store_made_before_them(backend, tmp_path, nx_server):
    with fresh_store_uri(backend, tmp_path, nx_server) as uri:
        store = open_store(uri)
        try:
            # given a store with rows and no counts (as an earlier release left it)
            store.init_schema()
            _fill(store)
            with store.engine.begin() as conn:
                for name in ("jobs", "uows"):
                    for suffix in ("", "_insert", "_update", "_delete"):
                        drop = f"DROP TRIGGER IF EXISTS tactus_count_{name}{suffix}"
                        if backend == "postgresql":
                            drop += f" ON {name}"
                        conn.exec_driver_sql(drop)
                state_counts.drop(conn)
                state_count_deltas.drop(conn)
            # when
            store.init_schema()
            # then the counts are built from the rows, and kept from then on
            assert (store.count_jobs(), store.count_uows()) == _grouped(store)
            _fill(store, 6, "again")
            store.create_uow(make_uow(process="p9"))
            assert (store.count_jobs(), store.count_uows()) == _grouped(store)
            # and a second init_schema changes nothing
            store.init_schema()
            assert (store.count_jobs(), store.count_uows()) == _grouped(store)
        finally:
            store.close()


@pytest.mark.parametrize("returning", [True, False], ids=["delete_returning", "locked_read"])
@pytest.mark.parametrize("backend", SQL_BACKENDS)
def test_counts_stay_exact_with_writers_and_folds_at_once(
    backend, returning, tmp_path, nx_server, monkeypatch
):
    # given a store, and four writers each claiming and finishing its own units of work while
    # two other stores (two mx) fold the ledger over and over (by DELETE ... RETURNING, or as
    # on MySQL by a locking read and a delete)
    with fresh_store_uri(backend, tmp_path, nx_server) as uri:
        stores = [open_store(uri) for _ in range(3)]
        writer_store, folders = stores[0], stores[1:]
        for store in folders:
            monkeypatch.setattr(store.engine.dialect, "delete_returning", returning)
        try:
            writer_store.init_schema()
            made = writer_store.create_uows(
                [(make_uow(process=f"p{i % 5}", run_key=str(i)), None) for i in range(200)]
            )
            stop = threading.Event()
            errors: list[BaseException] = []

            def write(share) -> None:
                try:
                    for uow in share:
                        for src, dst in (
                            (UowState.REQUESTED, UowState.IN_PROGRESS),
                            (UowState.IN_PROGRESS, UowState.PROCESSED),
                        ):
                            writer_store.transition_uow(
                                uow.id,
                                expected_state=src,
                                new_state=dst,
                                event=event("uow", uow.id, "step", src, dst),
                            )
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

            def fold(store) -> None:
                try:
                    while not stop.is_set():
                        store.fold_state_counts()
                        store.count_uows()
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

            writers = [threading.Thread(target=write, args=(made[i::4],)) for i in range(4)]
            folding = [threading.Thread(target=fold, args=(s,)) for s in folders]
            # when
            for thread in folding + writers:
                thread.start()
            for thread in writers:
                thread.join()
            stop.set()
            for thread in folding:
                thread.join()
            # then
            assert errors == []
            assert writer_store.count_uows() == _grouped(writer_store)[1]
            assert writer_store.count_uows() == {
                (f"p{i}", UowState.PROCESSED): 40 for i in range(5)
            }
            writer_store.fold_state_counts()
            assert writer_store.count_uows() == _grouped(writer_store)[1]
        finally:
            for store in stores:
                store.close()
