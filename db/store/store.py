"""The store interface as one: lifecycle, and every noun's part (``db/store/*.py``) composed."""

from __future__ import annotations

from abc import abstractmethod
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from db.store.boxes import SupervisedStore
from db.store.credentials import CredentialStore
from db.store.fires import FireStore
from db.store.history import HistoryStore
from db.store.jobs import JobStore
from db.store.messages import MessageStore
from db.store.payloads import PayloadStore
from db.store.processes import ProcessStore
from db.store.uows import UowStore
from db.store.workers import WorkerStore

if TYPE_CHECKING:
    from types import TracebackType

#: Largest page a list call returns, whatever ``limit`` asks for.
MAX_PAGE_SIZE = 1000


class Store(
    ProcessStore,
    JobStore,
    UowStore,
    HistoryStore,
    FireStore,
    SupervisedStore,
    WorkerStore,
    CredentialStore,
    PayloadStore,
    MessageStore,
):
    """Persistent state of processes, jobs, units of work, fires, boxes, workers, payloads and
    messages."""

    #: Short backend name shown by health checks and logs (``sqlite``, ``postgresql`` ...).
    backend: str = "abstract"

    # -- lifecycle ------------------------------------------------------------------------------

    @abstractmethod
    def init_schema(self) -> None:
        """Create every table/collection and index that is missing. Idempotent."""

    @abstractmethod
    def reset_schema(self) -> None:
        """Drop everything Tactus stored and create the schema again (``launch.py db --reset``)."""

    @abstractmethod
    def ping(self) -> None:
        """Check the store answers.

        Raises:
            StoreUnavailable: it does not.
        """

    @abstractmethod
    def close(self) -> None:
        """Release connections this store opened (not those handed in by the caller)."""

    def server_time(self) -> datetime:
        """The store's clock: the database server's current instant (aware, UTC).

        Liveness judges heartbeats by this clock, so workers on boxes whose clocks drift apart
        are judged alike (:class:`db.clock.StoreClock`). This default, for a store kept on this
        machine (a SQLite file), is the local clock.

        Raises:
            StoreUnavailable: the server does not answer.
        """
        return datetime.now(UTC)

    def describe(self) -> str:
        """The store's address with any password masked, for logs and the health route."""
        return self.backend

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
