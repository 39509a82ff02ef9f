"""The worker process: consumes the units of work of one process and runs them.

:func:`run_worker` is the entry point (``process_starter.py`` and ``python -m workers`` call
it). The flow reads like rq's ``work()``:

1. load the process's entry and, for ``worker: "module:Class"``, its class;
2. register the worker (a :class:`~db.models.WorkerRecord`) and start its
   :class:`~workers.heartbeat.Heartbeat`;
3. start N slots (``concurrency``, :class:`~workers.slot.Slot`), each a thread with its own
   consumer (``worker_prefetch``) and, for a Python worker, its own
   :class:`~workers.base.UowWorker` instance. Per delivery a slot runs decode → load → claim →
   execute → finish → ack with the status notice;
4. on SIGTERM or SIGINT (or ``stop_event``): take no new messages, give running units of work
   ``worker_stop_grace`` seconds (a second signal cuts it short), then interrupt the rest: kill
   a command's process group, ``release`` the unit of work (back to ``requested``, no attempt
   used) and requeue its message. Mark the worker ``stopped`` and exit 0.

Unlike Synergy's workers, a worker process runs unit after unit of work (Synergy's exited after
one and waited for a respawn), and every unit of work it holds carries a heartbeat.

A Python call that runs past the process's ``timeout`` cannot be killed (threads cannot be):
its unit of work is made invalid ("timed out after N s"), the scheduler is told, the message is
acked, and the process then stops its other slots as on SIGTERM and leaves through
``os._exit(EXIT_RESTART)`` so the supervisor starts a clean one. The same ``os._exit`` ends a
stop during which a Python call had to be abandoned (with the stop's exit code).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from db.builtin import ADHOC, ensure_builtin_processes
from db.chain import Lookahead
from db.clock import StoreClock, SystemClock
from db.errors import InvalidInput, NotFound, TactusError
from db.models import WorkerRecord
from db.outage import Outages, PatientStore, open_patient_store
from db.states import ProcessKind, UowState, WorkerState
from mq.message import process_queue, status_message, status_queue, uow_delivery
from mq.patient import open_patient_broker
from workers.base import load_worker_class
from workers.heartbeat import Heartbeat
from workers.journal import Journal, journal_dir, replay
from workers.orphans import reap_orphans
from workers.shell import DRAIN_GRACE, KILL_GRACE
from workers.slot import RunningUow, Slot

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from types import FrameType

    from db.clock import Clock
    from db.models import ProcessEntry, UnitOfWork
    from db.store import Store
    from mq.broker import Broker
    from workers.base import UowWorker, WorkerSettings

log = logging.getLogger(f"tactus.{__name__}")

#: Exit code of a worker that stopped as asked.
EXIT_OK = 0
#: Exit code of a worker that failed (store or broker unreachable, ``setup()`` raised ...).
EXIT_FAILURE = 1
#: Exit code when the process cannot be run by a worker (unknown, a daemon, a bad class).
EXIT_USAGE = 2
#: Exit code after a Python call timed out: the process left to shed the stuck thread.
EXIT_RESTART = 3
#: Seconds interrupted slots get to hand back their units of work after the grace.
INTERRUPT_WAIT = KILL_GRACE + DRAIN_GRACE + 3.0
#: Seconds between the main thread's checks while it waits.
_TICK = 0.1
#: Seconds a read of the process's entry serves the units of work that start after it: an edit
#: of ``timeout`` or ``command`` reaches the units of work started this long after it.
ENTRY_REFRESH = 1.0


def run_worker(
    settings: WorkerSettings,
    process_name: str,
    *,
    concurrency: int | None = None,
    store: Store | None = None,
    broker: Broker | None = None,
    clock: Clock | None = None,
    stop_event: threading.Event | None = None,
) -> int:
    """Run a worker for ``process_name`` until asked to stop; returns the exit code.

    Called from the main thread, it stops on SIGTERM and SIGINT; from another thread, set
    ``stop_event``. May end the OS process with ``os._exit`` instead of returning (see the
    module docstring): call it in a process of its own.

    Args:
        settings: ``store_uri``, ``broker_uri``, ``box_id``, ``queue_prefix``,
            ``heartbeat_interval``, ``visibility_timeout``, ``worker_stop_grace``.
        process_name: the registered process whose units of work to run.
        concurrency: units of work run at once (threads, each with its own consumer); 1 if
            None.
        store: an open store (default: opened from ``store_uri`` and closed at the end).
        broker: an open broker (default: opened from ``broker_uri`` and closed at the end).
        clock: source of recorded instants (default: the system clock).
        stop_event: set it to stop the worker gracefully.

    Returns:
        :data:`EXIT_OK`, :data:`EXIT_FAILURE`, :data:`EXIT_USAGE` or :data:`EXIT_RESTART`.

    Raises:
        InvalidInput: ``concurrency`` is below 1.
    """
    if concurrency is None:
        concurrency = 1
    if concurrency < 1:
        raise InvalidInput("concurrency", f"must be at least 1, got {concurrency}")
    worker: Worker | None = None
    code = EXIT_FAILURE
    stop_event = stop_event or threading.Event()
    outages = Outages.with_backoff_max(timedelta(seconds=settings.outage_backoff_max))
    try:
        with contextlib.ExitStack() as resources, _stopping_on_signals(stop_event):
            if store is None:
                # waits out an outage of the store, at start as later (db.outage)
                store = open_patient_store(settings.store_uri, outages.store, stopping=stop_event)
                resources.callback(store.close)
            entry, worker_class = _load_process(store, process_name)
            if entry is None:
                return EXIT_USAGE
            if broker is None:
                broker = open_patient_broker(
                    settings.broker_uri,
                    store,
                    outages.broker,
                    visibility=timedelta(seconds=settings.visibility_timeout),
                    stopping=stop_event,
                )
                resources.callback(broker.close)
            worker = Worker(
                settings,
                entry,
                worker_class,
                store=store,
                broker=broker,
                clock=clock or StoreClock(quick(store)),
                concurrency=concurrency,
                stop_event=stop_event,
            )
            with _stop_on_signals(worker):
                code = worker.run()
    except TactusError as exc:
        if stop_event.is_set():
            log.info("worker for %s: stopped while waiting: %s", process_name, exc)
            code = EXIT_OK
        else:
            log.error("worker for %s: %s", process_name, exc)
            code = EXIT_FAILURE
    if worker is not None and worker.abandoned:
        # A thread still runs a Python call nobody can stop; a normal interpreter exit would
        # wait for it forever.
        log.warning("worker %s: abandoning a stuck call; exiting now", worker.worker_id)
        logging.shutdown()
        os._exit(code)
    return code


def _load_process(
    store: Store, process_name: str
) -> tuple[ProcessEntry | None, type[UowWorker] | None]:
    """The entry and (Python workers) the class to run; (None, None) after logging why not."""
    if process_name == ADHOC:
        # the built-in process exists once the first task is submitted, or now
        ensure_builtin_processes(store, SystemClock())
    try:
        entry = store.get_process(process_name).entry
    except NotFound:
        log.error("worker for %s: no such registered process", process_name)
        return None, None
    if entry.kind is ProcessKind.DAEMON:
        log.error("worker for %s: a daemon is run by the supervisor, not a worker", entry.name)
        return None, None
    if entry.command is not None or entry.steps:
        # a flow's steps load their own worker classes, each when it first runs
        return entry, None
    if entry.worker is None:
        log.error("worker for %s: the process has neither worker nor command", entry.name)
        return None, None
    try:
        return entry, load_worker_class(entry.worker)
    except InvalidInput as exc:
        log.error("worker for %s: %s", entry.name, exc)
        return None, None


def quick(store: Store) -> Store:
    """``store`` trying each call once (a heartbeat's beat, an outcome's first write): the
    impatient view of a :class:`~db.outage.PatientStore`, any other store as it is."""
    return store.impatient() if isinstance(store, PatientStore) else store


@contextlib.contextmanager
def _stopping_on_signals(stop_event: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop_event`` while the worker starts (main thread only): a
    worker waiting for the store or the broker at start stops when asked."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {
        sig: signal.signal(sig, lambda *_: stop_event.set())
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _stop_on_signals(worker: Worker) -> Iterator[None]:
    """SIGTERM and SIGINT stop ``worker`` while in the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {
        sig: signal.signal(sig, worker.on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Worker:
    """One worker process's registration, heartbeat and slots; :meth:`run` until stopped."""

    def __init__(
        self,
        settings: WorkerSettings,
        entry: ProcessEntry,
        worker_class: type[UowWorker] | None,
        *,
        store: Store,
        broker: Broker,
        clock: Clock,
        concurrency: int,
        stop_event: threading.Event,
    ) -> None:
        self.settings = settings
        self.entry = entry
        self.worker_class = worker_class
        self.store = store
        self.broker = broker
        self.clock = clock
        self.concurrency = concurrency
        self.stop_event = stop_event
        self.worker_id = f"{entry.name}@{settings.box_id}:{os.getpid()}-{secrets.token_hex(2)}"
        #: The store trying each call once: an outcome's first write and the heartbeat.
        self.quick_store = quick(store)
        #: Outcomes kept on disk while the store is away (workers/journal.py).
        self.journal = Journal(journal_dir(settings.var_dir, entry.name))
        self.actor = f"worker {self.worker_id}"
        self.queue = process_queue(settings.queue_prefix, entry.name)
        self.status_queue = status_queue(settings.queue_prefix)
        #: Set by a second signal: interrupt running units of work without waiting the grace.
        self.hurry = threading.Event()
        #: True when a Python call had to be left running (the caller must ``os._exit``).
        self.abandoned = False
        self.exit_code = EXIT_OK
        self._lock = threading.Lock()
        #: (monotonic time, entry) of the last read of the entry (see :meth:`current_entry`).
        self._entry_read: tuple[float, ProcessEntry] | None = None
        #: What an outcome may move on at once (db.chain), shared by the slots.
        self.lookahead = Lookahead(self.entry_of)
        self.slots = [Slot(self, index) for index in range(concurrency)]
        self.heartbeat = Heartbeat(
            self.quick_store,
            self.worker_id,
            interval=timedelta(seconds=settings.heartbeat_interval),
            visibility=timedelta(seconds=settings.visibility_timeout),
            clock=clock,
            running=self.running,
            register=self._register,
            outage=getattr(store, "outage", None),
        )

    def run(self) -> int:
        """Register, beat and consume until stopped; returns the exit code."""
        # A worker of this box killed outright may have left its command running: end it
        # before taking work, so that a retry of its unit of work never runs beside it.
        reap_orphans()
        # Outcomes a worker of ours kept and could not store before it ended (workers/journal):
        # stored before this one takes work, so none of those units of work runs again.
        replay(
            self.store,
            self.journal.directory,
            clock=self.clock,
            actor=f"{self.actor} (journal)",
            notify=self.publish_status,
        )
        self._register()
        self.heartbeat.start()
        for slot in self.slots:
            slot.start()
        log.info(
            "worker %s: consuming %s with concurrency %d (pid %d)",
            self.worker_id,
            self.queue,
            self.concurrency,
            os.getpid(),
        )
        while not self.stop_event.wait(_TICK):
            if not any(slot.is_alive() for slot in self.slots):
                break
        self._shutdown()
        return self.exit_code

    def stop(self, exit_code: int = EXIT_OK) -> None:
        """Ask the worker to stop gracefully, exiting with ``exit_code`` (the first non-zero
        code asked for wins)."""
        with self._lock:
            if self.exit_code == EXIT_OK:
                self.exit_code = exit_code
        self.stop_event.set()

    def slot_failed(self) -> None:
        """A slot crashed (broker or store gone, ``setup()`` raised): stop with a failure."""
        self.stop(EXIT_FAILURE)

    def call_abandoned(self) -> None:
        """A Python call timed out: stop, then exit for the supervisor to restart us."""
        self.stop(EXIT_RESTART)

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM/SIGINT: stop gracefully; a second one: do not wait the grace."""
        if self.stop_event.is_set():
            self.hurry.set()
        log.info("worker %s: %s received, stopping", self.worker_id, signal.Signals(signum).name)
        self.stop_event.set()

    def running(self) -> list[RunningUow]:
        """The units of work running right now (for the heartbeat)."""
        tasks = [slot.task for slot in self.slots]
        return [task for task in tasks if task is not None and not task.finishing]

    def current_entry(self) -> ProcessEntry:
        """The process's entry as stored (``timeout`` or ``command`` edited at run time), read
        again at most every :data:`ENTRY_REFRESH`; the one the worker started with if it is gone
        or changed how it runs."""
        now = time.monotonic()
        cached = self._entry_read
        if cached is not None and now - cached[0] < ENTRY_REFRESH:
            return cached[1]
        try:
            entry = self.store.get_process(self.entry.name).entry
        except TactusError as exc:
            log.warning("worker %s: using the entry it started with: %s", self.worker_id, exc)
            return self.entry
        if (entry.command is None) != (self.entry.command is None):
            entry = self.entry
        self._entry_read = (now, entry)
        return entry

    def entry_of(self, name: str) -> ProcessEntry | None:
        """This worker's process entry (:meth:`current_entry`) by its name, None for any other:
        what an outcome may move on at once (:mod:`db.chain`) is decided with it."""
        return self.current_entry() if name == self.entry.name else None

    def publish_status(self, uow: UnitOfWork) -> None:
        """Tell the scheduler a unit of work changed state (after the change is stored)."""
        self.broker.publish(*self.status_notice(uow))

    def announce(self, uows: Sequence[UnitOfWork]) -> None:
        """After a flow change committed (db.flows): publish the steps it made requested to
        this process's queue and tell the scheduler about a flow run that ended."""
        self.broker.publish_many(self.announcements(uows))

    def announcements(self, uows: Sequence[UnitOfWork]) -> list[tuple[str, bytes]]:
        """The (queue, body) messages announcing ``uows``: a requested step to its process's
        queue, a flow run that ended to the scheduler's status queue."""
        now = self.clock.now()
        messages = []
        for uow in uows:
            if uow.state is UowState.REQUESTED:
                queue, body, _ = uow_delivery(uow, self.settings.queue_prefix, now)
                messages.append((queue, body))
            else:
                messages.append(self.status_notice(uow))
        return messages

    def status_notice(self, uow: UnitOfWork) -> tuple[str, bytes]:
        """The status message of ``uow``, as (queue, body), for ``Consumer.ack``'s notices."""
        return self.status_queue, status_message(uow.id, uow.process).encode()

    def _register(self) -> None:
        now = self.clock.now()
        self.store.save_worker(
            WorkerRecord(
                worker_id=self.worker_id,
                process=self.entry.name,
                box_id=self.settings.box_id,
                pid=os.getpid(),
                started_at=now,
                heartbeat_at=now,
                concurrency=self.concurrency,
            )
        )

    def _shutdown(self) -> None:
        self.stop_event.set()
        grace = self.settings.worker_stop_grace
        deadline = time.monotonic() + grace
        if any(slot.task is not None for slot in self.slots):
            log.info(
                "worker %s: waiting up to %g s for running units of work", self.worker_id, grace
            )
        while (
            any(slot.task is not None for slot in self.slots)
            and time.monotonic() < deadline
            and not self.hurry.is_set()
        ):
            self.hurry.wait(_TICK)
        # Interrupt on every tick, not once: a slot that claimed a unit of work just now has
        # its task set only after this loop started.
        end = time.monotonic() + INTERRUPT_WAIT
        while any(slot.is_alive() for slot in self.slots) and time.monotonic() < end:
            for slot in self.slots:
                slot.interrupt()
            time.sleep(_TICK)
        self.abandoned = any(slot.abandoned or slot.is_alive() for slot in self.slots)
        self.heartbeat.stop(timeout=5.0)
        self.journal.close()
        try:
            store = self.quick_store
            store.beat_worker(self.worker_id, self.clock.now(), current_uow=None)
            store.set_worker_state(
                self.worker_id, WorkerState.STOPPED, expected_state=WorkerState.ALIVE
            )
        except TactusError as exc:
            log.warning("worker %s: cannot record that it stopped: %s", self.worker_id, exc)
        log.info("worker %s: stopped (exit code %d)", self.worker_id, self.exit_code)
