"""What every action needs: the store, the clock, a way to publish, and who is acting."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from db.models import ProcessEntry
from db.relations import Registry
from db.states import ProcessKind
from mq.message import Publish, status_queue, uow_delivery, wake_message

if TYPE_CHECKING:
    from db.clock import Clock
    from db.models import UnitOfWork
    from db.store import Store


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
        self.publish(*uow_delivery(uow, self.queue_prefix, self.clock.now()))
