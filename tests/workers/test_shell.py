"""The shell driver on its own: real commands, no store and no broker."""

from __future__ import annotations

import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from db.models import ProcessEntry, UnitOfWork
from db.states import ProcessKind, UowKind
from tests.polling import wait_until
from tests.workers.conftest import gone
from workers.base import Outcome
from workers.shell import OUTPUT_TAIL_BYTES, OutputTail, build_argv, run_command

NOW = datetime(2026, 1, 5, 13, 0, tzinfo=UTC)


def _entry(command, **fields) -> ProcessEntry:
    if isinstance(command, list):
        command = tuple(command)
    fields.setdefault("timeout", timedelta(seconds=10))
    return ProcessEntry(name="proc", kind=ProcessKind.FREERUN, command=command, **fields)


def _uow(**fields) -> UnitOfWork:
    values = {
        "id": "0123456789abcdef01234567",
        "process": "proc",
        "kind": UowKind.MANAGED,
        "start_timeperiod": "2026010500",
        "end_timeperiod": "2026010600",
        "timeperiod": "2026010500",
        "run_key": "r0",
        "attempt": 2,
        "created_at": NOW,
        "updated_at": NOW,
    }
    values.update(fields)
    return UnitOfWork(**values)


def _run(entry: ProcessEntry, uow: UnitOfWork | None = None, **kwargs):
    return run_command(entry, uow or _uow(), cancel=threading.Event(), **kwargs)


def test_build_argv_fills_every_placeholder_without_a_shell():
    entry = _entry(
        [
            "prog",
            "{process}",
            "{timeperiod}",
            "{start_timeperiod}-{end_timeperiod}",
            "--id={uow_id}",
            "{attempt:03d}",
            "{{literal}}",
            "a b; rm -rf /",
        ]
    )
    assert build_argv(entry, _uow()) == [
        "prog",
        "proc",
        "2026010500",
        "2026010500-2026010600",
        "--id=0123456789abcdef01234567",
        "002",
        "{literal}",
        "a b; rm -rf /",
    ]


def test_build_argv_shell_true_runs_one_string_through_sh():
    entry = _entry("echo {uow_id} | tr a-f A-F", shell=True)
    assert build_argv(entry, _uow(timeperiod=None)) == [
        "/bin/sh",
        "-c",
        "echo 0123456789abcdef01234567 | tr a-f A-F",
    ]
    freerun = _entry(["x", "{timeperiod}"])
    assert build_argv(freerun, _uow(timeperiod=None, start_timeperiod="2026010513")) == [
        "x",
        "2026010513",
    ]


def test_run_command_passes_the_environment_and_reports_processed():
    result = _run(_entry(["sh", "-c", 'echo "$TACTUS_UOW_ID $TACTUS_PROCESS $TACTUS_ATTEMPT"']))
    assert result.outcome is Outcome.PROCESSED
    assert result.exit_code == 0 and result.error is None
    assert result.output == "0123456789abcdef01234567 proc 2\n"


@pytest.mark.parametrize(
    ("command", "noop_code", "outcome", "exit_code", "error"),
    [
        (["sh", "-c", "exit 0"], None, Outcome.PROCESSED, 0, None),
        (["sh", "-c", "exit 5"], 5, Outcome.NOOP, 5, None),
        (["sh", "-c", "exit 5"], None, None, 5, "command exited with code 5"),
        (["sh", "-c", "exit 1"], 5, None, 1, "command exited with code 1"),
        (["sh", "-c", "kill -SEGV $$"], None, None, -11, "command killed by signal SIGSEGV"),
    ],
)
def test_run_command_maps_exit_codes(command, noop_code, outcome, exit_code, error):
    result = _run(_entry(command, noop_exit_code=noop_code))
    assert (result.outcome, result.exit_code, result.error) == (outcome, exit_code, error)


def test_run_command_that_cannot_start_is_a_clear_failure(tmp_path):
    result = _run(_entry([str(tmp_path / "no-such-program"), "x"]))
    assert result.outcome is None and result.exit_code is None and result.pid is None
    assert result.error.startswith("cannot start command")
    assert "No such file or directory" in result.error


