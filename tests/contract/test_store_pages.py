"""The store contract for what lists read on a big history: pages filtered by several states
(the same order and pages, without gaps or repeats, as one filter would give) and counts of
several processes in one call, on every backend."""

from __future__ import annotations

import itertools

import pytest

from db.models import JobQuery, UowQuery
from db.states import JobState, UowState
from tests.contract.store_helpers import _all_pages, make_job, make_uow

#: A state for each (process, hour): every state shows up, unevenly, in both processes.
STATES = list(JobState)


def _fill(store) -> list[tuple[str, str, JobState]]:
    made = []
    for process, hour in itertools.product(("a_hourly", "b_hourly"), range(20)):
        state = STATES[(hour * 7 + len(process) * (process == "b_hourly")) % len(STATES)]
        timeperiod = f"20260105{hour:02d}"
        store.create_job(make_job(process, timeperiod, state=state))
        made.append((process, timeperiod, state))
    return made


@pytest.mark.parametrize("newest_first", [True, False], ids=["newest", "oldest"])
@pytest.mark.parametrize("process", [None, "b_hourly"], ids=["all", "one_process"])
@pytest.mark.parametrize(
    "states",
    [
        frozenset({JobState.PROCESSED, JobState.SKIPPED}),
        frozenset({JobState.EMBRYO, JobState.IN_PROGRESS, JobState.FINAL_RUN}),
        frozenset(JobState),
    ],
    ids=["two", "three", "all"],
)
def test_find_jobs_several_states_pages_in_order(store, states, process, newest_first):
    # given
    made = _fill(store)
    query = JobQuery(process=process, states=states, newest_first=newest_first)
    # when
    found = _all_pages(lambda **kw: store.find_jobs(query, **kw), limit=3)
    # then
    expected = sorted(
        ((p, t) for p, t, s in made if s in states and process in (None, p)),
        key=lambda k: (-int(k[1]) if newest_first else int(k[1]), k[0]),
    )
    assert [(j.process, j.timeperiod) for j in found] == expected
    assert all(j.state in states for j in found)


def test_find_jobs_several_states_with_bounds(store):
    # given
    made = _fill(store)
    states = frozenset({JobState.NOOP, JobState.PROCESSED, JobState.EMBRYO})
    query = JobQuery(states=states, from_timeperiod="2026010504", to_timeperiod="2026010515")
    # when
    found = _all_pages(lambda **kw: store.find_jobs(query, **kw), limit=4)
    # then
    expected = sorted(
        ((p, t) for p, t, s in made if s in states and "2026010504" <= t < "2026010515"),
        key=lambda k: (-int(k[1]), k[0]),
    )
    assert [(j.process, j.timeperiod) for j in found] == expected


def test_count_jobs_of_several_processes(store):
    # given
    _fill(store)
    everything = store.count_jobs()
    # when
    several = store.count_jobs(["b_hourly", "missing", "b_hourly"])
    none = store.count_jobs([])
    one = store.count_jobs(iter(["a_hourly"]))
    # then
    assert several == {k: n for k, n in everything.items() if k[0] == "b_hourly"}
    assert one == {k: n for k, n in everything.items() if k[0] == "a_hourly"}
    assert none == {}
    assert sum(everything.values()) == 40


UOW_STATES = list(UowState)


def _fill_uows(store) -> list[tuple[str, str, UowState]]:
    made = []
    for n, process in enumerate(("a_cron", "b_cron") * 12):
        state = UOW_STATES[(n * 5 + len(process)) % len(UOW_STATES)]
        uow = store.create_uow(make_uow(process, run_key=str(n), state=state))
        made.append((uow.id, process, state))
    return made


@pytest.mark.parametrize("newest_first", [True, False], ids=["newest", "oldest"])
@pytest.mark.parametrize("process", [None, "b_cron"], ids=["all", "one_process"])
@pytest.mark.parametrize(
    "states",
    [
        frozenset({UowState.PROCESSED, UowState.INVALID}),
        frozenset({UowState.REQUESTED, UowState.IN_PROGRESS, UowState.CANCELED}),
        frozenset(UowState),
    ],
    ids=["two", "three", "all"],
)
def test_find_uows_several_states_pages_in_order(store, states, process, newest_first):
    # given
    made = _fill_uows(store)
    query = UowQuery(process=process, states=states, newest_first=newest_first)
    # when
    found = _all_pages(lambda **kw: store.find_uows(query, **kw), limit=3)
    # then
    expected = sorted(
        (i for i, p, s in made if s in states and process in (None, p)), reverse=newest_first
    )
    assert [u.id for u in found] == expected
    assert all(u.state in states for u in found)
