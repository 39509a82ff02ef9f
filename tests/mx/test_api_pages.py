"""Lists over big histories: several states in one filter page like one state does, and the
process list counts exactly for each page."""

from __future__ import annotations

from db.credentials import Role
from db.states import JobState, ProcessKind, UowState
from tests.contract.store_helpers import make_job, make_record, make_uow

#: A state for each unit of work made by ``_fill``, unevenly spread.
STATES = [UowState.PROCESSED, UowState.CANCELED, UowState.NOOP, UowState.PROCESSED]


def _all_pages(client, path: str, headers) -> list[dict]:
    items, cursor, pages = [], None, 0
    while True:
        response = client.get(path + (f"&cursor={cursor}" if cursor else ""), headers=headers)
        assert response.status_code == 200, response.json
        items += response.json["items"]
        pages += 1
        assert pages < 50, "pagination does not end"
        cursor = response.json["next_cursor"]
        if cursor is None:
            return items


def _fill(store) -> list:
    made = []
    for i in range(23):
        uow = make_uow(
            "a" if i % 3 else "b",
            f"2026010513{i:02d}00",
            id=f"{i:024x}",
            timeperiod=None,
            state=STATES[i % len(STATES)] if i % 5 else UowState.INVALID,
        )
        store.create_uow(uow)
        made.append(uow)
    return made


def test_uows_list_several_states_pages_newest_first(client, auth, app_store):
    # given
    made = _fill(app_store)
    headers = auth.headers(Role.VIEWER)
    for process in (None, "a"):
        query = "state=canceled,invalid,noop&limit=2" + (f"&process={process}" if process else "")
        # when
        found = _all_pages(client, f"/api/v1/uows?{query}", headers)
        # then
        expected = sorted(
            (
                u.id
                for u in made
                if u.state in {UowState.CANCELED, UowState.INVALID, UowState.NOOP}
                and process in (None, u.process)
            ),
            reverse=True,
        )
        assert [u["id"] for u in found] == expected


def test_uows_list_every_state_is_no_filter(client, auth, app_store):
    made = _fill(app_store)
    every = ",".join(s.value for s in UowState)
    found = _all_pages(client, f"/api/v1/uows?state={every}&limit=5", auth.headers(Role.VIEWER))
    assert [u["id"] for u in found] == sorted((u.id for u in made), reverse=True)


def test_processes_list_pages_count_each_process(client, auth, app_store):
    # given 5 managed processes with jobs and 2 freeruns with units of work
    for n in range(5):
        app_store.insert_process(make_record(f"m{n}"))
        app_store.ensure_jobs(make_job(f"m{n}", f"20260105{h:02d}") for h in range(n + 1))
    for name in ("f0", "f1"):
        app_store.insert_process(make_record(name, ProcessKind.FREERUN))
    app_store.create_uow(make_uow("f1", "20260105130000", timeperiod=None, state=UowState.NOOP))
    # when
    found = _all_pages(client, "/api/v1/processes?limit=3", auth.headers(Role.VIEWER))
    # then
    counts = {p["name"]: p["counts"] for p in found}
    assert counts == {
        **{f"m{n}": {JobState.EMBRYO.value: n + 1} for n in range(5)},
        "f0": {},
        "f1": {UowState.NOOP.value: 1},
    }
    assert [p["name"] for p in found] == sorted(counts)
