"""The built-in ``adhoc`` worker starts on a fresh installation, before any task exists."""

from __future__ import annotations

import signal

from db.builtin import ADHOC
from tests.polling import wait_until


def test_the_adhoc_worker_starts_before_the_first_task(harness):
    # given: nothing submitted yet, so the built-in process is not registered
    assert ADHOC not in {r.name for r in harness.store.list_processes()}
    # when its worker starts (as the supervisor of a fresh installation starts it)
    proc = harness.start_worker(ADHOC)
    try:
        # then it registers itself and waits for tasks, instead of exiting with "no such
        # registered process"
        wait_until(
            lambda: any(w.process == ADHOC for w in harness.store.list_workers()) or proc.poll(),
            what=f"the adhoc worker to register\n{harness.logs()}",
        )
        assert proc.poll() is None, harness.logs()
        assert harness.store.get_process(ADHOC).entry.kind == "freerun"
    finally:
        proc.send_signal(signal.SIGTERM)
    assert harness.wait_exit(proc) == 0
