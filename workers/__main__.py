"""``python -m workers PROCESS [--concurrency N]``: run one worker in the foreground.

The supervisor starts workers through ``process_starter.py``; this entry point runs one by hand
(debugging a worker class, a one-box setup) with the same settings: ``TACTUS_*`` variables or the
file named by ``TACTUS_SETTINGS``. It logs to stderr. SIGTERM or Ctrl-C stops it gracefully (a
second one stops it without waiting ``worker_stop_grace``). The exit code is
:func:`workers.runner.run_worker`'s.
"""

from __future__ import annotations

import argparse
import logging
import sys

from db.errors import TactusError
from settings import load_settings
from workers.runner import EXIT_USAGE, run_worker

log = logging.getLogger(f"tactus.{__name__}")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, load the settings and run the worker; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m workers", description="Run a worker for one registered process."
    )
    parser.add_argument("process", help="name of the registered process")
    parser.add_argument(
        "--concurrency", type=_positive, default=None, help="units of work at once (default 1)"
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s [%(process)d %(threadName)s] %(message)s",
    )
    # The state machines' library logs each callback at INFO; our funnel logs each change.
    logging.getLogger("transitions").setLevel(logging.WARNING)
    try:
        settings = load_settings()
    except TactusError as exc:
        log.error("bad settings: %s", exc)
        return EXIT_USAGE
    return run_worker(settings, args.process, concurrency=args.concurrency)


if __name__ == "__main__":
    sys.exit(main())
