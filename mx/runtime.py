"""What one mx application holds: settings, store, broker and clock, and the per-request
:class:`~mx.services.context.ServiceContext` built from them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from flask import current_app

from db.liveness import silence_limit
from mx.services.context import ServiceContext
from mx.throttle import LoginThrottle

if TYPE_CHECKING:
    from db.clock import Clock
    from db.store import Store
    from mq.broker import Broker
    from settings import Settings

log = logging.getLogger(f"tactus.{__name__}")

#: Key of the runtime in ``app.extensions``.
EXTENSION = "tactus"
#: How long failed logins count against an address or a user name.
LOGIN_WINDOW = timedelta(minutes=5)


@dataclass(slots=True)
class MxRuntime:
    """The collaborators of one mx application (no module-global instance: one per app)."""

    settings: Settings
    store: Store
    broker: Broker
    clock: Clock
    #: Closed by :meth:`close`: only what ``create_app`` opened itself.
    owned: list[Store | Broker] = field(default_factory=list)
    #: Failed logins per address and user name (5 minutes' memory).
    throttle: LoginThrottle = field(default_factory=lambda: LoginThrottle(LOGIN_WINDOW))

    @property
    def liveness(self) -> timedelta:
        """How long a worker may stay silent and still count as alive."""
        return silence_limit(self.settings.heartbeat_interval, self.settings.heartbeat_misses)

    def context(self, actor: str) -> ServiceContext:
        """The context the service verbs get, acting as ``actor``."""
        broker = self.broker

        def publish(queue: str, body: bytes, delay: timedelta | None) -> None:
            broker.publish(queue, body, delay=delay)

        return ServiceContext(
            store=self.store,
            clock=self.clock,
            publish=publish,
            queue_prefix=self.settings.queue_prefix,
            timezone=self.settings.timezone,
            actor=actor,
        )

    def close(self) -> None:
        """Close the broker and store this application opened (the broker first: the embedded
        queue lives in the store)."""
        for resource in reversed(self.owned):
            try:
                resource.close()
            except Exception:  # closing must go on for the others
                log.exception("mx: closing %r failed", resource)
        self.owned.clear()


def runtime() -> MxRuntime:
    """The runtime of the application handling the current request."""
    return current_app.extensions[EXTENSION]
