"""The history part of the store interface: the events of processes, jobs, units of work and
supervised processes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from db.models import Event


class HistoryStore(ABC):
    """Entities' histories: a part of :class:`~db.store.Store`."""

    @abstractmethod
    def append_event(self, event: Event) -> None:
        """Append an event to an entity's history outside a state change (enable, edit, ...).

        Raises:
            NotFound: the entity does not exist (history belongs to an entity).
        """

    @abstractmethod
    def history(self, entity: str, entity_id: str, *, limit: int = 500) -> list[Event]:
        """The latest ``limit`` events of one entity, oldest first.

        ``entity`` is ``job`` (id ``process/timeperiod``), ``uow`` (its id), ``process`` (its
        name) or ``supervised`` (``box_id/process``).
        """
