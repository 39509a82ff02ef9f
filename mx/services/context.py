"""What every action needs: the store, the clock, a way to publish, and who is acting."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from db.errors import BrokerUnavailable
from db.models import ProcessEntry
from db.relations import Registry
from db.states import ProcessKind, UowState
from mq.message import Publish, status_queue, uow_delivery, wake_message

if TYPE_CHECKING:
    from collections.abc import Sequence

    from db.clock import Clock
    from db.models import UnitOfWork
    from db.store import Store

log = logging.getLogger(f"tactus.{__name__}")


@dataclass(frozen=True, slots=True)
class ServiceContext:
    """Passed to every verb by the API, the page and the command line.

    A verb stores first and publishes after (STYLE 2.9), so once it has stored, a failed
    publish must not turn its answer into an error that a client would retry (SPEC section 15):
    :meth:`announce` and :meth:`wake` never raise :class:`~db.errors.BrokerUnavailable`.
    """

    store: Store
    clock: Clock
    publish: Publish
    queue_prefix: str = "tactus"
    timezone: str = "UTC"
    #: Who acts, for the history and the audit (``cli``, ``user alice``, ``token deploy``).
    actor: str = "cli"
    #: Publishes later what ``publish`` could not (mx's :class:`~mx.announcer.Announcer`);
    #: None: nobody in this process will (the command line exits), and the unit of work waits
    #: for the scheduler, which posts requested units again.
    later: Publish | None = None

    def acting_as(self, actor: str) -> ServiceContext:
        return replace(self, actor=actor)

    def registry(self) -> Registry:
        return Registry.from_entries(
            r.entry for r in self.store.list_processes() if r.entry.kind is ProcessKind.MANAGED
        )

    def entry(self, name: str) -> ProcessEntry:
        return self.store.get_process(name).entry

    def wake(self, *processes: str) -> bool:
        """Ask the scheduler to look at these processes now (after the change is stored). A
        wake that cannot be sent is only logged: the scheduler looks at every process on its own
        schedule anyway, a little later.

        Returns:
            Whether every wake was sent.
        """
        sent = True
        for process in dict.fromkeys(processes):
            try:
                self.publish(status_queue(self.queue_prefix), wake_message(process).encode(), None)
            except BrokerUnavailable as exc:
                sent = False
                log.info("process %s: wake not sent (the scheduler looks anyway): %s", process, exc)
        return sent

    def announce_all(self, uows: Sequence[UnitOfWork]) -> None:
        """:meth:`announce` each requested unit of work a flow change made (db.flows) and wake
        the scheduler for a flow run that ended."""
        for uow in uows:
            if uow.state is UowState.REQUESTED:
                self.announce(uow)
            else:
                self.wake(uow.process)

    def announce(self, uow: UnitOfWork) -> bool:
        """Publish a unit of work to its process's workers (delayed until ``scheduled_at``).

        Returns:
            True when it was published now; False when the broker could not take it: the unit
            of work is stored (``requested``), and is published by ``later`` when the broker
            is back, or else posted again by the scheduler.
        """
        queue, body, delay = uow_delivery(uow, self.queue_prefix, self.clock.now())
        try:
            self.publish(queue, body, delay)
            return True
        except BrokerUnavailable as exc:
            if self.later is not None:
                self.later(queue, body, delay)
                log.info("uow %s: stored; published when the broker is back (%s)", uow.id, exc)
            else:
                log.warning(
                    "uow %s: stored but not published (%s); the scheduler posts it again",
                    uow.id,
                    exc,
                )
            return False
