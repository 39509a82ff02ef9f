"""The boxes part of the store interface: the processes each box's supervisor keeps running."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from db.models import Event, SupervisedProcess
    from db.states import SupervisedState


class SupervisedStore(ABC):
    """Supervised processes, by box: a part of :class:`~db.store.Store`."""

    @abstractmethod
    def list_supervised(self, box_id: str | None = None) -> list[SupervisedProcess]:
        """Supervised processes of one box, or of every box, ordered by (box_id, process)."""

    @abstractmethod
    def get_supervised(self, box_id: str, process: str) -> SupervisedProcess:
        """One supervised process.

        Raises:
            NotFound: none for that box and process.
        """

    @abstractmethod
    def ensure_supervised(self, record: SupervisedProcess) -> SupervisedProcess:
        """Insert the record if (box_id, process) is new; return the stored one either way."""

    @abstractmethod
    def set_desired(self, box_id: str, process: str, desired: bool, *, event: Event) -> None:
        """Set whether the operator wants the process running on the box; appends ``event``.

        Raises:
            NotFound: none for that box and process.
        """

    @abstractmethod
    def transition_supervised(
        self,
        box_id: str,
        process: str,
        *,
        expected_state: SupervisedState,
        new_state: SupervisedState,
        event: Event,
        changes: Mapping[str, Any] | None = None,
    ) -> SupervisedProcess:
        """Compare-and-set the supervised state, apply ``changes`` (pid, create_time, started_at,
        stopped_at, exit_code, start_attempts, backoff_until, stats) and append ``event``.

        Raises:
            NotFound: none for that box and process.
            StateConflict: the stored state differs.
        """

    @abstractmethod
    def update_supervised_stats(
        self, box_id: str, process: str, stats: Mapping[str, Any], at: datetime
    ) -> None:
        """Refresh the psutil facts shown by the page (no state change, no history, no version
        change; no-op if no such record)."""

    @abstractmethod
    def delete_supervised(self, box_id: str, process: str) -> None:
        """Forget a process on a box (no error if absent)."""
