"""The outcome journal (workers/journal.py): an outcome the store could not take survives the
worker that kept it, and the next worker stores it once, only while it is still needed."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

from db.state_change import change_uow
from db.states import UowState
from workers.journal import Journal, KeptOutcome, journal_dir, replay


def _claimed(harness, worker_id: str = "w-dead"):
    harness.register("nightly", command=["true"])
    uow = harness.submit("nightly", publish=False)
    now = harness.clock.now()
    return change_uow(
        harness.store,
        uow,
        "claim",
        clock=harness.clock,
        actor=f"worker {worker_id}",
        changes={"worker_id": worker_id, "started_at": now, "heartbeat_at": now},
    )


def _kept(uow, worker_id: str = "w-dead", trigger: str = "succeed") -> KeptOutcome:
    return KeptOutcome(
        uow_id=uow.id,
        attempt=uow.attempt,
        trigger=trigger,
        reason="",
        changes={"finished_at": uow.started_at + timedelta(seconds=3), "exit_code": 0},
        details={"attempt": uow.attempt, "exit_code": 0},
        worker_id=worker_id,
    )


def _directory(harness):
    return journal_dir(harness.settings.var_dir, "nightly")


def _replay(harness, notified: list):
    return replay(
        harness.store,
        _directory(harness),
        clock=harness.clock,
        actor="worker w-new (journal)",
        notify=notified.append,
    )


def test_keep_writes_the_outcome_to_disk_and_forget_removes_it(harness):
    # given
    uow = _claimed(harness)
    journal = Journal(_directory(harness))
    # when
    journal.keep(_kept(uow))
    # then: on disk, readable back
    (line,) = journal.path.read_text().splitlines()
    assert KeptOutcome.from_json(line) == _kept(uow)
    assert journal.lock_path.exists()
    # when the store took it
    journal.forget(uow.id)
    journal.close()
    # then nothing is left behind
    assert list(_directory(harness).iterdir()) == []


def test_a_dead_workers_outcome_is_stored_by_the_next_worker(harness):
    # given: a worker kept an outcome, then died (SIGKILL: its lock went with it)
    uow = _claimed(harness)
    script = (
        "import sys; from pathlib import Path; from datetime import datetime;"
        "from workers.journal import Journal, KeptOutcome;"
        "j = Journal(Path(sys.argv[1]));"
        "j.keep(KeptOutcome.from_json(sys.argv[2]));"
        "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(_directory(harness)), _kept(uow).to_json()],
        cwd=os.getcwd(),
        check=False,
    )
    assert len(list(_directory(harness).glob("*.jsonl"))) == 1
    notified: list = []
    # when the next worker starts
    assert _replay(harness, notified) == 1
    # then the unit of work is processed, from the first run, and nothing is left to replay
    stored = harness.store.get_uow(uow.id)
    assert stored.state is UowState.PROCESSED and stored.attempt == 1
    assert stored.exit_code == 0 and stored.finished_at == _kept(uow).changes["finished_at"]
    assert [u.id for u in notified] == [uow.id]
    assert list(_directory(harness).iterdir()) == []
    assert _replay(harness, notified) == 0


def test_a_living_workers_journal_is_left_alone(harness):
    uow = _claimed(harness)
    journal = Journal(_directory(harness))
    journal.keep(_kept(uow))  # this process holds the lock: it is alive
    assert _replay(harness, []) == 0
    assert harness.store.get_uow(uow.id).state is UowState.IN_PROGRESS
    assert journal.path.exists()


def test_an_outcome_no_longer_needed_is_dropped_not_stored(harness):
    # given: the kept outcome's unit of work was declared lost and failed meanwhile
    uow = _claimed(harness)
    journal = Journal(_directory(harness))
    journal.keep(_kept(uow))
    os.close(journal._owner)  # the worker's death, as far as the lock goes
    change_uow(harness.store, uow, "fail", clock=harness.clock, actor="scheduler")
    # when
    assert _replay(harness, []) == 0
    # then: the scheduler's decision stands, and the journal is gone
    assert harness.store.get_uow(uow.id).state is UowState.INVALID
    assert list(_directory(harness).iterdir()) == []


def test_an_unreadable_line_is_dropped_and_the_rest_replayed(harness):
    uow = _claimed(harness)
    directory = _directory(harness)
    directory.mkdir(parents=True)
    (directory / "1-abc.lock").write_text("")
    (directory / "1-abc.jsonl").write_text("not json\n" + _kept(uow).to_json() + "\n")
    assert _replay(harness, []) == 1
    assert harness.store.get_uow(uow.id).state is UowState.PROCESSED
