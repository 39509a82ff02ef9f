"""No silent zombie threads: a thread of a daemon that dies ends its process, loudly."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from db.threads import EXIT_THREAD_DIED

DAEMON = textwrap.dedent(
    """
    import logging, sys, threading, time
    from db.threads import end_process_when_a_thread_dies

    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    end_process_when_a_thread_dies()

    def listen():
        raise KeyError("poison")

    threading.Thread(target=listen, name="status-listener", daemon=True).start()
    time.sleep(30)  # the main thread would go on for ever without the hook
    print("still up")
    """
)


def test_a_thread_that_dies_ends_its_process_with_a_line_naming_it():
    done = subprocess.run(
        [sys.executable, "-c", DAEMON], capture_output=True, text=True, timeout=20, check=False
    )
    assert done.returncode == EXIT_THREAD_DIED
    assert "still up" not in done.stdout
    assert "thread status-listener died: KeyError: 'poison'" in done.stderr


def test_a_thread_that_exits_on_purpose_does_not_end_the_process():
    script = DAEMON.replace('raise KeyError("poison")', "raise SystemExit(0)").replace(
        "time.sleep(30)", "time.sleep(0.5)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=20, check=False
    )
    assert done.returncode == 0 and "still up" in done.stdout
