"""Waiting out outages of the store and the broker (SPEC section 15).

Every daemon keeps one :class:`Outage` per dependency it reaches over the network (the store,
the broker), shared by all its threads. A call that fails because the dependency is away reports
it (:meth:`Outage.failed`), waits (:meth:`Outage.wait`: exponential backoff with jitter, capped
at ``outage_backoff_max``) and tries again, for as long as the outage lasts: a daemon never
gives up on an outage, whatever its length. The first success of any thread ends the outage
(:meth:`Outage.succeeded`) and wakes every waiter at once, so threads do not sleep out a long
pause after the dependency is back.

The log reads like an operator's pager: one warning when the outage starts, one a minute while
it lasts, one when it ends (with its length and the calls that failed), whatever the number of
threads and calls that meet it. ``tactus_store_up``/``tactus_broker_up`` in ``/metrics`` read
:attr:`Outage.up`.

:class:`PatientStore` applies this to every call of a store: the daemons' stores are wrapped in
one (the scheduler, the workers, the supervisor), mx's too but without waiting (``wait=False``:
a request answers 503 at once, the outage is still tracked and logged once). The broker's
counterpart is :mod:`mq.patient`.

A call retried after its connection died during the commit may find its own write already
done: a create-once key taken (``DuplicateKey``) or a compare-and-set that no longer matches
(``StateConflict``). Every caller already treats those as "done by someone", and the few that
must know it was themselves (a worker's claim) look at the stored record.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from db import open_store
from db.backoff import backoff
from db.errors import StoreUnavailable
from db.store import QueueStore, Store

log = logging.getLogger(f"tactus.{__name__}")

T = TypeVar("T")

#: The longest pause between two tries during an outage (the ``outage_backoff_max`` setting).
OUTAGE_BACKOFF_MAX = timedelta(seconds=30)
#: The pause after the first failed try; it doubles with each further one.
OUTAGE_BACKOFF_BASE = timedelta(milliseconds=250)
#: Spread of each pause (a fraction), so the threads and daemons of an installation do not all
#: come back in the same millisecond.
OUTAGE_JITTER = 0.3
#: While an outage lasts, one reminder is logged this often.
REMINDER_EVERY = 60.0
#: A waiter looks this often (seconds) whether the outage ended or its daemon is stopping.
_SLICE = 0.05


class Outage:
    """One dependency (``store``, ``broker``) as one daemon sees it: up, or down since when.

    Thread-safe; cheap to report success on every call (no lock while up).
    """

    def __init__(
        self,
        what: str,
        *,
        backoff_max: timedelta = OUTAGE_BACKOFF_MAX,
        base: timedelta = OUTAGE_BACKOFF_BASE,
        reminder_every: float = REMINDER_EVERY,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        """
        Args:
            what: the dependency's name in the log (``store``, ``broker``).
            backoff_max: the longest pause between two tries.
            base: the first pause.
            reminder_every: seconds between two reminders while the outage lasts.
            monotonic: the time source of the pauses and the reminders (tests pass a fake).
            rng: source of the jitter.
        """
        self.what = what
        self.backoff_max = backoff_max
        self.base = base
        self.reminder_every = reminder_every
        self._monotonic = monotonic
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        #: Monotonic instant the current outage started; None while up.
        self._down_since: float | None = None
        self._reminded_at = 0.0
        self._failures = 0
        self._reason = ""
        #: Counts the outages that ended: a waiter that sees it change stops waiting.
        self._ended = 0
        #: Monotonic instant the last outage ended (None: none ended yet).
        self.recovered_at: float | None = None
        #: Outages seen since the daemon started (for ``/metrics``).
        self.outages = 0
        self._listeners: list[Callable[[float], None]] = []

    @property
    def up(self) -> bool:
        """False while an outage lasts."""
        return self._down_since is None

    @property
    def down_for(self) -> float:
        """Seconds the current outage has lasted (0 while up)."""
        since = self._down_since
        return 0.0 if since is None else max(0.0, self._monotonic() - since)

    def on_recovery(self, listener: Callable[[float], None]) -> None:
        """Call ``listener(seconds the outage lasted)`` each time an outage ends, in the thread
        whose call succeeded first (it must be quick and must not raise)."""
        self._listeners.append(listener)

    def failed(self, exc: BaseException) -> None:
        """A call met the outage: the first report starts it (one warning), later ones are
        counted, with a reminder once a minute."""
        now = self._monotonic()
        reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        with self._lock:
            self._failures += 1
            self._reason = reason
            if self._down_since is None:
                self._down_since = self._reminded_at = now
                self.outages += 1
                log.warning(
                    "%s unavailable: %s; waiting it out (retries back off up to %g s)",
                    self.what,
                    reason,
                    self.backoff_max.total_seconds(),
                )
            elif now - self._reminded_at >= self.reminder_every:
                self._reminded_at = now
                log.warning(
                    "%s still unavailable after %d s (%d failed calls): %s",
                    self.what,
                    now - self._down_since,
                    self._failures,
                    reason,
                )

    def succeeded(self) -> None:
        """A call went through: ends the outage if there was one (one warning) and wakes every
        waiter."""
        if self._down_since is None:
            return
        now = self._monotonic()
        with self._lock:
            since = self._down_since
            if since is None:
                return
            lasted = now - since
            failures = self._failures
            self._down_since = None
            self._failures = 0
            self._ended += 1
            self.recovered_at = now
        log.warning(
            "%s available again after %.1f s (%d calls failed meanwhile)",
            self.what,
            lasted,
            failures,
        )
        for listener in list(self._listeners):
            try:
                listener(lasted)
            except Exception:  # a listener must not turn the success into a failure
                log.exception("%s: recovery listener failed", self.what)

    def pause(self, attempt: int) -> float:
        """Seconds to wait before try ``attempt + 1`` (``attempt`` >= 1 failed so far)."""
        delay = backoff(
            self.base, attempt, cap=self.backoff_max, jitter=OUTAGE_JITTER, rng=self._rng
        )
        return delay.total_seconds()

    def wait(self, attempt: int, stopping: threading.Event | None = None) -> bool:
        """Wait before the next try: :meth:`pause` seconds, less if the outage ends meanwhile
        (another thread's call went through).

        Returns:
            False when ``stopping`` was set (give up: the daemon is stopping), else True.
        """
        ended = self._ended
        deadline = time.monotonic() + self.pause(attempt)
        while True:
            if stopping is not None and stopping.is_set():
                return False
            if self._ended != ended:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            if stopping is not None:
                stopping.wait(min(_SLICE, left))
            else:
                time.sleep(min(_SLICE, left))


@dataclass(frozen=True, slots=True)
class Outages:
    """The two dependencies of a daemon, as it sees them."""

    store: Outage
    broker: Outage

    @classmethod
    def with_backoff_max(cls, backoff_max: timedelta) -> Outages:
        """A fresh pair, both capped at ``backoff_max`` (the ``outage_backoff_max`` setting)."""
        return cls(
            store=Outage("store", backoff_max=backoff_max),
            broker=Outage("broker", backoff_max=backoff_max),
        )


def is_transient(exc: BaseException) -> bool:
    """True unless the error says that trying again cannot help (a missing driver, a refused
    login): ``transient = False`` on the exception."""
    return getattr(exc, "transient", True)


def call_patiently(
    outage: Outage,
    call: Callable[[], T],
    *,
    errors: tuple[type[BaseException], ...],
    stopping: threading.Event | None = None,
    wait: bool = True,
) -> T:
    """``call()``, tried again through an outage of any length.

    Args:
        outage: the dependency's tracker.
        call: what to do.
        errors: the exceptions that mean the dependency is away (``StoreUnavailable``).
        stopping: set when the daemon stops: then the last error is raised instead of waiting.
        wait: False to try once (mx answers a request at once), still reporting to ``outage``.

    Raises:
        The last of ``errors`` when stopping, not waiting, or the error is not transient.
    """
    attempt = 0
    while True:
        try:
            result = call()
        except errors as exc:
            if not is_transient(exc):
                raise
            outage.failed(exc)
            attempt += 1
            if not wait or not outage.wait(attempt, stopping):
                raise
            continue
        outage.succeeded()
        return result


class PatientStore:
    """A :class:`~db.store.Store` whose every call waits out an outage of the store.

    Wraps an open store; each public method is called through :func:`call_patiently`, so a
    daemon's code reads as if the store never went away (it raises ``StoreUnavailable`` only when
    the daemon stops, or at once with ``wait=False``). Everything else (``backend``, errors other
    than ``StoreUnavailable``) passes through unchanged.
    """

    def __init__(
        self,
        store: Store,
        outage: Outage,
        *,
        stopping: threading.Event | None = None,
        wait: bool = True,
    ) -> None:
        self.inner = store
        self.outage = outage
        self.stopping = stopping
        self.waits = wait

    def impatient(self) -> PatientStore:
        """The same store and tracker, trying each call once: for a heartbeat, which beats on
        its own schedule and doubles as the daemon's probe of the store."""
        return PatientStore(self.inner, self.outage, stopping=self.stopping, wait=False)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if name.startswith("_") or not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def patient(*args: Any, **kwargs: Any) -> Any:
            return call_patiently(
                self.outage,
                lambda: attribute(*args, **kwargs),
                errors=(StoreUnavailable,),
                stopping=self.stopping,
                wait=self.waits,
            )

        # cached on the instance: later look-ups do not come through here
        self.__dict__[name] = patient
        return patient

    def __enter__(self) -> PatientStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.inner.close()


Store.register(PatientStore)
# It delegates the embedded queue's methods as well, when its store keeps them.
QueueStore.register(PatientStore)


def open_patient_store(
    uri: str, outage: Outage, *, stopping: threading.Event | None = None
) -> PatientStore:
    """Open the store named by ``uri`` for a daemon: every call waits out an outage."""
    return PatientStore(open_store(uri), outage, stopping=stopping)
