"""What one mx application holds: settings, store, broker and clock, the outages it sees, the
announcer of what it could not publish, and the per-request
:class:`~mx.services.context.ServiceContext` built from them."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from flask import current_app

from db.clock import StoreClock
from db.liveness import silence_limit
from db.outage import Outage, PatientStore
from mq.message import status_queue
from mq.patient import PatientBroker
from mx.announcer import Announcer
from mx.services.context import ServiceContext
from mx.throttle import LoginThrottle

if TYPE_CHECKING:
    from collections.abc import Callable

    from db.clock import Clock
    from db.store import Store
    from mq.broker import Broker
    from settings import Settings

log = logging.getLogger(f"tactus.{__name__}")

#: Key of the runtime in ``app.extensions``.
EXTENSION = "tactus"
#: How long failed logins count against an address or a user name.
LOGIN_WINDOW = timedelta(minutes=5)
#: Seconds an executor token's principal is taken from memory before the store is asked again:
#: a token revoked (or its role changed) in the store is refused by every mx within this long.
EXECUTOR_TOKEN_TTL = 5.0


class RecentTokens:
    """Bearer tokens that authenticated lately (by the SHA-256 of their secret), so that during
    a store outage a scraper's token still reads ``/metrics``, whose gauges say the store is
    down. Bounded; an entry older than ``ttl`` is forgotten."""

    def __init__(self, ttl: float = 600.0, size: int = 1000) -> None:
        self.ttl = ttl
        self.size = size
        self._seen: dict[str, tuple[Any, float]] = {}
        self._lock = threading.Lock()

    def remember(self, digest: str, principal: Any) -> None:
        with self._lock:
            self._seen.pop(digest, None)
            self._seen[digest] = (principal, time.monotonic())
            while len(self._seen) > self.size:
                self._seen.pop(next(iter(self._seen)))

    def recall(self, digest: str) -> Any:
        """The principal of a token that authenticated within ``ttl``, else None."""
        with self._lock:
            found = self._seen.get(digest)
        if found is None or time.monotonic() - found[1] > self.ttl:
            return None
        return found[0]


@dataclass(slots=True)
class MxRuntime:
    """The collaborators of one mx application (no module-global instance: one per app).

    Build it with :meth:`wire`: ``store`` and ``broker`` are then the patient wrappers of SPEC
    section 15 with ``wait=False``: each call is tried once (a request answers 503 at once
    rather than wait), and its failure or success is reported to ``store_outage`` or
    ``broker_outage``, which log an outage once when it starts, once a minute, and once when it
    ends, however many requests meet it.
    """

    settings: Settings
    store: Store
    broker: Broker
    clock: Clock
    store_outage: Outage
    broker_outage: Outage
    announcer: Announcer
    #: Closed by :meth:`close`: only what ``create_app`` opened itself.
    owned: list[Store | Broker] = field(default_factory=list)
    #: Failed logins per address and user name (5 minutes' memory).
    throttle: LoginThrottle = field(default_factory=lambda: LoginThrottle(LOGIN_WINDOW))
    #: Tokens that authenticated lately (reads of /metrics during a store outage).
    recent_tokens: RecentTokens = field(default_factory=RecentTokens)
    #: Executor tokens that authenticated within :data:`EXECUTOR_TOKEN_TTL`: an executor sends
    #: one request per unit of work, and its token is not looked up in the store for each.
    executor_tokens: RecentTokens = field(
        default_factory=lambda: RecentTokens(ttl=EXECUTOR_TOKEN_TTL)
    )

    @classmethod
    def wire(
        cls,
        *,
        settings: Settings,
        store: Store,
        open_broker: Callable[[Store], Broker],
        clock: Clock | None,
        owned: list[Store | Broker],
    ) -> MxRuntime:
        """Wrap ``store`` and the broker ``open_broker`` makes on it (the embedded queue lives in
        the store, so its calls are tracked as the store's too) in their outage trackers."""
        backoff_max = timedelta(seconds=settings.outage_backoff_max)
        store_outage = Outage("store", backoff_max=backoff_max)
        broker_outage = Outage("broker", backoff_max=backoff_max)
        patient_store = PatientStore(store, store_outage, wait=False)
        broker = open_broker(patient_store)
        patient_broker = PatientBroker(broker, broker_outage, wait=False)
        queue = status_queue(settings.queue_prefix)
        announcer = Announcer(
            patient_broker, broker_outage, probe=lambda: patient_broker.depth(queue)
        )
        return cls(
            settings=settings,
            store=patient_store,
            broker=patient_broker,
            # the store's clock judges heartbeats, as the scheduler does (db.clock.StoreClock)
            clock=clock or StoreClock(patient_store),
            store_outage=store_outage,
            broker_outage=broker_outage,
            announcer=announcer,
            owned=owned,
        )

    @property
    def liveness(self) -> timedelta:
        """How long a worker may stay silent and still count as alive."""
        return silence_limit(self.settings.heartbeat_interval, self.settings.heartbeat_misses)

    def context(self, actor: str) -> ServiceContext:
        """The context the service verbs get, acting as ``actor``: a unit of work that cannot
        be published now goes to the announcer."""
        return ServiceContext(
            store=self.store,
            clock=self.clock,
            publish=self.announcer.publish,
            later=self.announcer.later,
            queue_prefix=self.settings.queue_prefix,
            timezone=self.settings.timezone,
            actor=actor,
        )

    def close(self) -> None:
        """Stop the announcer, then close the broker and store this application opened (the
        broker first: the embedded queue lives in the store)."""
        self.announcer.stop()
        for resource in reversed(self.owned):
            try:
                resource.close()
            except Exception:  # closing must go on for the others
                log.exception("mx: closing %r failed", resource)
        self.owned.clear()


def runtime() -> MxRuntime:
    """The runtime of the application handling the current request."""
    return current_app.extensions[EXTENSION]
