"""One slot of a worker process: a thread, its consumer and the flow of each delivery.

A worker with concurrency N runs N slots (:mod:`workers.runner`). Each owns a consumer
(``worker_prefetch`` messages in hand: the one it runs and the next ones, handed back for idle
workers once a run lasts :data:`HAND_BACK_AFTER`; consumers are not shared between threads) and,
for a Python worker, one :class:`~workers.base.UowWorker` instance whose calls all run in one
executor thread of the slot's. Per delivery, :meth:`Slot.handle` runs the steps in this order:

1. decode the message; a malformed one, or one naming no unit of work of this process, is
   rejected (dead-lettered) and the slot goes on;
2. load the unit of work; one that is not ``requested`` (finished, or claimed by another worker)
   is a duplicate or late delivery: ack it and do nothing (idempotent redelivery), except that a
   redelivered message of a finished unit of work is acked with its status again (its worker
   may have died after storing the outcome, before the status left);
3. claim it (``requested → in_progress``, compare-and-set through the funnel, with worker, box,
   pid, ``started_at`` and ``heartbeat_at``); a lost race is acked and ignored. When the
   delivery was already in hand as the previous run ended, this claim was written in the same
   commit as that run's outcome (step 5), each change applied or refused on its own;
4. run it: the shell driver for ``command``, the Python worker otherwise, within ``timeout``,
   its payload loaded first and its messages stored while it runs and once more at its end
   (:mod:`workers.uow_io`);
5. record the outcome through the funnel (``succeed``, ``finish_noop`` or ``fail``, with the exit
   code, output tail, error and ``finished_at``);
6. once that write has committed, ack, with the status message as the ack's notice: it leaves
   on the consumer's own channel ahead of the ack, without a round trip of its own (the store
   is the truth; a status lost with a crashing broker only delays the scheduler's look). A crash
   before the ack redelivers a message that step 2 then acks with the status. On the store
   queue, whose messages live in the same store, the ack, the status message and the claim of
   the next messages are written in step 5's own commit instead
   (:meth:`~mq.broker.SettlingConsumer.settlement`): one commit per unit of work while work
   flows.

A run the worker must interrupt because it is stopping is handed back instead: ``release``
(back to requested, no attempt used), then its message is requeued.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from db import flows
from db.errors import (
    InvalidInput,
    MalformedMessage,
    NotFound,
    StateConflict,
    StoreUnavailable,
    TactusError,
    TransitionRefused,
)
from db.placement import runs_on
from db.state_change import (
    ChainTake,
    UowChange,
    change_uow,
    change_uows,
    claim_change,
    settle_uows,
)
from db.states import UowKind, UowState
from mq.broker import SettlingConsumer
from mq.message import Message
from workers.base import Outcome, load_worker_class
from workers.capture import capturing
from workers.journal import KeptOutcome
from workers.shell import POLL_INTERVAL, OutputTail, run_command
from workers.uow_io import Messages, with_payload

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from db.chain import Lookahead
    from db.clock import Clock
    from db.models import ProcessEntry, QueueSettled, UnitOfWork
    from db.store import Store
    from mq.broker import Broker, Consumer, Delivery
    from workers.base import UowWorker, WorkerSettings
    from workers.journal import Journal

log = logging.getLogger(f"tactus.{__name__}")

#: Seconds a slot waits for a message before it checks for a stop request.
GET_TIMEOUT = 0.5
#: Seconds a unit of work runs before the messages prefetched behind it (``worker_prefetch``
#: above 1) are handed back for idle workers to take.
HAND_BACK_AFTER = 1.0
#: How long a step meant for other boxes waits before it is delivered again.
STEP_ELSEWHERE_DELAY = timedelta(seconds=2)


class SlotOwner(Protocol):
    """What a slot needs from its worker process (:class:`workers.runner.Worker`)."""

    settings: WorkerSettings
    entry: ProcessEntry
    worker_class: type[UowWorker] | None
    store: Store
    quick_store: Store
    journal: Journal
    broker: Broker
    clock: Clock
    worker_id: str
    actor: str
    queue: str
    stop_event: threading.Event
    #: What an outcome may move on at once (:mod:`db.chain`).
    lookahead: Lookahead

    def current_entry(self) -> ProcessEntry:
        """The process's entry to run the next unit of work with."""

    def publish_status(self, uow: UnitOfWork) -> None:
        """Tell the scheduler the unit of work changed state."""

    def status_notice(self, uow: UnitOfWork) -> tuple[str, bytes]:
        """The (queue, body) telling the scheduler the unit of work changed state."""

    def announce(self, uows: Sequence[UnitOfWork]) -> None:
        """Publish the steps a flow change made requested; announce flow runs that ended."""

    def announcements(self, uows: Sequence[UnitOfWork]) -> list[tuple[str, bytes]]:
        """The (queue, body) messages :meth:`announce` would publish."""

    def slot_failed(self) -> None:
        """A slot cannot go on: stop the worker with a failure."""

    def call_abandoned(self) -> None:
        """A Python call timed out and was left running: stop the worker for a restart."""


