"""The store contract, counts by (process, state): ``count_jobs`` and ``count_uows`` stay exact
through every kind of write, on every backend (the SQL stores keep them in a table of their
own, so each step is compared with a count of the rows themselves)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from db.models import JobQuery, UowQuery, UowTransition
from db.states import JobState, UowState
from tests.contract.store_helpers import (
    T0,
    _all_pages,
    _claimed_uow,
    _start,
    event,
    make_job,
    make_uow,
)
from tests.contract.test_store_flows import DIAMOND, Flow, _entry


def _counted_jobs(store) -> dict:
    jobs = _all_pages(lambda **kw: store.find_jobs(JobQuery(), **kw), 100)
    return dict(Counter((job.process, job.state) for job in jobs))


def _counted_uows(store) -> dict:
    uows = _all_pages(lambda **kw: store.find_uows(UowQuery(top_level=True), **kw), 100)
    return dict(Counter((uow.process, uow.state) for uow in uows))


def _assert_exact(store) -> None:
    jobs, uows = _counted_jobs(store), _counted_uows(store)
    assert store.count_jobs() == jobs
    assert store.count_uows() == uows
    for name in {process for process, _ in uows}:
        assert store.count_uows(name) == {k: n for k, n in uows.items() if k[0] == name}
    active = {UowState.REQUESTED, UowState.IN_PROGRESS}
    assert store.count_uows(["a", "b"], states=active) == {
        k: n for k, n in uows.items() if k[0] in ("a", "b") and k[1] in active
    }
    assert store.count_jobs(["a", "b"]) == {k: n for k, n in jobs.items() if k[0] in ("a", "b")}


def _move(store, uow, src: UowState, dst: UowState, trigger: str, **changes):
    return store.transition_uow(
        uow.id,
        expected_state=src,
        new_state=dst,
        changes=changes or None,
        event=event("uow", uow.id, trigger, src, dst),
    )


def test_counts_stay_exact_through_creation_transitions_retries_and_refusals(store):
    # given jobs made one by one and in a batch, and units of work made alone and in a batch
    store.ensure_jobs(make_job("a", f"20260105{h:02d}") for h in range(4))
    store.create_job(make_job("b", state=JobState.SKIPPED))
    lone = store.create_uow(make_uow(process="a"))
    batch = store.create_uows(
        [(make_uow(process="b", run_key=str(i)), None) for i in range(3)]
        + [(make_uow(process="a"), None)]  # a taken key: refused, not counted
    )
    _assert_exact(store)
    # when a job starts (its compare-and-set and its unit of work in one write)
    job = store.get_job("a", "2026010500")
    started, linked = _start(store, job, make_uow(process="a", start="2026010500", run_key="r1"))
    _assert_exact(store)
    # when units of work are claimed, fail, are retried and succeed, one at a time
    claimed = _move(store, lone, UowState.REQUESTED, UowState.IN_PROGRESS, "claim")
    failed = _move(store, claimed, UowState.IN_PROGRESS, UowState.INVALID, "fail")
    retried = _move(store, failed, UowState.INVALID, UowState.REQUESTED, "retry", attempt=2)
    _assert_exact(store)
    # and several together, one refused (a stale expected state) and one on nothing
    first, second = batch[0], batch[1]
    store.transition_uows(
        [
            UowTransition(
                uow_id=first.id,
                expected_state=UowState.REQUESTED,
                new_state=UowState.IN_PROGRESS,
                event=event("uow", first.id, "claim", "requested", "in_progress"),
            ),
            UowTransition(
                uow_id=second.id,
                expected_state=UowState.IN_PROGRESS,
                new_state=UowState.PROCESSED,
                event=event("uow", second.id, "succeed", "in_progress", "processed"),
            ),
            UowTransition(
                uow_id="ghost",
                expected_state=UowState.REQUESTED,
                new_state=UowState.IN_PROGRESS,
                event=event("uow", "ghost", "claim", "requested", "in_progress"),
            ),
        ]
    )
    _assert_exact(store)
    # when a heartbeat changes fields but not the state, and a refused compare-and-set
    beat = _claimed_uow(store, process="b", run_key="hb")
    store.update_uow(
        beat.id,
        expected_state=UowState.IN_PROGRESS,
        changes={"heartbeat_at": T0 + timedelta(seconds=5)},
    )
    try:
        _move(store, retried, UowState.IN_PROGRESS, UowState.PROCESSED, "succeed")
    except Exception:  # noqa: BLE001 - the refusal itself is the contract of other tests
        pass
    _assert_exact(store)
    # when the job finishes with its unit of work
    done = _move(store, linked, UowState.REQUESTED, UowState.IN_PROGRESS, "claim")
    _move(store, done, UowState.IN_PROGRESS, UowState.PROCESSED, "succeed")
    store.transition_job(
        "a",
        "2026010500",
        expected_state=JobState.IN_PROGRESS,
        new_state=JobState.PROCESSED,
        event=event("job", started.key, "finish", "in_progress", "processed"),
        expected_version=started.version,
    )
    # then every count is the rows' count
    _assert_exact(store)
    assert store.count_jobs("a")[("a", JobState.PROCESSED)] == 1
    assert store.count_uows("a", states=[UowState.PROCESSED]) == {("a", UowState.PROCESSED): 1}


def test_counts_stay_exact_over_many_transitions(store):
    # given more transitions than the SQL stores keep unfolded (counts.FOLD_AT is 2,000
    # ledger rows: 600 units of work made, claimed and mostly finished make 2,600)
    made = store.create_uows(
        [(make_uow(process=f"p{i % 7}", run_key=str(i)), None) for i in range(600)]
    )
    for i, uow in enumerate(made):
        claimed = _move(store, uow, UowState.REQUESTED, UowState.IN_PROGRESS, "claim")
        if i % 3:
            _move(store, claimed, UowState.IN_PROGRESS, UowState.PROCESSED, "succeed")
        if i % 50 == 0:
            _assert_exact(store)
    # then
    _assert_exact(store)
    assert sum(store.count_uows(states=[UowState.IN_PROGRESS]).values()) == 200


def test_counts_leave_out_the_steps_of_a_flow_run(store):
    # given a flow run whose steps are made, claimed and finished (a flow run counts once)
    flow = Flow(store, _entry(*DIAMOND))
    _assert_exact(store)
    # when its steps run
    flow.end("extract")
    flow.end("t1")
    flow.fail_for_good("t2")
    # then
    _assert_exact(store)
    assert sum(store.count_uows("etl").values()) == 1
