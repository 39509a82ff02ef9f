"""Executors against real daemons (SPEC section 11): racing executors never run a unit of work
twice, an executor killed mid-run loses its lease and the unit of work is retried elsewhere
and processed once, and executors long-polling through a restart of mx reconnect and lose
nothing."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta

from db.states import UowState
from tests.executor.rig import ExecutorRig


def test_two_executors_racing_never_run_a_unit_twice(rig):
    # given two executors of four slots each, waiting for the same process
    rig.up(rig.counting("count"))
    for name in ("a", "b"):
        rig.executor(name, "--slots", "4", "--processes", "count")
    # when forty units of work come at once
    made = rig.trigger("count", 40)
    # then each is processed, and ran exactly once
    rig.wait(lambda: rig.all_processed(made), 90, "forty units processed")
    counts = rig.run_counts()
    assert set(counts) == set(made)
    assert [u for u, n in counts.items() if n != 1] == []
    holders = {rig.store.get_uow(u).worker_id.split("@")[0] for u in made}
    assert holders <= {"http:a", "http:b"}
    workers = rig.api("GET", "/workers")[1]["items"]
    executors = {w["worker_id"]: w for w in workers if w["kind"] == "http"}
    assert len(executors) == 2 and all(w["slots"] == 4 for w in executors.values())


def test_an_executor_killed_mid_unit_loses_its_lease_and_the_unit_runs_elsewhere_once(rig):
    rig.up(rig.counting("slow", seconds=3, retries=2))
    rig.executor("doomed", "--processes", "slow")
    (uow_id,) = rig.trigger("slow")
    rig.wait(lambda: rig.run_counts()[uow_id] == 1, 30, "the first attempt to start")
    assert rig.store.get_uow(uow_id).worker_id.startswith("http:doomed@")
    # when the executor is killed outright in the middle of the run
    rig.kill_executor("doomed", signal.SIGKILL)
    killed_at = datetime.now(UTC)
    # then, once its lease has run out, the unit of work is invalid and retried
    rig.wait(lambda: _failed(rig, uow_id), 30, "the lost attempt to be failed")
    failed = _failed(rig, uow_id)
    assert failed.at - killed_at >= timedelta(seconds=1.0)  # the lease (1.5 s), not at once
    # and another executor runs it to processed, once
    rig.executor("rescuer", "--processes", "slow")
    rig.wait(lambda: rig.all_processed([uow_id]), 60, "the retry to be processed")
    uow = rig.store.get_uow(uow_id)
    assert uow.attempt == 2 and uow.worker_id.startswith("http:rescuer@")
    history = rig.store.history("uow", uow_id)
    assert [e.to_state for e in history].count(UowState.PROCESSED.value) == 1
    assert rig.run_counts()[uow_id] == 2  # the killed attempt and the retry


def _failed(rig: ExecutorRig, uow_id: str):
    for event in rig.store.history("uow", uow_id):
        if event.trigger == "fail":
            return event
    return None


def test_executors_reconnect_after_mx_restarts_and_nothing_is_lost(tmp_path):
    # leases of 10 s: mx's restart (a few seconds) must not outlast them
    rig = ExecutorRig(
        tmp_path, settings={"TACTUS_HEARTBEAT_INTERVAL": "1", "TACTUS_HEARTBEAT_MISSES": "10"}
    )
    try:
        rig.up(rig.counting("steady", seconds=0.3))
        for name in ("a", "b"):
            rig.executor(name, "--slots", "2", "--processes", "steady")
        first = rig.trigger("steady", 10)
        rig.wait(lambda: sum(rig.run_counts().values()) >= 2, 30, "work to flow")
        # when mx dies while the executors long-poll and run, and comes back
        rig.kill("mx")
        for daemon in rig.executors.values():
            rig.wait(lambda d=daemon: d.tap.contains("mx unavailable"), 30, "the outage seen")
        time.sleep(1.0)  # an outage of a few backoffs
        rig.start("mx")
        second = rig.trigger("steady", 10)
        # then every unit of work is processed, each run once, by executors still running
        made = first + second
        rig.wait(lambda: rig.all_processed(made), 90, "all twenty processed")
        counts = rig.run_counts()
        assert {u: counts[u] for u in made} == dict.fromkeys(made, 1)
        for daemon in rig.executors.values():
            assert daemon.alive() and daemon.tap.contains("mx available again")
    finally:
        rig.stop()


def test_sigterm_drains_the_running_unit(rig):
    rig.up(rig.counting("draining", seconds=2))
    rig.executor("d", "--processes", "draining")
    (uow_id,) = rig.trigger("draining")
    rig.wait(lambda: rig.run_counts()[uow_id] == 1, 30, "the run to start")
    assert rig.stop_executor("d") == 0
    assert rig.store.get_uow(uow_id).state is UowState.PROCESSED
    (record,) = [w for w in rig.store.list_workers() if w.worker_id.startswith("http:d@")]
    assert record.state == "stopped"
