"""What a Python worker prints and logs while it runs a unit of work, kept like a command's
output: a bounded tail per attempt, stored in the unit's ``output`` and shown on its page.

A worker process runs its Python calls in one executor thread per slot (``workers/slot.py``),
so several calls may print at once. Capture is therefore per thread: :func:`capturing` routes
what the *calling thread* writes to ``sys.stdout`` and ``sys.stderr``, and the log records it
emits (any logger: the worker's own, a library's), into an :class:`~workers.shell.OutputTail`,
while everything still reaches the worker's own streams and log file as before (a tee).

The streams are wrapped when a capture starts (again if something replaced them since) and the
log handler is added once per process; threads that capture nothing pay one dictionary look-up
per write.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading
from typing import TYPE_CHECKING, TextIO

from workers.shell import OutputTail

if TYPE_CHECKING:
    from collections.abc import Iterator

#: How a captured log record reads in the unit's output.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_lock = threading.Lock()
#: Thread id -> the tail that thread's output goes to, while it captures.
_tails: dict[int, OutputTail] = {}
_installed = False


class _Tee(io.TextIOBase):
    """Stands in for ``sys.stdout``/``sys.stderr``: writes go to the original stream, and to
    the calling thread's tail while it captures."""

    def __init__(self, original: TextIO) -> None:
        self.original = original

    def write(self, text: str) -> int:
        tail = _tails.get(threading.get_ident())
        if tail is not None:
            tail.add(text.encode("utf-8", errors="replace"))
        return self.original.write(text)

    def flush(self) -> None:
        self.original.flush()

    def fileno(self) -> int:
        return self.original.fileno()

    def isatty(self) -> bool:
        return self.original.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", "utf-8")


class _ThreadLogHandler(logging.Handler):
    """Adds each log record to the tail of the thread that emitted it, if it captures."""

    def emit(self, record: logging.LogRecord) -> None:
        tail = _tails.get(record.thread or 0)
        if tail is None:
            return
        try:
            tail.add((self.format(record) + "\n").encode("utf-8", errors="replace"))
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is not worth a crash
            self.handleError(record)


def _install() -> None:
    """Put the tees in place (again, if something replaced the streams since) and the log
    handler (once)."""
    global _installed
    with _lock:
        if not isinstance(sys.stdout, _Tee):
            sys.stdout = _Tee(sys.stdout)
        if not isinstance(sys.stderr, _Tee):
            sys.stderr = _Tee(sys.stderr)
        if _installed:
            return
        handler = _ThreadLogHandler(level=logging.DEBUG)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logging.getLogger().addHandler(handler)
        _installed = True


@contextlib.contextmanager
def capturing(tail: OutputTail | None = None) -> Iterator[OutputTail]:
    """Capture what the calling thread prints and logs into ``tail`` (a new one by default)
    until the block ends; yields the tail."""
    _install()
    tail = tail if tail is not None else OutputTail()
    ident = threading.get_ident()
    _tails[ident] = tail
    try:
        yield tail
    finally:
        _tails.pop(ident, None)
