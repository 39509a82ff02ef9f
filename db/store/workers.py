"""The workers part of the store interface: registrations and heartbeats."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from db.models import WorkerRecord


class WorkerStore(ABC):
    """Registered workers: a part of :class:`~db.store.Store`."""

    @abstractmethod
    def save_worker(self, worker: WorkerRecord) -> None:
        """Insert or replace a worker's registration (keyed by ``worker_id``)."""

    @abstractmethod
    def beat_worker(self, worker_id: str, at: datetime, *, current_uow: str | None = None) -> None:
        """Record a heartbeat (and what the worker is running now). A worker declared ``lost``
        that beats again is ``alive`` again, in the same write (a stopped one stays stopped).

        Raises:
            NotFound: no such worker.
        """

    @abstractmethod
    def set_worker_state(self, worker_id: str, state: str, *, expected_state: str) -> bool:
        """Compare-and-set a worker's ``state`` (``alive``/``stopped``/``lost``).

        Returns:
            True if this call changed it.
        """

    @abstractmethod
    def list_workers(
        self, *, box_id: str | None = None, process: str | None = None
    ) -> list[WorkerRecord]:
        """Registered workers, ordered by (process, worker_id)."""

    @abstractmethod
    def delete_worker(self, worker_id: str) -> None:
        """Forget a worker (no error if absent)."""