class RunningUow:
    """A claimed unit of work while its slot runs it."""

    def __init__(self, uow: UnitOfWork, consumer: Consumer, delivery: Delivery) -> None:
        self.uow = uow
        self.consumer = consumer
        self.delivery = delivery
        #: Set to stop the run: the worker is stopping, or the unit of work was taken away.
        self.cancel = threading.Event()
        #: True when ``cancel`` means "hand it back" (stop) rather than "it is not ours".
        self.stop_requested = False
        #: True once the slot records the outcome (the heartbeat leaves it alone then).
        self.finishing = False
        #: Extension of the delivery asked for by the heartbeat, not yet done.
        self._extend: timedelta | None = None
        #: When the run started (monotonic), and whether prefetched messages went back since.
        self._started = time.monotonic()
        self._handed_back = False
        #: What the unit of work emits on its way to the store (set by the slot).
        self.messages: Messages | None = None

    @property
    def uow_id(self) -> str:
        return self.uow.id

    def request_extend(self, visibility: timedelta) -> None:
        """Called by the heartbeat thread; :meth:`service` does it in the slot's thread."""
        self._extend = visibility

    def service(self) -> None:
        """Called every :data:`~workers.shell.POLL_INTERVAL` during the run, in the slot's
        thread (the consumer is this thread's): extend the delivery if the heartbeat asked to,
        and once the run has lasted :data:`HAND_BACK_AFTER`, give the messages prefetched behind
        it back to idle workers."""
        if not self._handed_back and time.monotonic() - self._started >= HAND_BACK_AFTER:
            self._handed_back = True
            try:
                returned = self.consumer.hand_back()
            except TactusError as exc:
                log.warning("uow %s: cannot hand back prefetched messages: %s", self.uow.id, exc)
            else:
                if returned:
                    log.info(
                        "uow %s: still running; %d prefetched message(s) handed back",
                        self.uow.id,
                        returned,
                    )
        if self.messages is not None:
            self.messages.flush()
        visibility, self._extend = self._extend, None
        if visibility is None:
            return
        try:
            self.consumer.extend(self.delivery, visibility)
        except TactusError as exc:
            log.warning("uow %s: cannot extend its delivery: %s", self.uow.id, exc)

    def taken_away(self, reason: str) -> None:
        """Canceled or declared lost meanwhile: stop the run; its outcome will not be stored."""
        if self.finishing or self.cancel.is_set():
            return
        log.warning("uow %s: %s; stopping its run", self.uow.id, reason)
        self.cancel.set()

    def interrupt(self) -> None:
        """The worker stops: end the run and hand the unit of work back."""
        self.stop_requested = True
        self.cancel.set()


@dataclass(frozen=True, kw_only=True, slots=True)
class _Verdict:
    """What to record for a run: a trigger of the unit-of-work machine, or a release."""

    #: ``succeed``, ``finish_noop``, ``fail``; None: release it (the worker is stopping).
    trigger: str | None
    exit_code: int | None = None
    output: str | None = None
    error: str | None = None
    #: One line for the history event.
    reason: str = ""
    seconds: float = 0.0
    #: What a worker class's call came to (``processed``, ``noop``, ``exception``,
    #: ``timed out``, ``bad return``), kept in the history event's details; None for commands.
    returned: str | None = None
    #: What a step hands on to its dependents (db.flows).
    result: dict[str, Any] | None = None


