"""A worker killed mid-unit-of-work: the reaper fails it, a retry runs it on a new worker."""

from __future__ import annotations

import contextlib
from pathlib import Path

import psutil

from db.liveness import reap_lost_workers
from db.state_change import change_uow
from db.states import UowState
from tests.polling import wait_until


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _runs(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_sigkilled_worker_is_reaped_and_a_retry_completes_the_uow(harness):
    # given: a command that hangs on its first run and succeeds on the second
    runs = harness.tmp / "runs"
    # (which also starts a grandchild that outlives nothing it should)
    harness.register(
        "fragile",
        command=[
            "sh",
            "-c",
            f'echo run >> {runs}; [ "$(wc -l < {runs})" -ge 2 ] || (sleep 300 & sleep 60)',
        ],
        timeout=120,
        retries=2,
    )
    uow = harness.submit("fragile", retries=2)
    first = harness.start_worker("fragile")
    harness.wait_uow(uow.id, UowState.IN_PROGRESS)
    wait_until(lambda: _runs(runs) == 1, what="the first run")
    orphans = wait_until(
        lambda: (
            (found := psutil.Process(first.pid).children(recursive=True))
            and len(found) >= 3
            and found
        ),
        what="the command and its two sleeps",
    )
    try:
        # when: the worker dies without a word, and the scheduler's reaper looks (heartbeat
        # every 0.2 s, 3 misses)
        first.kill()
        first.wait(10)
        # (its command and the grandchild run on, reparented: the worker could not end them)
        assert all(_alive(orphan) for orphan in orphans)
        failed = wait_until(
            lambda: reap_lost_workers(
                harness.store,
                now=harness.clock.now(),
                interval=0.2,
                misses=3,
                clock=harness.clock,
            ),
            what="the reaper to fail the unit of work",
        )
        # then
        assert failed == [uow.id]
        invalid = harness.uow(uow.id)
        assert invalid.state == UowState.INVALID
        assert invalid.error.startswith(f"worker {invalid.worker_id} lost (no heartbeat for")
        (record,) = harness.store.list_workers(process="fragile")
        assert record.state == "lost"
        # when: the scheduler retries it, and a new worker comes up
        retried = change_uow(
            harness.store,
            invalid,
            "retry",
            clock=harness.clock,
            actor="test scheduler",
            changes={"attempt": invalid.attempt + 1},
        )
        harness.publish(retried)
        harness.start_worker("fragile")
        # then the new worker ends what the dead one left running before it takes the retry
        wait_until(
            lambda: not any(_alive(orphan) for orphan in orphans),
            deadline=15,
            what="the orphaned command and grandchild to be ended",
        )
        done = harness.wait_uow(uow.id, UowState.PROCESSED, UowState.INVALID)
        assert done.state == UowState.PROCESSED, done.error
        assert done.attempt == 2
        assert _runs(runs) == 2
        assert [t for t, _ in harness.history(uow.id)] == [
            "claim",
            "fail",
            "retry",
            "claim",
            "succeed",
        ]
    finally:
        for orphan in orphans:  # the first run's command outlived its SIGKILLed worker
            with contextlib.suppress(psutil.Error):
                orphan.kill()
