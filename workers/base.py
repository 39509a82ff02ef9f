"""The base class of Python workers: subclass :class:`UowWorker` and name it in the registration
file as ``worker: "package.module:ClassName"``.

A worker process (``python -m workers PROCESS``, normally started by the supervisor) consumes the
units of work of one process. For each one it claims the unit of work in the store, calls
:meth:`UowWorker.process_uow`, records the outcome through the state-change funnel, tells the
scheduler, and only then acknowledges the message. A minimal worker::

    import logging

    from workers.base import Outcome, UowWorker

    log = logging.getLogger("tactus.myproject.visits")


    class VisitsAggregator(UowWorker):
        def setup(self) -> None:
            self.db = connect_to_warehouse()  # once per worker thread

        def process_uow(self, uow):
            rows = self.db.aggregate(uow.start_timeperiod, uow.end_timeperiod)
            if rows == 0:
                return Outcome.NOOP  # nothing to do: the unit of work becomes noop
            log.info("uow %s: aggregated %d rows", uow.id, rows)
            # returning None (or Outcome.PROCESSED) means processed

        def teardown(self) -> None:
            self.db.close()

The rules a worker relies on:

- **Outcome.** Return None or :attr:`Outcome.PROCESSED` → ``processed``; :attr:`Outcome.NOOP` →
  ``noop``; raise any exception → ``invalid``, with the traceback kept in the unit of work's
  ``error``. While attempts remain, the scheduler retries an invalid unit of work after the
  process's ``retry_delay``.
- **Idempotence.** Delivery is at-least-once and an attempt can be retried after a crash, so
  ``process_uow`` must be safe to run again for the same window (upsert, or replace the
  window's results, rather than append).
- **Threads.** A worker process with ``--concurrency N`` builds N instances, one per worker
  thread. Each instance's :meth:`setup`, :meth:`process_uow` calls and :meth:`teardown` all run
  in one thread of their own, so thread-local resources (database connections) made in
  :meth:`setup` are safe to use in :meth:`process_uow`. Instances share nothing unless you
  make them.
- **Timeout.** A Python thread cannot be killed. When ``process_uow`` runs past the process's
  ``timeout``, the unit of work is made invalid ("timed out after N s"), the scheduler is told,
  and the whole worker process exits so the supervisor starts a clean one: the stuck call is
  abandoned, not interrupted. Keep calls to external systems under their own, shorter
  timeouts.
- **Stopping.** On SIGTERM the worker takes no new messages and waits ``worker_stop_grace``
  seconds for running calls; a call still running then is abandoned in the same way, and its
  unit of work goes back to ``requested`` without using up an attempt.
- **Payload and messages** (SPEC section 12). A unit of work given a payload (a task's, a
  trigger's or its freerun entry's ``payload_id``) has its bytes in ``uow.payload``, loaded
  from the store when it is claimed, before ``process_uow`` is called (None without a payload;
  ``uow.payload_id`` names it). While it runs, ``self.message(text)`` emits a message: stored
  with its time, the attempt and its place in order, shown live on the unit of work's page and
  by ``GET /api/v1/uows/<id>/messages``; at most ``max_messages_per_uow`` are kept (the first
  ones). Messages are for progress a person follows ("12 of 40 files loaded"); the output is
  for logs.
- **Output.** What ``process_uow`` prints (``sys.stdout``, ``sys.stderr``) and logs (any
  logger, at the worker's log level) while it runs is kept as the attempt's output, like a
  command's: the last 64 KiB, in the unit of work's ``output``, shown on its page. It still
  reaches the worker's own log as well. Use a logger under ``tactus.`` (or your own); the unit
  of work's id in each line makes the log searchable.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from db.errors import InvalidInput

if TYPE_CHECKING:
    from collections.abc import Iterator

    from db.models import ProcessEntry, UnitOfWork
    from workers.uow_io import Messages

log = logging.getLogger(f"tactus.{__name__}")


class Outcome(StrEnum):
    """What a worker reports for a unit of work it handled without an exception.

    - ``processed``: the work was done.
    - ``noop``: there was nothing to do (no input for the window, already up to date).
    """

    PROCESSED = "processed"
    NOOP = "noop"


class WorkerSettings(Protocol):
    """The settings a worker uses (a subset of ``settings.Settings``, which satisfies it)."""

    store_uri: str
    broker_uri: str
    box_id: str
    queue_prefix: str
    heartbeat_interval: float
    visibility_timeout: float
    worker_stop_grace: float
    worker_prefetch: int
    #: Where a worker keeps outcomes the store could not take yet (``<var_dir>/journal``).
    var_dir: str
    #: The longest pause while waiting out an outage of the store or the broker.
    outage_backoff_max: float
    #: Messages kept per unit of work (SPEC section 12).
    max_messages_per_uow: int


class UowWorker:
    """Base class of Python workers: override :meth:`process_uow`, optionally :meth:`setup` and
    :meth:`teardown`.

    Attributes:
        entry: the registered process (name, ``arguments``, ``timeout`` ...) as it was when the
            worker thread started.
        settings: the installation's settings.
        log: a logger named after the process (``tactus.workers.<process>``).
    """

    def __init__(self, entry: ProcessEntry, settings: WorkerSettings) -> None:
        self.entry = entry
        self.settings = settings
        self.log = logging.getLogger(f"tactus.workers.{entry.name}")

    def message(self, text: str) -> None:
        """Emit a message of the unit of work being processed (SPEC section 12).

        Call it from :meth:`process_uow` (in its thread or another): each call is one message,
        stored in order with its time and the attempt, cut to 4000 characters. Outside a call
        of :meth:`process_uow` there is no unit of work to emit for: the message is only logged.
        """
        sink = getattr(self, "_message_sink", None)
        if sink is None:
            self.log.warning("message outside process_uow() left out: %s", str(text)[:200])
            return
        sink.add(str(text))

    @contextlib.contextmanager
    def emitting(self, sink: Messages | None) -> Iterator[None]:
        """While the worker runs one unit of work: where :meth:`message` sends (the slot's)."""
        self._message_sink = sink
        try:
            yield
        finally:
            self._message_sink = None

    def setup(self) -> None:
        """Called once in the worker thread before its first unit of work (open connections).

        An exception here stops the worker process with exit code 1, so the supervisor backs
        off and retries the start.
        """

    def process_uow(self, uow: UnitOfWork) -> Outcome | None:
        """Do the work of one unit of work.

        Args:
            uow: the unit of work, already claimed for this worker (state ``in_progress``).
                Its window is ``[uow.start_timeperiod, uow.end_timeperiod)``; ``uow.timeperiod``
                is the job's timeperiod (managed processes); ``uow.arguments`` holds the
                process's ``arguments`` at the time the unit of work was created;
                ``uow.attempt`` is 1 for the first attempt; ``uow.payload`` holds its
                payload's bytes (None without one).

        Returns:
            None or :attr:`Outcome.PROCESSED` when the work was done; :attr:`Outcome.NOOP`
            when there was nothing to do. A step of a flow may also return a dict (JSON, at
            most 64 KiB): it is processed, and the dict reaches its dependents as
            ``uow.arguments["upstream"][<this step>]`` (docs/flows.md). ``uow.step`` names the
            step (None outside flows).

        Raises:
            Exception: any exception makes this attempt invalid; its traceback is stored.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement process_uow()")

    def teardown(self) -> None:
        """Called once in the worker thread when the worker stops normally (close connections).

        Not called when the worker process exits to get rid of a timed-out call.
        """


def load_worker_class(path: str) -> type[UowWorker]:
    """Import the :class:`UowWorker` subclass named by ``"package.module:ClassName"``.

    Raises:
        InvalidInput: (field ``worker``) the path is malformed, the module or class cannot be
            imported, or the class is not a :class:`UowWorker` subclass.
    """
    module_name, sep, class_name = path.partition(":")
    if not sep or not module_name or not class_name:
        raise InvalidInput("worker", f"{path!r} is not of the form 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise InvalidInput("worker", f"cannot import module {module_name!r}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, UowWorker):
        raise InvalidInput("worker", f"{path!r} is not a subclass of workers.base.UowWorker")
    return cls
