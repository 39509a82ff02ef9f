"""The worker process end to end: ``python -m workers PROC`` against SQLite and the store queue."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import psutil

from db.state_change import change_uow
from db.states import UowState
from mq.message import status_queue
from tests.polling import wait_until
from tests.workers.conftest import gone
from workers.runner import EXIT_OK, EXIT_RESTART, EXIT_USAGE, run_worker
from workers.shell import OUTPUT_TAIL_BYTES

PROCESSED, NOOP, INVALID = UowState.PROCESSED, UowState.NOOP, UowState.INVALID
REQUESTED, IN_PROGRESS = UowState.REQUESTED, UowState.IN_PROGRESS


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_worker_command_success_fills_placeholders_and_reports(harness):
    # given
    harness.register(
        "echoer",
        command=["sh", "-c", 'echo "run {uow_id} attempt {attempt} $TACTUS_PROCESS"; echo e >&2'],
    )
    uow = harness.submit("echoer")
    # when
    worker = harness.start_worker("echoer")
    done = harness.wait_uow(uow.id, PROCESSED, INVALID)
    # then
    assert done.state == PROCESSED, done.error
    assert done.exit_code == 0 and done.error is None
    assert f"run {uow.id} attempt 1 echoer" in done.output
    assert "e\n" in done.output
    assert done.worker_id.startswith("echoer@testbox:") and done.box_id == "testbox"
    assert done.started_at is not None and done.finished_at >= done.started_at
    assert harness.history(uow.id) == [("claim", "in_progress"), ("succeed", "processed")]
    wait_until(lambda: harness.broker.depth(status_queue(harness.settings.queue_prefix)) == 1)
    worker.send_signal(signal.SIGTERM)
    assert harness.wait_exit(worker) == EXIT_OK
    (record,) = harness.store.list_workers(process="echoer")
    assert record.state == "stopped" and record.pid == worker.pid


def test_worker_failing_command_is_invalid_with_exit_code_and_output(harness):
    harness.register("failer", command=["sh", "-c", "echo partial work; echo oops >&2; exit 3"])
    uow = harness.submit("failer")
    harness.start_worker("failer")
    done = harness.wait_uow(uow.id, PROCESSED, INVALID)
    assert done.state == INVALID
    assert done.exit_code == 3
    assert "partial work" in done.output and "oops" in done.output
    assert done.error == "command exited with code 3"
    events = harness.store.history("uow", uow.id)
    assert events[-1].trigger == "fail" and events[-1].reason == "command exited with code 3"
    assert events[-1].details["exit_code"] == 3


def test_worker_noop_exit_code_is_noop(harness):
    harness.register("nothing", command=["sh", "-c", "exit 7"], noop_exit_code=7)
    uow = harness.submit("nothing")
    harness.start_worker("nothing")
    done = harness.wait_uow(uow.id, PROCESSED, NOOP, INVALID)
    assert done.state == NOOP and done.exit_code == 7 and done.error is None


def test_worker_timeout_kills_the_whole_process_tree(harness):
    # given: a command whose child (the worker's grandchild) would outlive it
    pid_file = harness.tmp / "grandchild.pid"
    harness.register(
        "slowpoke",
        command=["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"],
        timeout=1,
    )
    uow = harness.submit("slowpoke")
    # when
    harness.start_worker("slowpoke")
    done = harness.wait_uow(uow.id, PROCESSED, INVALID)
    # then
    assert done.state == INVALID
    assert done.error.startswith("timed out after 1 s")
    grandchild = int(wait_until(lambda: pid_file.read_text().strip(), what="pid file"))
    wait_until(lambda: gone(grandchild), 5, what=f"grandchild {grandchild} to be gone")


def test_worker_huge_output_keeps_a_bounded_tail(harness):
    # given: 50 MB on stdout and 50 MB on stderr, written in turns (reading one pipe to its end
    # before the other would deadlock)
    script = (
        "import sys\n"
        "chunk = b'x' * (1 << 20)\n"
        "for _ in range(50):\n"
        "    sys.stdout.buffer.write(chunk); sys.stdout.flush()\n"
        "    sys.stderr.buffer.write(chunk); sys.stderr.flush()\n"
        "sys.stdout.buffer.write(b'\\nEND OF OUTPUT\\n')\n"
    )
    harness.register("chatty", command=[sys.executable, "-c", script], timeout=60)
    uow = harness.submit("chatty")
    # when
    harness.start_worker("chatty")
    done = harness.wait_uow(uow.id, PROCESSED, INVALID, deadline=30)
    # then
    assert done.state == PROCESSED, done.error
    assert done.output.endswith("END OF OUTPUT\n")
    assert len(done.output.encode()) <= OUTPUT_TAIL_BYTES + 100
    assert "earlier bytes of output omitted" in done.output


def test_worker_sigterm_releases_the_running_uow_and_exits_0(harness):
    # given: a long command, a short stop grace
    harness.register("sleeper", command=["sleep", "30"], timeout=120)
    uow = harness.submit("sleeper")
    worker = harness.start_worker("sleeper", TACTUS_WORKER_STOP_GRACE="0.3")
    harness.wait_uow(uow.id, IN_PROGRESS)
    children = wait_until(lambda: psutil.Process(worker.pid).children(recursive=True))
    # when
    worker.send_signal(signal.SIGTERM)
    # then
    assert harness.wait_exit(worker) == EXIT_OK
    released = harness.uow(uow.id)
    assert released.state == REQUESTED
    assert released.attempt == 1
    assert released.worker_id is None and released.started_at is None
    assert harness.history(uow.id) == [("claim", "in_progress"), ("release", "requested")]
    assert harness.broker.depth(harness.queue("sleeper")) == 1  # requeued for the next worker
    assert all(gone(child.pid) for child in children)
    (record,) = harness.store.list_workers(process="sleeper")
    assert record.state == "stopped"


def test_worker_duplicate_delivery_runs_once(harness):
    runs = harness.tmp / "runs"
    harness.register("once", command=["sh", "-c", f"echo {{uow_id}} >> {runs}"])
    uow = harness.submit("once")
    harness.publish(uow)  # the same message again
    harness.start_worker("once")
    harness.wait_uow(uow.id, PROCESSED, INVALID)
    queue = harness.queue("once")
    wait_until(
        lambda: sum(harness.store.queue_depth(queue, now=harness.clock.now()).values()) == 0,
        what="both deliveries settled",
    )
    assert _lines(runs) == [uow.id]
    assert harness.history(uow.id) == [("claim", "in_progress"), ("succeed", "processed")]


def test_worker_malformed_message_is_dead_lettered_and_worker_keeps_running(harness):
    harness.register("picky", command=["true"])
    harness.publish_raw("picky", b"{not json")
    harness.publish_raw("picky", b'{"v":1,"kind":"uow","uow_id":"nosuchuow","process":"picky"}')
    uow = harness.submit("picky")
    worker = harness.start_worker("picky")
    assert harness.wait_uow(uow.id, PROCESSED, INVALID).state == PROCESSED
    wait_until(lambda: harness.dead_depth("picky") == 2, what="two dead letters")
    assert worker.poll() is None


def test_python_worker_outcomes(harness):
    record = harness.tmp / "record"
    harness.register("py_ok", worker="tests.fixtures.workers:Succeeding")
    harness.register("py_noop", worker="tests.fixtures.workers:Nooping")
    harness.register("py_wrong", worker="tests.fixtures.workers:WrongReturn")
    ok = harness.submit("py_ok", arguments={"record": str(record)})
    noop = harness.submit("py_noop")
    wrong = harness.submit("py_wrong")
    for name in ("py_ok", "py_noop", "py_wrong"):
        harness.start_worker(name)
    assert harness.wait_uow(ok.id, PROCESSED, INVALID).state == PROCESSED
    assert harness.wait_uow(noop.id, NOOP, INVALID).state == NOOP
    failed = harness.wait_uow(wrong.id, PROCESSED, INVALID)
    assert failed.state == INVALID and "returned 42" in failed.error
    (line,) = _lines(record)
    assert line.split()[0] == ok.id and line.split()[2] == "1"  # setup() ran once


def test_python_worker_exception_is_invalid_with_traceback(harness):
    harness.register("py_fail", worker="tests.fixtures.workers:Failing")
    uow = harness.submit("py_fail")
    harness.start_worker("py_fail")
    done = harness.wait_uow(uow.id, PROCESSED, INVALID)
    assert done.state == INVALID
    assert done.error.startswith("Traceback (most recent call last)")
    assert "in _compute" in done.error
    assert done.error.rstrip().endswith(f"ValueError: boom in {uow.id}")
    assert harness.store.history("uow", uow.id)[-1].reason == f"ValueError: boom in {uow.id}"


def test_python_worker_timeout_fails_the_uow_and_exits_for_a_restart(harness):
    harness.register("py_stuck", worker="tests.fixtures.workers:Sleeping", timeout=1)
    uow = harness.submit("py_stuck", arguments={"seconds": 60})
    worker = harness.start_worker("py_stuck")
    done = harness.wait_uow(uow.id, PROCESSED, INVALID)
    assert done.state == INVALID and done.error.startswith("timed out after 1 s")
    assert harness.wait_exit(worker) == EXIT_RESTART
    wait_until(lambda: harness.broker.depth(status_queue(harness.settings.queue_prefix)) == 1)


def test_worker_concurrency_4_runs_4_uows_at_once(harness):
    # given: each command waits (up to 10 s) until all four have started
    started = harness.tmp / "started"
    started.mkdir()
    barrier = (
        f"touch {started}/{{uow_id}}; i=0; "
        f'while [ "$(ls {started} | wc -l)" -lt 4 ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); '
        f'done; [ "$(ls {started} | wc -l)" -ge 4 ]'
    )
    harness.register("wide", command=["sh", "-c", barrier], timeout=30)
    uows = [harness.submit("wide") for _ in range(4)]
    # when
    harness.start_worker("wide", "--concurrency", "4")
    # then
    for uow in uows:
        done = harness.wait_uow(uow.id, PROCESSED, INVALID, deadline=20)
        assert done.state == PROCESSED, done.error
    assert len({harness.uow(u.id).worker_id for u in uows}) == 1
    (record,) = harness.store.list_workers(process="wide")
    assert record.concurrency == 4


def test_worker_refuses_unknown_process_and_bad_class(harness):
    harness.register("bad_class", worker="tests.fixtures.workers:NotAWorker")
    unknown = harness.start_worker("no_such_process")
    bad = harness.start_worker("bad_class")
    assert harness.wait_exit(unknown) == EXIT_USAGE
    assert harness.wait_exit(bad) == EXIT_USAGE
    assert "not a subclass of workers.base.UowWorker" in harness.logs()


def test_run_worker_in_a_thread_stops_on_stop_event(harness):
    # given: the entry point process_starter calls, with a ready store and broker
    harness.register("inproc", worker="tests.fixtures.workers:Succeeding")
    uow = harness.submit("inproc")
    stop = threading.Event()
    codes: list[int] = []
    thread = threading.Thread(
        target=lambda: codes.append(
            run_worker(
                harness.settings,
                "inproc",
                store=harness.store,
                broker=harness.broker,
                stop_event=stop,
            )
        )
    )
    # when
    thread.start()
    harness.wait_uow(uow.id, PROCESSED)
    stop.set()
    thread.join(10)
    # then
    assert codes == [EXIT_OK]
    (record,) = harness.store.list_workers(process="inproc")
    assert record.state == "stopped"


def test_worker_kills_a_command_whose_uow_was_canceled_meanwhile(harness):
    # given: a long command running
    harness.register("doomed", command=["sleep", "30"], timeout=120)
    uow = harness.submit("doomed")
    worker = harness.start_worker("doomed")
    running = harness.wait_uow(uow.id, IN_PROGRESS)
    children = wait_until(lambda: psutil.Process(worker.pid).children(recursive=True))
    # when: an operator cancels it
    change_uow(harness.store, running, "cancel", clock=harness.clock, actor="user alice")
    # then: the next heartbeat notices, the command dies, the cancel stands
    wait_until(lambda: all(gone(child.pid) for child in children), 10, what="command killed")
    queue = harness.queue("doomed")
    wait_until(
        lambda: sum(harness.store.queue_depth(queue, now=harness.clock.now()).values()) == 0,
        what="the delivery acked",
    )
    assert harness.uow(uow.id).state == UowState.CANCELED
    assert [t for t, _ in harness.history(uow.id)] == ["claim", "cancel"]
    assert worker.poll() is None


def test_python_worker_sigterm_twice_releases_a_stuck_call_without_waiting_the_grace(harness):
    # given: a Python call that would outlast a long grace
    harness.register("py_slow", worker="tests.fixtures.workers:Sleeping", timeout=120)
    uow = harness.submit("py_slow", arguments={"seconds": 60})
    worker = harness.start_worker("py_slow", TACTUS_WORKER_STOP_GRACE="60")
    harness.wait_uow(uow.id, IN_PROGRESS)
    # when: SIGTERM, then (once the worker is waiting out its grace) SIGTERM again
    worker.send_signal(signal.SIGTERM)
    wait_until(lambda: "waiting up to 60 s" in harness.logs(), what="the grace to begin")
    worker.send_signal(signal.SIGTERM)
    # then
    assert harness.wait_exit(worker, deadline=10) == EXIT_OK
    released = harness.uow(uow.id)
    assert released.state == REQUESTED and released.attempt == 1
    assert harness.broker.depth(harness.queue("py_slow")) == 1
