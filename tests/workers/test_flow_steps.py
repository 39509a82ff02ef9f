"""Steps of a flow run in a real worker process: results handed downstream (commands and worker
classes), the 64 KiB limit, and cancel of a flow run killing its running step's process group."""

from __future__ import annotations

import json
import os

import psutil

from db import flows
from db.clock import SystemClock
from db.models import ProcessEntry, ProcessRecord, StepEntry
from db.states import ProcessKind, ProcessSource, UowKind, UowState
from db.uow_factory import create_once
from tests.polling import wait_until


def _flow(harness, *steps: StepEntry) -> str:
    entry = ProcessEntry(name="etl", kind=ProcessKind.FREERUN, trigger="every 3600", steps=steps)
    now = harness.clock.now()
    harness.store.insert_process(
        ProcessRecord(entry=entry, source=ProcessSource.API, created_at=now, updated_at=now)
    )
    run, _ = create_once(
        harness.store,
        entry,
        clock=SystemClock(),
        actor="test",
        reason="test",
        kind=UowKind.FREERUN,
        start="20261207030000",
        end="20261207030000",
        run_key="r1",
    )
    harness.publish(run)
    return run.id


def test_results_reach_downstream_commands_and_worker_classes(harness, tmp_path):
    seen = tmp_path / "seen.json"
    run_id = _flow(
        harness,
        StepEntry(
            name="extract",
            # braces are placeholders in a command: a literal one is doubled
            command='printf \'{{"rows": 3}}\' > "$TACTUS_RESULT"',
            shell=True,
        ),
        StepEntry(name="transform", worker="tests.fixtures.workers:HandsOn"),
        StepEntry(name="load", command=f'cp "$TACTUS_UPSTREAM" {seen}', shell=True),
    )
    harness.start_worker("etl")
    harness.wait_uow(run_id, UowState.PROCESSED, deadline=30)
    steps = flows.steps_of(harness.store, run_id)
    assert steps["extract"].result == {"rows": 3}
    assert steps["transform"].arguments["upstream"] == {"extract": {"rows": 3}}
    assert steps["transform"].result == {"from": "transform", "saw": {"extract": {"rows": 3}}}
    assert json.loads(seen.read_text()) == {
        "transform": {"from": "transform", "saw": {"extract": {"rows": 3}}}
    }


def test_a_result_over_64_kib_makes_the_step_invalid_saying_so(harness, tmp_path):
    run_id = _flow(
        harness,
        StepEntry(name="big", worker="tests.fixtures.workers:HandsTooMuch", retries=0),
        StepEntry(
            name="shell_big",
            command="head -c 70000 /dev/zero | tr '\\0' x | sed 's/.*/{{\"b\": \"&\"}}/' "
            '> "$TACTUS_RESULT"',
            shell=True,
            retries=0,
            depends_on=(),
        ),
    )
    harness.start_worker("etl")
    wait_until(
        lambda: (
            {s.state for s in flows.steps_of(harness.store, run_id).values()} == {UowState.INVALID}
        ),
        15,
        what="both steps invalid",
    )
    steps = flows.steps_of(harness.store, run_id)
    for name in ("big", "shell_big"):
        assert "65536 bytes (64 KiB)" in (steps[name].error or ""), steps[name].error
        assert steps[name].result is None


def test_cancel_of_a_flow_run_kills_its_running_step_process_group(harness, tmp_path):
    pids = tmp_path / "pids"
    run_id = _flow(
        harness,
        StepEntry(
            name="long",
            command=f"sleep 60 & echo $! >> {pids}; echo $$ >> {pids}; wait",
            shell=True,
        ),
        StepEntry(name="after", command="true", shell=True),
    )
    harness.start_worker("etl")
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2, 15, what="started")
    running = [int(p) for p in pids.read_text().split()]
    assert all(psutil.pid_exists(p) for p in running)
    # when the flow run is canceled by hand
    flows.cancel(
        harness.store,
        harness.store.get_uow(run_id),
        clock=SystemClock(),
        actor="test",
        reason="by hand",
    )
    # then the running step's whole process group is killed and nothing else runs
    wait_until(lambda: not any(_alive(p) for p in running), 15, what="the step's group killed")
    steps = flows.steps_of(harness.store, run_id)
    assert steps["long"].state is UowState.CANCELED
    assert steps["after"].state is UowState.CANCELED
    assert harness.store.get_uow(run_id).state is UowState.CANCELED


def _state(harness, run_id: str, step: str) -> UowState | None:
    found = flows.steps_of(harness.store, run_id).get(step)
    return None if found is None else found.state


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except OSError:  # pragma: no cover
        return os.path.exists(f"/proc/{pid}")


def test_a_step_meant_for_other_boxes_is_left_to_them(harness, tmp_path):
    # given a flow whose second branch may only run on boxes named "gpu.*" (this one is testbox)
    ran = tmp_path / "ran"
    run_id = _flow(
        harness,
        StepEntry(name="here", command=f"echo here >> {ran}", shell=True, depends_on=()),
        StepEntry(
            name="elsewhere",
            command=f"echo elsewhere >> {ran}",
            shell=True,
            depends_on=(),
            boxes=("gpu.*",),
        ),
    )
    harness.start_worker("etl")
    wait_until(
        lambda: _state(harness, run_id, "here") is UowState.PROCESSED,
        15,
        what="the step of this box processed",
    )
    # then the other one is handed back, still requested, and never ran here
    wait_until(
        lambda: "is for other boxes than testbox; handed back" in harness.logs(),
        15,
        what="the other box's step handed back",
    )
    elsewhere = flows.steps_of(harness.store, run_id)["elsewhere"]
    assert elsewhere.state is UowState.REQUESTED and elsewhere.worker_id is None
    assert ran.read_text().split() == ["here"]
    assert harness.store.get_uow(run_id).state is UowState.IN_PROGRESS