def test_run_command_timeout_kills_the_group_grandchildren_included(tmp_path):
    # given: a child that ignores SIGTERM, and a grandchild
    pid_file = tmp_path / "pids"
    script = f"trap '' TERM; sleep 60 & echo $! > {pid_file}; while :; do sleep 0.1; done"
    entry = _entry(["sh", "-c", script], timeout=timedelta(seconds=0.5))
    # when
    started = time.monotonic()
    result = _run(entry, kill_grace=0.5)
    # then
    assert time.monotonic() - started < 5
    assert result.outcome is None and result.error.startswith("timed out after 0.5 s")
    assert result.exit_code == -9  # SIGTERM was ignored (and inherited), SIGKILL was not
    grandchild = int(pid_file.read_text())
    wait_until(lambda: gone(grandchild), 5, what=f"grandchild {grandchild} to be gone")


def test_run_command_cancel_interrupts_it():
    cancel = threading.Event()
    ticks: list[float] = []
    timer = threading.Timer(0.3, cancel.set)
    timer.start()
    result = run_command(
        _entry(["sleep", "30"]), _uow(), cancel=cancel, tick=lambda: ticks.append(1.0)
    )
    assert result.interrupted and result.outcome is None
    assert result.error.startswith("interrupted")
    assert ticks  # the caller's hook ran while it waited
    wait_until(lambda: gone(result.pid), 5, what="the command to be gone")


def test_run_command_reads_both_pipes_at_once_and_keeps_a_bounded_tail():
    # 20 MB interleaved in 1 MB chunks, more than any pipe buffer holds
    script = (
        "import sys\n"
        "for i in range(10):\n"
        "    sys.stderr.buffer.write(b'e' * (1 << 20)); sys.stderr.flush()\n"
        "    sys.stdout.buffer.write(b'o' * (1 << 20)); sys.stdout.flush()\n"
        "sys.stderr.write('last words\\n')\n"
    )
    result = _run(_entry([sys.executable, "-c", script]))
    assert result.outcome is Outcome.PROCESSED
    assert result.output.endswith("last words\n")
    assert f"[... {20 * (1 << 20) + 11 - OUTPUT_TAIL_BYTES} earlier bytes" in result.output


def test_run_command_does_not_wait_for_a_background_child_holding_the_pipes(tmp_path):
    pid_file = tmp_path / "pid"
    result = _run(_entry(["sh", "-c", f"sleep 60 & echo $! > {pid_file}; echo done"]))
    assert result.outcome is Outcome.PROCESSED and result.output == "done\n"
    wait_until(lambda: gone(int(pid_file.read_text())), 5, what="the straggler killed")


def test_output_tail_keeps_the_last_bytes_and_counts_the_rest():
    tail = OutputTail(limit=10)
    tail.add(b"0123456789")
    assert tail.text() == "0123456789"
    tail.add(b"abcdef")
    assert tail.dropped == 6
    assert tail.text() == "[... 6 earlier bytes of output omitted ...]\n6789abcdef"
    broken = OutputTail(limit=3)
    broken.add("é".encode() + b"xy")
    assert broken.text().endswith("xy")


def test_run_command_gets_its_arguments_payload_and_messages_files(tmp_path):
    # given a unit of work with arguments and a loaded payload
    script = (
        'cat "$TACTUS_ARGUMENTS"; echo; cat "$TACTUS_PAYLOAD"; echo; '
        'printf "one\\ntwo\\n" >> "$TACTUS_MESSAGES"; sleep 0.3; '
        'printf "three\\n\\nfour" >> "$TACTUS_MESSAGES"'
    )
    uow = _uow(arguments={"table": "visits", "n": 2}, payload=b"payload bytes", payload_id="p1")
    batches: list[list[str]] = []
    # when
    result = _run(_entry(["sh", "-c", script]), uow, messages=batches.append)
    # then
    assert result.outcome is Outcome.PROCESSED, result.error
    assert result.output == '{"table": "visits", "n": 2}\npayload bytes\n'
    assert [text for batch in batches for text in batch] == ["one", "two", "three", "four"]
    assert len(batches) >= 2  # read while it ran, and at its end


def test_run_command_without_a_payload_has_no_payload_file():
    script = 'test -z "${{TACTUS_PAYLOAD+set}}" && test -f "$TACTUS_ARGUMENTS" && echo ok'
    result = _run(_entry(["sh", "-c", script]))
    assert (result.outcome, result.output) == (Outcome.PROCESSED, "ok\n")


def test_run_command_of_a_step_gets_the_payload_besides_the_step_files():
    script = 'echo "$TACTUS_STEP $(cat "$TACTUS_PAYLOAD") $(cat "$TACTUS_UPSTREAM")"'
    uow = _uow(step="load", parent="f1", payload=b"data", arguments={"upstream": {"a": {}}})
    result = _run(_entry(["sh", "-c", script]), uow)
    assert result.output == 'load data {"a": {}}\n'
