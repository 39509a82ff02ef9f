"""Creating freerun units of work and announcing units of work, idempotently.

Order matters: a fire's unit of work is inserted under its unique key first (a retry after a
crash finds the same key and recovers the existing one instead of creating a twin), and only
once it is stored is its id published. A managed job's unit of work is created with the job's
start, in one store write (:func:`db.state_change.start_job`), and published here after it.
A lost publish only delays: the recovery pass re-posts units of work nobody claimed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from db.uow_factory import UowSpec, create_many_once
from mq.message import Publish, uow_delivery

if TYPE_CHECKING:
    from db.clock import Clock
    from db.models import UnitOfWork
    from db.store import Store

log = logging.getLogger(f"tactus.{__name__}")


class Dispatcher:
    """Creates units of work and publishes their ids to the process's queue.

    ``publish_many`` (a broker's, for messages without a delay) lets a pass announce what it
    created in one broker write; without it each message is published alone.
    """

    def __init__(
        self,
        store: Store,
        publish: Publish,
        clock: Clock,
        prefix: str,
        publish_many: Callable[[Iterable[tuple[str, bytes]]], None] | None = None,
    ) -> None:
        self.store = store
        self._publish = publish
        self._publish_many = publish_many
        self.clock = clock
        self.prefix = prefix

    def create_many(self, specs: Sequence[UowSpec]) -> list[tuple[UnitOfWork, bool]]:
        """Insert units of work or recover their stored twins, in one store transaction
        (:func:`db.uow_factory.create_many_once`).

        Returns:
            In the order of ``specs``: (the unit of work, True if this call created it).
        """
        if not specs:
            return []
        return create_many_once(self.store, specs, clock=self.clock, actor="scheduler")

    def publish(self, uow: UnitOfWork) -> None:
        """Announce a unit of work to its process's workers (delayed until ``scheduled_at``)."""
        self._publish(*uow_delivery(uow, self.prefix, self.clock.now()))

    def publish_all(self, uows: Iterable[UnitOfWork]) -> None:
        """Announce several: the ones due now together, the delayed ones each with its delay."""
        now = self.clock.now()
        ready: list[tuple[str, bytes]] = []
        for uow in uows:
            queue, body, delay = uow_delivery(uow, self.prefix, now)
            if delay is None and self._publish_many is not None:
                ready.append((queue, body))
            else:
                self._publish(queue, body, delay)
        if ready:
            assert self._publish_many is not None
            self._publish_many(ready)
