"""The counting the fault tests rely on: a run counted twice, a unit of work lost or retried is
reported as such, so that a broken count cannot let a fault test pass."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from db.models import Event, Page
from db.states import UowState
from tests.faults.counting import RunLog, command, tally

T0 = datetime(2026, 1, 5, 13, 0, tzinfo=UTC)


class FakeStore:
    """Just what ``tally`` reads: units of work by process, and their history."""

    def __init__(self, units, history=None) -> None:
        self.units = units
        self.events = history or {}

    def find_uows(self, query, limit, cursor=None):
        return Page([u for u in self.units if u.process == query.process])

    def history(self, entity, entity_id):
        return self.events.get(entity_id, [])


def unit(uow_id: str, state=UowState.PROCESSED, attempt: int = 1, minute: int = 0):
    return SimpleNamespace(
        id=uow_id,
        process="p",
        state=state,
        attempt=attempt,
        error=None,
        created_at=T0 + timedelta(minutes=minute),
    )


def test_counting_command_appends_start_and_end_lines(tmp_path):
    # given the counting command as a worker fills its placeholders
    runs = RunLog(tmp_path / "runs.txt")
    argv = [part.format(uow_id="u1", attempt=2) for part in command(runs.path, 0.0, 3)]
    # when it runs
    code = subprocess.run(argv, timeout=30).returncode
    # then it exits with the code asked for and wrote its start and end
    assert code == 3
    assert runs.events() == [("start", "u1", 2, None), ("end", "u1", 2, 3)]
    assert (runs.started("u1"), runs.ended("u1")) == (1, 1)


def test_counting_tally_counts_lost_twice_retried(tmp_path):
    # given four units of work and what their commands left in the runs file
    runs = RunLog(tmp_path / "runs.txt")
    runs.path.write_text(
        "ok 1\n"
        "ok 1 end:0\n"
        "again 1\n"
        "again 1 end:0\n"
        "again 2\n"  # run after it had succeeded
        "same 1\n"
        "same 1\n"  # one attempt started twice
        "same 1 end:0\n"
        "same 1 end:0\n"
        "stranger 1\n"
        "partial 1"  # no newline yet: being written
    )
    lost_event = Event(
        entity="uow",
        entity_id="again",
        at=T0,
        trigger="fail",
        from_state="in_progress",
        to_state="invalid",
        actor="scheduler",
        reason="worker w lost (no heartbeat for 30 s)",
    )
    store = FakeStore(
        [
            unit("ok"),
            unit("again", attempt=2),
            unit("same"),
            unit("waiting", state=UowState.REQUESTED),
            unit("never", state=UowState.PROCESSED),
            unit("later", state=UowState.REQUESTED, minute=10),
        ],
        {"again": [lost_event]},
    )
    # when counted up to a cutoff that leaves "later" out
    counts = tally(store, runs, ["p"], created_before=T0 + timedelta(minutes=5))
    # then
    assert counts.as_numbers() == {
        "lost": 2,  # waiting (never ended), never (processed without a run)
        "twice": 2,  # again attempt 2, same attempt 1 again
        "retried": 1,  # again
        "lost_worker_failures": 1,
        "unknown_runs": 1,  # stranger
    }, counts
    assert counts.units == 5 and counts.runs == 5
