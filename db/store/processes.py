"""The processes part of the store interface: the registered processes and their entries."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from db.models import Event, ProcessRecord
    from db.states import ProcessKind


class ProcessStore(ABC):
    """Registered processes: a part of :class:`~db.store.Store`."""

    @abstractmethod
    def list_processes(self, kind: ProcessKind | None = None) -> list[ProcessRecord]:
        """All registered processes (optionally of one kind), ordered by name."""

    @abstractmethod
    def get_process(self, name: str) -> ProcessRecord:
        """One process.

        Raises:
            NotFound: no process has that name.
        """

    @abstractmethod
    def insert_process(self, record: ProcessRecord) -> ProcessRecord:
        """Store a new process with ``version`` 1.

        Raises:
            DuplicateKey: a process of that name exists.
        """

    @abstractmethod
    def update_process(
        self, record: ProcessRecord, *, expected_version: int, event: Event | None = None
    ) -> ProcessRecord:
        """Replace a process's entry and registered values if its version is ``expected_version``.

        Compare-and-set on the version; increments it and sets ``updated_at`` from the record.
        ``event``, when given, is appended to the process's history in the same atomic write.

        Raises:
            NotFound: no such process.
            Conflict: the stored version differs (someone else changed it first).
        """

    @abstractmethod
    def delete_process(self, name: str) -> None:
        """Remove a process (its jobs and units of work stay as history).

        Raises:
            NotFound: no such process.
        """
