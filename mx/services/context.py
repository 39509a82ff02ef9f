"""What every action needs: the store, the clock, a way to publish, and who is acting."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING

from db.models import ProcessEntry
from db.relations import Registry
from db.states import ProcessKind
from mq.message import process_queue, status_queue, uow_message, wake_message

if TYPE_CHECKING:
    from db.clock import Clock
    from db.models import UnitOfWork
    from db.store import Store

#: Publishes (queue, body, delay); a broker's ``publish`` bound with keyword delay.
Publish = Callable[[str, bytes, timedelta | None], None]


@dataclass(frozen=True, slots=True)
class ServiceContext:
    """Passed to every verb by the API, the page and the command line."""

    store: Store
    clock: Clock
    publish: Publish
    queue_prefix: str = "tactus"
    timezone: str = "UTC"
    #: Who acts, for the history and the audit (``cli``, ``user alice``, ``token deploy``).
    actor: str = "cli"

    def acting_as(self, actor: str) -> ServiceContext:
        return replace(self, actor=actor)

    def registry(self) -> Registry:
        return Registry.from_entries(
            r.entry for r in self.store.list_processes() if r.entry.kind is ProcessKind.MANAGED
        )

    def entry(self, name: str) -> ProcessEntry:
        return self.store.get_process(name).entry

    def wake(self, *processes: str) -> None:
        """Ask the scheduler to look at these processes now (after the change is stored)."""
        for process in dict.fromkeys(processes):
            self.publish(status_queue(self.queue_prefix), wake_message(process).encode(), None)

    def announce(self, uow: UnitOfWork) -> None:
        """Publish a unit of work to its process's workers (delayed until ``scheduled_at``)."""
        delay = None
        if uow.scheduled_at is not None and uow.scheduled_at > self.clock.now():
            delay = uow.scheduled_at - self.clock.now()
        body = uow_message(uow.id, uow.process).encode()
        self.publish(process_queue(self.queue_prefix, uow.process), body, delay)