_TRIGGERS = {Outcome.PROCESSED: "succeed", Outcome.NOOP: "finish_noop"}
#: The states a worker's outcome leaves a unit of work in.
_OUTCOME_STATES = frozenset({UowState.PROCESSED, UowState.NOOP, UowState.INVALID})


class Slot:
    """One worker thread: its consumer, its Python worker instance, one unit of work at a time."""

    def __init__(self, worker: SlotOwner, index: int) -> None:
        self.worker = worker
        self.name = f"{worker.entry.name}-{index}"
        #: The unit of work being run, if any.
        self.task: RunningUow | None = None
        #: True when this slot left a Python call running that could not be stopped.
        self.abandoned = False
        self._instance: UowWorker | None = None
        #: Worker classes of a flow's steps, by path, built when first needed.
        self._instances: dict[str, UowWorker] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._thread = threading.Thread(target=self._main, name=f"slot-{self.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def interrupt(self) -> None:
        task = self.task
        if task is not None:
            task.interrupt()

    def _main(self) -> None:
        worker = self.worker
        try:
            prefetch = worker.settings.worker_prefetch
            with worker.broker.consumer(worker.queue, prefetch=prefetch) as consumer:
                self._setup()
                try:
                    while not worker.stop_event.is_set() and not self.abandoned:
                        delivery = consumer.get(GET_TIMEOUT)
                        if delivery is not None:
                            self.handle(consumer, delivery)
                finally:
                    self._teardown()
        except TactusError:
            if worker.stop_event.is_set():
                # The store or the broker gave up waiting for itself because we stop: what was
                # not stored is in the journal, what was not acked comes again.
                log.info("worker %s: slot %s stopped during an outage", worker.worker_id, self.name)
                return
            log.exception("worker %s: slot %s failed; stopping", worker.worker_id, self.name)
            worker.slot_failed()
        except Exception:
            log.exception("worker %s: slot %s failed; stopping", worker.worker_id, self.name)
            worker.slot_failed()

    def _setup(self) -> None:
        """Build the Python worker instance and run its ``setup()``, both in the one thread that
        will run all its calls."""
        worker_class = self.worker.worker_class
        if worker_class is None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"uow-{self.name}")
        self._instance = self._executor.submit(
            worker_class, self.worker.entry, self.worker.settings
        ).result()
        self._executor.submit(self._instance.setup).result()

    def _teardown(self) -> None:
        if self._executor is None:
            return
        if self.abandoned:
            # The executor's thread is stuck in a call; teardown() would queue behind it.
            self._executor.shutdown(wait=False, cancel_futures=True)
            return
        try:
            for instance in [self._instance, *self._instances.values()]:
                if instance is not None:
                    self._executor.submit(instance.teardown).result()
        except Exception:
            log.exception("worker %s: teardown() failed", self.worker.worker_id)
        finally:
            self._executor.shutdown(wait=True)

    def handle(self, consumer: Consumer, delivery: Delivery) -> None:
        """One delivery: decode, load, claim, run, record, tell, ack; then, while the next
        delivery is already in hand, run it too, its claim written in the same commit as the
        outcome before it (:meth:`_finish`)."""
        uow = self._load(consumer, delivery)
        if uow is None:
            return
        if self.worker.stop_event.is_set():
            consumer.requeue(delivery)  # stopping: leave it to the next worker
            return
        claimed = self._claim(consumer, delivery, uow)
        while claimed is not None:
            claimed = self._run(consumer, *claimed)

    def _run(
        self, consumer: Consumer, delivery: Delivery, uow: UnitOfWork
    ) -> tuple[Delivery, UnitOfWork] | None:
        """Run a claimed unit of work and record its outcome; returns the next one if its
        claim went with that record."""
        task = RunningUow(uow, consumer, delivery)
        self.task = task
        following = None
        try:
            if self.worker.stop_event.is_set():
                # Claimed with the previous outcome just as the stop came: hand it back.
                task.finishing = True
                self._release(task)
                return None
            entry = self.worker.current_entry()
            task.messages = Messages(
                self.worker.quick_store,
                uow,
                limit=self.worker.settings.max_messages_per_uow,
                clock=self.worker.clock,
            )
            verdict = self._execute(entry, task)
            task.messages.close()  # stored before the outcome is
            task.finishing = True
            if verdict.trigger is None:
                self._release(task)
            else:
                following = self._finish(task, verdict)
        finally:
            self.task = None
        if self.abandoned and not task.stop_requested:
            self.worker.call_abandoned()
        return following

    def _load(self, consumer: Consumer, delivery: Delivery) -> UnitOfWork | None:
        """The requested unit of work a delivery names; None once the delivery is dealt with."""
        worker = self.worker
        try:
            message = Message.decode(delivery.body)
        except MalformedMessage as exc:
            log.warning("worker %s: dead-lettering a message: %s", worker.worker_id, exc)
            consumer.reject(delivery, exc.problem)
            return None
        if message.kind != "uow" or message.process != worker.entry.name:
            log.warning("worker %s: dead-lettering %s", worker.worker_id, message)
            consumer.reject(delivery, f"not a unit of work of {worker.entry.name}")
            return None
        try:
            uow = worker.store.get_uow(message.uow_id)
        except (NotFound, InvalidInput) as exc:
            log.warning("uow %s: unknown; dead-lettering its message (%s)", message.uow_id, exc)
            consumer.reject(delivery, "unknown unit of work")
            return None
        if uow.process != worker.entry.name:
            log.warning("uow %s: belongs to %s; dead-lettering its message", uow.id, uow.process)
            consumer.reject(delivery, f"unit of work of {uow.process}")
            return None
        if uow.state == UowState.REQUESTED and uow.flow:
            self._expand(consumer, delivery, uow)
            return None
        if uow.state == UowState.REQUESTED and uow.step is not None and not self._step_here(uow):
            log.info(
                "uow %s: step %s is for other boxes than %s; handed back",
                uow.id,
                uow.step,
                worker.settings.box_id,
            )
            consumer.requeue(delivery, STEP_ELSEWHERE_DELAY)
            return None
        if uow.state != UowState.REQUESTED:
            # A duplicate or late delivery: finished already, or claimed by another worker.
            log.info("uow %s: %s, not requested; ignoring the delivery", uow.id, uow.state)
            notices = ()
            if delivery.redelivered and uow.state in _OUTCOME_STATES:
                # Its worker may have died between storing the outcome and acking, with the
                # status never sent: announce it again (a duplicate status is harmless).
                notices = (worker.status_notice(uow),)
            consumer.ack(delivery, notices=notices)
            return None
        return uow

    def _expand(self, consumer: Consumer, delivery: Delivery, uow: UnitOfWork) -> None:
        """A flow run: create its steps and request the first ones (db.flows.expand), then
        ack; its steps come back to this process's queue as units of work of their own."""
        worker = self.worker
        try:
            flows.expand(
                worker.store,
                uow,
                worker.current_entry(),
                clock=worker.clock,
                actor=worker.actor,
                announce=worker.announce,
            )
        except (StateConflict, TransitionRefused) as exc:
            log.info("uow %s: expanded elsewhere first (%s)", uow.id, exc)
        except InvalidInput as exc:
            # the process lost its steps since the run was created: nothing can run it
            log.warning("uow %s: cannot expand the flow run: %s", uow.id, exc)
            change_uow(
                worker.store,
                uow,
                "cancel",
                clock=worker.clock,
                actor=worker.actor,
                reason=str(exc),
                after_commit=worker.publish_status,
            )
        consumer.ack(delivery)

    def _step_here(self, uow: UnitOfWork) -> bool:
        """Whether this worker's box may run the step (its ``boxes``)."""
        entry = flows.entry_for(self.worker.current_entry(), uow)
        return runs_on(entry, self.worker.settings.box_id)

    def _claim(
        self, consumer: Consumer, delivery: Delivery, uow: UnitOfWork
    ) -> tuple[Delivery, UnitOfWork] | None:
        """Claim alone (the first of a run of deliveries); None when lost to another worker."""
        change = self._claim_change(delivery, uow)
        (claimed,) = change_uows(
            self.worker.store, [change], clock=self.worker.clock, actor=self.worker.actor
        )
        return self._claimed(consumer, delivery, uow, self._ours(claimed, change))

    def _claim_change(
        self, delivery: Delivery | None, uow: UnitOfWork, **details: Any
    ) -> UowChange:
        """``requested -> in_progress``, recording who and where runs it from now (no
        delivery: a unit of work an outcome's chain starts, :meth:`_chain_claim`)."""
        worker = self.worker
        redelivered = delivery is not None and delivery.redelivered
        return claim_change(
            uow,
            worker_id=worker.worker_id,
            box_id=worker.settings.box_id,
            pid=os.getpid(),
            now=worker.clock.now(),
            details={"attempt": uow.attempt, "redelivered": redelivered, **details},
        )

    def _ours(
        self, result: UnitOfWork | TactusError, change: UowChange
    ) -> UnitOfWork | TactusError:
        """A claim refused as a lost race may be our own claim, committed by a try whose
        connection died during the commit and then refused when tried again (the store waits
        out outages): the stored claim is ours when it carries this worker's id and the very
        ``started_at`` this claim wrote."""
        if not isinstance(result, StateConflict):
            return result
        changes = change.changes or {}
        try:
            stored = self.worker.store.get_uow(change.uow.id)
        except NotFound:
            return result
        if (
            stored.state is UowState.IN_PROGRESS
            and stored.attempt == change.uow.attempt
            and stored.worker_id == changes.get("worker_id")
            and stored.started_at == changes.get("started_at")
        ):
            log.info("uow %s: the claim committed before the store went away: ours", stored.id)
            return stored
        return result

    @staticmethod
    def _claimed(
        consumer: Consumer, delivery: Delivery, uow: UnitOfWork, result: UnitOfWork | TactusError
    ) -> tuple[Delivery, UnitOfWork] | None:
        """The delivery and its claimed unit of work, or None once a lost claim is acked."""
        if isinstance(result, TactusError):
            # StateConflict / TransitionRefused / NotFound: claimed (or changed) elsewhere.
            log.info("uow %s: claimed elsewhere first (%s); ignoring the delivery", uow.id, result)
            consumer.ack(delivery)
            return None
        return delivery, result

    def _next_in_hand(self, consumer: Consumer) -> tuple[Delivery, UnitOfWork] | None:
        """The next delivery if it is already here (fetched ahead; never waits) and names a
        requested unit of work of ours; anything else it may be is dealt with by :meth:`_load`.
        Nothing is taken while the worker stops or after an abandoned call."""
        if self.abandoned or self.worker.stop_event.is_set():
            return None
        try:
            delivery = consumer.get_ready()
            if delivery is None:
                return None
            uow = self._load(consumer, delivery)
        except TactusError as exc:
            # Looking ahead must not cost the outcome about to be recorded: record it alone.
            log.warning(
                "worker %s: cannot take the next delivery now: %s", self.worker.worker_id, exc
            )
            return None
        return None if uow is None else (delivery, uow)

    def _execute(self, entry: ProcessEntry, task: RunningUow) -> _Verdict:
        try:
            task.uow = with_payload(self.worker.store, task.uow)
        except NotFound:
            reason = f"payload {task.uow.payload_id} is not in the store"
            return _Verdict(trigger="fail", error=reason, reason=reason)
        if task.uow.step is not None:
            try:
                step = flows.step_entry(entry, task.uow.step)
            except NotFound:
                reason = f"step {task.uow.step} is no longer in process {entry.name}"
                return _Verdict(trigger="fail", error=reason, reason=reason)
            if step.worker is None:
                return self._run_command(step, task)
            try:
                instance = self._instance_of(step.worker, step)
            except Exception as exc:
                reason = f"cannot load worker {step.worker}: {exc}"[:500]
                return _Verdict(trigger="fail", error=reason, reason=reason)
            return self._run_python(step, task, instance)
        if task.uow.kind is UowKind.ADHOC:
            # an ad-hoc task carries its own shell command, run literally: braces are escaped
            # so placeholder formatting leaves them alone
            command = str(task.uow.arguments.get("command", ""))
            literal = command.replace("{", "{{").replace("}", "}}")
            return self._run_command(replace(entry, command=literal, shell=True), task)
        if self._instance is None:
            return self._run_command(entry, task)
        return self._run_python(entry, task, self._instance)

    def _instance_of(self, path: str, entry: ProcessEntry) -> UowWorker:
        """The instance of a step's worker class, built (with its ``setup()``) in the slot's
        executor thread the first time a step needs it."""
        instance = self._instances.get(path)
        if instance is not None:
            return instance
        worker_class = load_worker_class(path)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"uow-{self.name}"
            )
        instance = self._executor.submit(worker_class, entry, self.worker.settings).result()
        self._executor.submit(instance.setup).result()
        self._instances[path] = instance
        return instance

    def _run_command(self, entry: ProcessEntry, task: RunningUow) -> _Verdict:
        result = run_command(
            entry,
            task.uow,
            cancel=task.cancel,
            tick=task.service,
            messages=None if task.messages is None else task.messages.extend,
        )
        if result.interrupted and task.stop_requested:
            return _Verdict(trigger=None, reason="worker stopping")
        trigger = "fail" if result.outcome is None else _TRIGGERS[result.outcome]
        return _Verdict(
            trigger=trigger,
            exit_code=result.exit_code,
            output=result.output,
            error=result.error,
            reason=result.error or f"exit code {result.exit_code}",
            seconds=result.seconds,
            result=result.result,
        )

    def _run_python(self, entry: ProcessEntry, task: RunningUow, instance: UowWorker) -> _Verdict:
        """Call ``process_uow`` in the slot's executor thread, capturing what it prints and
        logs (workers/capture.py) as the attempt's output tail. A step may return a dict: its
        result for the steps downstream."""
        assert self._executor is not None
        started = time.monotonic()
        timeout = entry.timeout.total_seconds()
        tail = OutputTail()
        future = self._executor.submit(self._call_captured, instance, task, tail)
        while True:
            try:
                value: Any = future.result(timeout=POLL_INTERVAL)
                break
            except FutureTimeout:
                task.service()
                if task.stop_requested:
                    self.abandoned = True
                    return _Verdict(trigger=None, reason="worker stopping")
                if time.monotonic() - started >= timeout:
                    self.abandoned = True
                    error = (
                        f"timed out after {timeout:g} s; a Python call cannot be killed, so "
                        f"worker {self.worker.worker_id} exits for a clean restart"
                    )
                    return _Verdict(
                        trigger="fail",
                        error=error,
                        reason=f"timed out after {timeout:g} s",
                        output=tail.text(),
                        returned="timed out",
                    )
            except BaseException as exc:  # SystemExit in a worker is a failed attempt too
                return _Verdict(
                    trigger="fail",
                    error="".join(traceback.format_exception(exc)),
                    reason=f"{type(exc).__name__}: {exc}"[:500],
                    seconds=time.monotonic() - started,
                    output=tail.text(),
                    returned="exception",
                )
        seconds = time.monotonic() - started
        if isinstance(value, dict) and task.uow.step is not None:
            try:
                handed = flows.check_result(json.dumps(value))
            except (InvalidInput, TypeError, ValueError) as exc:
                error = f"step {task.uow.step}: {exc}"
                return _Verdict(
                    trigger="fail",
                    error=error,
                    reason=error[:500],
                    seconds=seconds,
                    output=tail.text(),
                    returned="bad result",
                )
            return _Verdict(
                trigger="succeed",
                seconds=seconds,
                output=tail.text(),
                returned="processed",
                result=handed,
            )
        if value is None or value == Outcome.PROCESSED:
            return _Verdict(
                trigger="succeed", seconds=seconds, output=tail.text(), returned="processed"
            )
        if value == Outcome.NOOP:
            return _Verdict(
                trigger="finish_noop", seconds=seconds, output=tail.text(), returned="noop"
            )
        error = f"process_uow returned {value!r}; expected None, Outcome.PROCESSED or Outcome.NOOP"
        return _Verdict(
            trigger="fail",
            error=error,
            reason=error,
            seconds=seconds,
            output=tail.text(),
            returned="bad return",
        )

    @staticmethod
    def _call_captured(instance: UowWorker, task: RunningUow, tail: OutputTail) -> Any:
        with capturing(tail), instance.emitting(task.messages):
            return instance.process_uow(task.uow)

    def _finish(self, task: RunningUow, verdict: _Verdict) -> tuple[Delivery, UnitOfWork] | None:
        """Record the outcome through the funnel, then ack with the status notice: the status
        leaves only after the outcome is committed, ahead of the ack on the same channel. A
        crash before the ack redelivers a message that the next worker acks with the status
        again (see :meth:`_load`). On the store queue the ack, the status message and the
        claim of the messages that refill the prefetch are part of the outcome's commit.

        When the next delivery is already in hand, its claim is written in the same commit (one
        durable write fewer per unit of work; each change still applies or is refused on its
        own) and it is returned, claimed, to run next.
        """
        worker = self.worker
        assert verdict.trigger is not None
        following = self._next_in_hand(task.consumer)
        requests = [
            UowChange(
                uow=task.uow,
                trigger=verdict.trigger,
                reason=verdict.reason if verdict.trigger == "fail" else "",
                changes={
                    "finished_at": worker.clock.now(),
                    "exit_code": verdict.exit_code,
                    "output": verdict.output,
                    "error": verdict.error,
                    **({} if verdict.result is None else {"result": verdict.result}),
                },
                details={
                    "attempt": task.uow.attempt,
                    "exit_code": verdict.exit_code,
                    "seconds": round(verdict.seconds, 3),
                    **({} if verdict.returned is None else {"returned": verdict.returned}),
                },
            )
        ]
        if following is not None:
            requests.append(self._claim_change(*following))
        status = worker.status_notice(task.uow)
        settlement = None
        if isinstance(task.consumer, SettlingConsumer):
            settlement = task.consumer.settlement(
                task.delivery,
                notices=(status,),
                refill=not (self.abandoned or worker.stop_event.is_set()),
            )
        funnel: dict[str, Any] = {
            "clock": worker.clock,
            "actor": worker.actor,
            "announce": worker.announce,
            "lookahead": worker.lookahead,
        }
        if settlement is None:

            def write(store: Store) -> tuple[list, QueueSettled | None]:
                return change_uows(store, requests, **funnel), None
        else:
            # The store queue: the ack, the status and the next claims commit with the outcome;
            # with room for it, so does the claim of the next period a chain starts.
            takes: list[ChainTake] = []
            taking = following is None and settlement.claim_limit > 0

            def write(store: Store) -> tuple[list, QueueSettled | None]:
                takes[:] = [ChainTake(claim=self._chain_claim)] if taking else []
                return settle_uows(
                    store,
                    requests,
                    settlement,
                    messages=worker.announcements,
                    take=takes[0] if takes else None,
                    **funnel,
                )

        results, settled = self._write_outcome(write, requests[0])
        if following is not None:
            results[1] = self._ours(results[1], requests[1])
        finished = self._outcome_stored(results[0], requests[0])
        if isinstance(finished, TactusError):
            # Canceled by hand, or declared lost and retried, while it ran: that decision
            # stands and this outcome is dropped.
            log.warning(
                "uow %s: outcome %s not recorded: %s", task.uow.id, verdict.trigger, finished
            )
        if settlement is not None:
            assert isinstance(task.consumer, SettlingConsumer) and settled is not None
            task.consumer.settled(task.delivery, settlement, settled)
            if following is None:
                taken = [uow for take in takes for uow in take.taken]
                return self._taken(task.consumer, settled, taken[0]) if taken else None
            return self._claimed(task.consumer, *following, results[1])
        notices = () if isinstance(finished, TactusError) else (status,)
        if following is None:
            self._ack(task, notices)
            return None
        claimed = results[1]
        try:
            self._ack(task, notices)
            return self._claimed(task.consumer, *following, claimed)
        except BaseException:
            if not isinstance(claimed, TactusError):
                # Claimed in the commit above but never to be run by this slot: hand it back
                # now rather than leave it in progress until the worker is declared lost.
                self._release(RunningUow(claimed, task.consumer, following[0]))
            raise

    def _chain_claim(self, uow: UnitOfWork) -> UowChange:
        """The claim of a unit of work an outcome's chain starts, for this slot to run next."""
        return self._claim_change(None, uow, chained=True)

    def _taken(
        self, consumer: SettlingConsumer, settled: QueueSettled, uow: UnitOfWork
    ) -> tuple[Delivery, UnitOfWork] | None:
        """The unit of work the outcome's commit started and claimed for this slot, with the
        delivery of its message, which the same commit claimed for this consumer. Should that
        message not be among them (older ones came first), the unit of work is handed back
        (requested again) for whoever takes its message."""
        for message in settled.claimed:
            try:
                names = Message.decode(message.body).uow_id
            except MalformedMessage:
                continue
            if names == uow.id and (delivery := consumer.take(message.id)) is not None:
                return delivery, uow
        self._hand_back(uow, "its message went to another delivery")
        return None

    def _write_outcome(
        self,
        write: Callable[[Store], tuple[list, QueueSettled | None]],
        outcome: UowChange,
    ) -> tuple[list, QueueSettled | None]:
        """Store an outcome: tried once; if the store is away, kept in the journal (on disk),
        then written as soon as the store is back, however long that takes. A worker killed
        meanwhile leaves the journal to the next one (workers/journal.py); a worker stopped
        meanwhile raises here, the outcome staying in the journal."""
        worker = self.worker
        if worker.quick_store is worker.store:
            return write(worker.store)  # a store that does not wait: nothing to keep
        try:
            return write(worker.quick_store)
        except StoreUnavailable:
            pass
        changes = dict(outcome.changes or {})
        worker.journal.keep(
            KeptOutcome(
                uow_id=outcome.uow.id,
                attempt=outcome.uow.attempt,
                trigger=outcome.trigger,
                reason=outcome.reason,
                changes=changes,
                details=dict(outcome.details or {}),
                worker_id=worker.worker_id,
            )
        )
        written = write(worker.store)  # waits out the outage
        worker.journal.forget(outcome.uow.id)
        log.warning("uow %s: outcome %s stored after the outage", outcome.uow.id, outcome.trigger)
        return written

    def _outcome_stored(
        self, result: UnitOfWork | TactusError, outcome: UowChange
    ) -> UnitOfWork | TactusError:
        """An outcome refused as a lost race may be our own, committed by a try whose
        connection died during the commit: then the stored unit of work carries it."""
        if not isinstance(result, StateConflict):
            return result
        changes = outcome.changes or {}
        try:
            stored = self.worker.store.get_uow(outcome.uow.id)
        except NotFound:
            return result
        if (
            stored.state in _OUTCOME_STATES
            and stored.attempt == outcome.uow.attempt
            and stored.finished_at == changes.get("finished_at")
        ):
            return stored
        return result

    def _release(self, task: RunningUow) -> None:
        """Hand an interrupted unit of work back (no attempt used) and requeue its message."""
        if not self._hand_back(task.uow, "worker stopping"):
            self._ack(task)
            return
        try:
            task.consumer.requeue(task.delivery)
        except TactusError as exc:
            log.warning("uow %s: requeue failed (%s); the broker redelivers it", task.uow.id, exc)

    def _hand_back(self, uow: UnitOfWork, reason: str) -> bool:
        """``release`` a claimed unit of work (no attempt used): requested again; False if it
        moved meanwhile."""
        worker = self.worker
        try:
            change_uow(
                worker.store,
                uow,
                "release",
                clock=worker.clock,
                actor=worker.actor,
                reason=reason,
                changes={
                    "worker_id": None,
                    "box_id": None,
                    "pid": None,
                    "started_at": None,
                    "heartbeat_at": None,
                },
                after_commit=worker.publish_status,
            )
        except (StateConflict, TransitionRefused) as exc:
            log.warning("uow %s: not released: %s", uow.id, exc)
            return False
        return True

    def _ack(self, task: RunningUow, notices: Sequence[tuple[str, bytes]] = ()) -> None:
        try:
            task.consumer.ack(task.delivery, notices=notices)
        except TactusError as exc:
            # The outcome is stored; a redelivery finds the unit of work finished and is acked.
            log.warning("uow %s: ack failed: %s", task.uow.id, exc)
