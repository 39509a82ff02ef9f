"""The store contract, races: of racing threads or OS processes exactly one wins, on the
backends that are atomic across both."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime

import pytest

from db import open_store
from db.errors import DuplicateKey, StateConflict
from db.models import FireRecord, Job, UnitOfWork
from db.states import FireOutcome, JobState
from tests.contract.store_helpers import (
    T0,
    _job_uows,
    _race_threads,
    _start,
    event,
    make_job,
    make_uow,
)


def test_race_threads_transition_job_exactly_one_wins(concurrent_store_uri):
    # given
    setup = open_store(concurrent_store_uri)
    job = setup.create_job(make_job())
    stores = [open_store(concurrent_store_uri) for _ in range(6)]

    # when six threads claim the same job at once
    def claim(i):
        return stores[i].transition_job(
            job.process,
            job.timeperiod,
            expected_state=JobState.EMBRYO,
            new_state=JobState.IN_PROGRESS,
            changes={"uow_id": f"u{i}"},
            event=event("job", job.key, "start", "embryo", "in_progress", actor=f"t{i}"),
        )

    results = _race_threads(6, claim)
    # then
    winners = [r for r in results if isinstance(r, Job)]
    losers = [r for r in results if isinstance(r, StateConflict)]
    assert len(winners) == 1 and len(losers) == 5, results
    stored = setup.get_job(job.process, job.timeperiod)
    assert stored.uow_id == winners[0].uow_id
    assert len(setup.history("job", job.key)) == 1
    for s in [setup, *stores]:
        s.close()


@pytest.mark.parametrize("windows", ["same", "different"])
def test_race_threads_start_job_exactly_one_wins(concurrent_store_uri, windows):
    # given an embryo job
    setup = open_store(concurrent_store_uri)
    job = setup.create_job(make_job())
    stores = [open_store(concurrent_store_uri) for _ in range(6)]

    # when six threads start it at once, each with a unit of work of the same key, or each
    # with its own window (a continuous run's end is the hour after the racer's now)
    def start(i):
        end = "2026010514" if windows == "same" else f"202601{15 + i}00"
        return _start(stores[i], job, make_uow(run_key="r0v1", end=end), actor=f"t{i}")

    results = _race_threads(6, start)
    # then one won, the others lost the compare-and-set, and one unit of work exists: linked
    winners = [r for r in results if isinstance(r, tuple)]
    losers = [r for r in results if isinstance(r, StateConflict)]
    assert len(winners) == 1 and len(losers) == 5, results
    stored = setup.get_job(job.process, job.timeperiod)
    ((won, linked),) = winners
    assert stored == won and stored.uow_id == linked.id
    assert _job_uows(setup, job) == [linked]
    assert len(setup.history("job", job.key)) == 1
    for s in [setup, *stores]:
        s.close()


def test_race_threads_create_once(concurrent_store_uri):
    # given
    stores = [open_store(concurrent_store_uri) for _ in range(6)]
    at = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)

    # when six threads create the same job, the same unit of work and the same fire
    def create(i):
        outcome = []
        for action in (
            lambda: stores[i].create_job(make_job()),
            lambda: stores[i].create_uow(make_uow()),
            lambda: stores[i].record_fire(
                FireRecord(
                    process="cron", scheduled_at=at, outcome=FireOutcome.FIRED, recorded_at=T0
                )
            ),
        ):
            try:
                outcome.append(action())
            except DuplicateKey as exc:
                outcome.append(exc)
        return outcome

    results = _race_threads(6, create)
    # then
    assert sum(isinstance(r[0], Job) for r in results) == 1, results
    assert sum(isinstance(r[1], UnitOfWork) for r in results) == 1, results
    assert sum(r[2] is True for r in results) == 1, results
    for s in stores:
        s.close()


def test_race_threads_ensure_jobs_never_duplicates(concurrent_store_uri):
    stores = [open_store(concurrent_store_uri) for _ in range(4)]
    jobs = [make_job(timeperiod=f"202601{d:02d}{h:02d}") for d in (5, 6) for h in range(24)]
    created = _race_threads(4, lambda i: stores[i].ensure_jobs(jobs))
    assert all(isinstance(c, int) for c in created), created
    assert sum(created) == 48
    assert stores[0].count_jobs() == {("site_hourly", JobState.EMBRYO): 48}
    for s in stores:
        s.close()


def _process_racer(uri: str, job_key: tuple[str, str], barrier, results, index: int) -> None:
    store = open_store(uri)
    try:
        barrier.wait(30)
        store.transition_job(
            job_key[0],
            job_key[1],
            expected_state=JobState.EMBRYO,
            new_state=JobState.IN_PROGRESS,
            changes={"uow_id": f"p{index}"},
            event=event("job", "/".join(job_key), "start", "embryo", "in_progress"),
        )
        results[index] = "won"
    except StateConflict:
        results[index] = "lost"
    except Exception as exc:  # noqa: BLE001 - reported back to the parent test
        results[index] = f"error: {exc!r}"
    finally:
        store.close()


@pytest.mark.slow
def test_race_processes_transition_job_exactly_one_wins(concurrent_store_uri):
    # given
    setup = open_store(concurrent_store_uri)
    job = setup.create_job(make_job())
    ctx = multiprocessing.get_context("spawn")
    n = 4
    barrier = ctx.Barrier(n)
    manager = ctx.Manager()
    results = manager.list([None] * n)
    # when four OS processes try the same transition at once
    procs = [
        ctx.Process(
            target=_process_racer,
            args=(concurrent_store_uri, (job.process, job.timeperiod), barrier, results, i),
        )
        for i in range(n)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(90)
    # then
    outcome = list(results)
    manager.shutdown()
    assert sorted(outcome) == ["lost"] * (n - 1) + ["won"], outcome
    assert len(setup.history("job", job.key)) == 1
    assert setup.get_job(job.process, job.timeperiod).state is JobState.IN_PROGRESS
    setup.close()
