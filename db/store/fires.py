"""The freerun fires part of the store interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from db.models import FireRecord


class FireStore(ABC):
    """Fires of freerun triggers: a part of :class:`~db.store.Store`."""

    @abstractmethod
    def record_fire(self, fire: FireRecord) -> bool:
        """Record one fire of a freerun trigger, once.

        Returns:
            True if this call recorded it; False if (process, scheduled_at) was already recorded
            (by an earlier run, a restart or another scheduler): the caller must not fire again.
        """

    @abstractmethod
    def set_fire_uow(self, process: str, scheduled_at: datetime, uow_id: str) -> None:
        """Link a recorded fire to the unit of work created for it (no-op if no such fire)."""

    def record_fires(self, fires: Sequence[FireRecord]) -> list[bool]:
        """:meth:`record_fire` for several fires, together: one transaction where the backend
        has them (the fires a scheduler's pass makes). This default records one at a time.

        Returns:
            In the order of ``fires``: True for each this call recorded.
        """
        return [self.record_fire(fire) for fire in fires]

    def set_fire_uows(self, links: Sequence[tuple[str, datetime, str]]) -> None:
        """:meth:`set_fire_uow` for several (process, scheduled_at, uow_id), together where the
        backend has transactions. This default links one at a time."""
        for process, scheduled_at, uow_id in links:
            self.set_fire_uow(process, scheduled_at, uow_id)

    @abstractmethod
    def last_fire(self, process: str) -> FireRecord | None:
        """The fire of ``process`` with the latest ``scheduled_at``, or None."""

    @abstractmethod
    def list_fires(self, process: str, *, limit: int = 100) -> list[FireRecord]:
        """The latest fires of ``process``, newest first."""

    def last_fires(self, processes: Sequence[str]) -> dict[str, FireRecord]:
        """:meth:`last_fire` of each of ``processes`` that has a fire, by process name: one
        grouped read where the backend has one (a scheduler pass reads every firing process's),
        each an index lookup, whatever the history. This default reads one at a time."""
        found = {}
        for process in dict.fromkeys(processes):
            fire = self.last_fire(process)
            if fire is not None:
                found[process] = fire
        return found

    def recent_fires(self, processes: Sequence[str], *, limit: int) -> dict[str, list[FireRecord]]:
        """:meth:`list_fires` of each of ``processes`` that has a fire, by process name: the
        latest ``limit`` fires of each, newest first. One grouped read where the backend has
        one (``/metrics`` reads every freerun's), each an index range, whatever the history.
        This default reads one process at a time."""
        found = {}
        for process in dict.fromkeys(processes):
            fires = self.list_fires(process, limit=limit)
            if fires:
                found[process] = fires
        return found

    @abstractmethod
    def unlinked_fires(self, processes: Sequence[str]) -> list[FireRecord]:
        """The fires of ``processes`` recorded as fired with no unit of work linked (a pass
        cut short between recording its fires and linking their units of work), by process
        and then ``scheduled_at``. Indexed: the cost follows these fires, not the history."""
