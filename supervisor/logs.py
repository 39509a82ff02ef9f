"""Where a Tactus process logs: its own rotating file under ``log_dir``, or the console.

Set up once per process, by ``process_starter.py`` (STYLE 2.13). Every module logs through
``tactus.<module>`` loggers; the handler sits on the root logger so the libraries' warnings
(SQLAlchemy, pika) land in the same file.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys

#: A log file is rotated when it reaches this size ...
LOG_MAX_BYTES = 10 * 1024 * 1024
#: ... keeping this many old files (``NAME.log.1`` ... ``NAME.log.5``).
LOG_BACKUPS = 5
#: One line per record, with the pid: several processes may share a terminal or a journal.
LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def log_to_file(path: str, level: int = logging.INFO) -> logging.Handler:
    """Send every record to ``path``, rotated by size."""
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
    )
    return _install(handler, level)


def log_to_console(level: int = logging.INFO) -> logging.Handler:
    """Send every record to standard error (``--console``, systemd's journal)."""
    return _install(logging.StreamHandler(sys.stderr), level)


def _install(handler: logging.Handler, level: int) -> logging.Handler:
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # The transitions library logs every callback at INFO; db.state_change logs each change.
    logging.getLogger("transitions").setLevel(max(level, logging.WARNING))
    # pika logs several ERROR lines for every connection attempt that fails; Tactus reports the
    # outcome itself (db.outage: one line when a broker outage starts, one a minute, one at its
    # end), so during an outage pika's own lines would only drown that.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    return handler
