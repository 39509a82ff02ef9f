"""What a Python worker prints and logs is its attempt's output (workers/capture.py): per
thread, bounded, and still in the worker's own streams."""

from __future__ import annotations

import logging
import sys
import threading

from db.states import UowState
from workers.capture import capturing
from workers.shell import OutputTail


def test_each_thread_captures_only_its_own_output(capsys):
    # given two threads printing and logging at the same time
    logger = logging.getLogger("tactus.tests.capture")
    logger.setLevel(logging.INFO)
    barrier = threading.Barrier(2)
    tails: dict[str, OutputTail] = {}

    def talk(name: str) -> None:
        with capturing() as tail:
            barrier.wait()
            for i in range(50):
                print(f"{name} print {i}")  # noqa: T201
                logger.warning("%s log %d", name, i)
            tails[name] = tail

    threads = [threading.Thread(target=talk, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    print("outside any capture")  # noqa: T201
    # then each tail holds its thread's 50 prints and 50 log lines, and nothing else
    for name, other in (("a", "b"), ("b", "a")):
        text = tails[name].text()
        assert text.count(f"{name} print ") == 50 and text.count(f"{name} log ") == 50
        assert f"{other} print" not in text and f"{other} log" not in text
        assert "outside any capture" not in text
        assert "WARNING tactus.tests.capture:" in text
    # and everything still reached the process's own stdout
    out = capsys.readouterr().out
    assert out.count("print ") == 100 and "outside any capture" in out


def test_the_capture_keeps_a_bounded_tail():
    with capturing(OutputTail(limit=100)) as tail:
        for i in range(1000):
            sys.stderr.write(f"line {i}\n")
    text = tail.text()
    assert text.startswith("[... ") and "earlier bytes of output omitted" in text
    assert text.rstrip().endswith("line 999") and "line 10\n" not in text


def test_a_worker_class_output_is_stored_with_what_it_returned(harness):
    # given a worker class that prints, writes to stderr and logs
    harness.register("chatty", worker="tests.fixtures.workers:Chatty")
    ok = harness.submit("chatty")
    failing = harness.submit("chatty", arguments={"fail": True})
    harness.start_worker("chatty")
    # when it runs both
    done = harness.wait_uow(ok.id, UowState.PROCESSED, UowState.INVALID)
    failed = harness.wait_uow(failing.id, UowState.PROCESSED, UowState.INVALID)
    # then each attempt's output holds what it said, and the history what it came to
    assert done.state is UowState.PROCESSED
    for uow in (done, failed):
        assert f"printed by {uow.id}" in uow.output
        assert f"to stderr by {uow.id}" in uow.output
        assert f"WARNING tactus.fixtures.chatty: logged by {uow.id}" in uow.output
    assert ok.id not in failed.output and failing.id not in done.output
    assert failed.state is UowState.INVALID and "failed after talking" in failed.error
    returned = {
        u.id: harness.store.history("uow", u.id)[-1].details.get("returned") for u in (done, failed)
    }
    assert returned == {ok.id: "processed", failing.id: "exception"}
