"""No silent zombie threads (SPEC section 15): a thread of a daemon that dies ends its process.

A daemon is a few threads (the scheduler's loop, its status listener and its presence beat; a
worker's slots and heartbeat; ...). Each catches what it expects and carries on; an exception
that still escapes one would leave the process up but deaf: alive for the supervisor, dead for
the work. :func:`end_process_when_a_thread_dies` makes such a death loud and final: one log line
naming the thread and the error, then the process exits with :data:`EXIT_THREAD_DIED`, so that
whoever watches it (the supervisor, systemd, an operator) starts a fresh one. Nothing is lost
by exiting: every change is in the store, and messages not acked are delivered again.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback

log = logging.getLogger(f"tactus.{__name__}")

#: Exit code of a process one of whose threads died (EX_SOFTWARE).
EXIT_THREAD_DIED = 70


def end_process_when_a_thread_dies() -> None:
    """Install the hook for this process (idempotent); call it where a daemon is wired."""
    threading.excepthook = _thread_died


def _thread_died(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return  # a thread that asked to end, as the default hook treats it
    name = args.thread.name if args.thread is not None else "?"
    details = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
    log.critical(
        "thread %s died: %s: %s; ending process %d (exit code %d) so that it is restarted\n%s",
        name,
        args.exc_type.__name__,
        args.exc_value,
        os.getpid(),
        EXIT_THREAD_DIED,
        details,
    )
    logging.shutdown()
    os._exit(EXIT_THREAD_DIED)
