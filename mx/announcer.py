"""Publishing later what mx stored while the broker was away (SPEC section 15).

A verb that stores a unit of work and then cannot publish it has still done its work: the unit
is stored, so the request answers 202 with it, and a client's retry must not create a second
one. The message goes to the :class:`Announcer`, a thread of mx's runtime that publishes it as
soon as the broker answers again, with backoff between tries (the broker's
:class:`~db.outage.Outage` paces them and logs the outage once). Meanwhile the request threads
do not try the broker at all (:meth:`Announcer.publish`), so no request waits on a broker that
is known to be away.

The list is bounded and in memory: if mx stops (or the list overflows) before the broker is
back, the units stay ``requested`` in the store and the scheduler posts them again (after an
outage it saw, or after ``unclaimed_timeout``), so nothing is lost, only later.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from db.errors import BrokerUnavailable

if TYPE_CHECKING:
    from db.outage import Outage
    from mq.broker import Broker

log = logging.getLogger(f"tactus.{__name__}")

#: Messages kept at most; beyond it the oldest is dropped (the scheduler re-posts its unit).
CAPACITY = 10_000


@dataclass(frozen=True, slots=True)
class Pending:
    """A message to publish: its queue, body, and the monotonic instant it is due (a delayed
    message keeps its due time, however late it is published)."""

    queue: str
    body: bytes
    due: float


class Announcer:
    """The thread that publishes messages the request threads could not.

    Args:
        broker: mx's broker (a :class:`~mq.patient.PatientBroker` with ``wait=False``, so each
            try is reported to ``outage``).
        outage: the broker's outage tracker: while it is down, requests hand their messages
            here at once, and the thread probes the broker with ``probe``.
        probe: a cheap call that tells whether the broker answers (the depth of the status
            queue), made while an outage lasts and nothing is pending.
        capacity: messages kept at most.
        monotonic: the time source of due instants (tests pass a fake).
    """

    def __init__(
        self,
        broker: Broker,
        outage: Outage,
        *,
        probe: Callable[[], object],
        capacity: int = CAPACITY,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.broker = broker
        self.outage = outage
        self._probe = probe
        self._monotonic = monotonic
        self._pending: deque[Pending] = deque(maxlen=capacity)
        self._condition = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._attempt = 0
        #: Messages dropped because the list was full (their units wait for the scheduler).
        self.dropped = 0
        #: Messages published by the thread since mx started.
        self.published = 0

    @property
    def pending(self) -> int:
        """Messages waiting for the broker."""
        return len(self._pending)

    def publish(self, queue: str, body: bytes, delay: timedelta | None) -> None:
        """Publish now, from the calling thread, unless the broker is known to be away.

        Raises:
            BrokerUnavailable: it could not be published now (hand it to :meth:`later`).
        """
        if not self.outage.up:
            self._nudge()  # its probes end the outage as soon as the broker answers
            raise BrokerUnavailable("the broker is unavailable (an outage is in progress)")
        self.broker.publish(queue, body, delay=delay)

    def later(self, queue: str, body: bytes, delay: timedelta | None) -> None:
        """Keep a message that could not be published, and publish it when the broker is back."""
        seconds = delay.total_seconds() if delay is not None else 0.0
        item = Pending(queue=queue, body=body, due=self._monotonic() + max(0.0, seconds))
        with self._condition:
            if len(self._pending) == self._pending.maxlen:
                self.dropped += 1
                log.error(
                    "announcer: %d messages wait for the broker already; dropping the oldest "
                    "(its unit of work stays requested: the scheduler posts it again)",
                    len(self._pending),
                )
            self._pending.append(item)
        self._nudge()

    def _nudge(self) -> None:
        """Start the thread if needed, and wake it."""
        self.start()
        with self._condition:
            self._condition.notify_all()

    def start(self) -> None:
        """Start the thread (once; a stopped announcer is not started again)."""
        with self._condition:
            if self._thread is not None or self._stopping.is_set():
                return
            self._thread = threading.Thread(target=self._run, name="mx-announcer", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread; what is still pending is left to the scheduler's re-post (logged)."""
        self._stopping.set()
        with self._condition:
            self._condition.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        if self._pending:
            log.warning(
                "announcer: stopping with %d messages unpublished (their units of work stay "
                "requested: the scheduler posts them again)",
                len(self._pending),
            )

    def join(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # -- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._wait()
                if self._stopping.is_set():
                    return
                self._step()
            except Exception:
                # Not the broker's outage (that is BrokerUnavailable, handled in _step): a bug.
                # The thread must not die of it, or nothing would publish again; it says so
                # loudly and backs off like after a failed try.
                log.exception("announcer: unexpected error; trying again after a pause")
                self._attempt += 1

    def _wait(self) -> None:
        """Sleep until there is something to try: a message, or a probe during an outage; after
        a failed try, for the outage's backoff (new messages do not cut it short)."""
        if self._attempt:
            self._stopping.wait(self.outage.pause(self._attempt))
            return
        with self._condition:
            while not self._stopping.is_set():
                if self._pending or not self.outage.up:
                    return  # an outage ends only when a call goes through: probe
                self._condition.wait()

    def _step(self) -> None:
        """Publish every message in order, a delayed one with what is left of its delay (the
        broker holds it until then); on the first failure, back off."""
        try:
            if not self._pending:
                self._probe()
                self._attempt = 0
                return
            while True:
                with self._condition:
                    if not self._pending:
                        break
                    item = self._pending[0]
                left = item.due - self._monotonic()
                delay = timedelta(seconds=left) if left > 0 else None
                self.broker.publish(item.queue, item.body, delay=delay)
                with self._condition:
                    if self._pending and self._pending[0] is item:
                        self._pending.popleft()
                self.published += 1
            self._attempt = 0
        except BrokerUnavailable:
            self._attempt += 1
