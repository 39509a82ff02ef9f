"""The command every fault test registers: it counts its own runs, so that "ran twice" and "lost"
are numbers read from a file, not guesses read from logs.

    count_run.py RUNS_FILE UOW_ID ATTEMPT [SECONDS] [EXIT_CODE]

Appends ``<uow_id> <attempt>`` to RUNS_FILE as it starts, sleeps SECONDS (default 0), appends
``<uow_id> <attempt> end:<exit_code>`` to the same file as it ends, and exits with EXIT_CODE
(default 0). Each line is one ``write`` on a file opened with ``O_APPEND``, so lines of commands
running at once never interleave and the file's order is the order things happened. A run killed
before its end leaves a start without an end.

Runs as a plain script (no Tactus import): the worker starts it with the test's interpreter.
"""

from __future__ import annotations

import os
import sys
import time


def append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    runs_file, uow_id, attempt = argv[1], argv[2], argv[3]
    seconds = float(argv[4]) if len(argv) > 4 else 0.0
    code = int(argv[5]) if len(argv) > 5 else 0
    append(runs_file, f"{uow_id} {attempt}")
    if seconds:
        time.sleep(seconds)
    append(runs_file, f"{uow_id} {attempt} end:{code}")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
