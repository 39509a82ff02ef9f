"""``python -m scheduler``: run the scheduler in the foreground (logs to stderr).

The daemonised form is ``launch.py --start scheduler``; both read the same settings
(``TACTUS_*`` variables or the file named by ``TACTUS_SETTINGS``). SIGTERM or Ctrl-C stops it;
SIGHUP re-reads the registry.
"""

from __future__ import annotations

import argparse
import logging
import sys

from db.errors import TactusError
from scheduler.main import run_scheduler
from settings import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scheduler", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("pika").setLevel(logging.WARNING)
    logging.getLogger("transitions").setLevel(logging.WARNING)
    try:
        return run_scheduler(load_settings())
    except TactusError as exc:
        sys.stderr.write(f"scheduler: {exc.message}\n")
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
