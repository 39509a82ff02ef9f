"""The store interface: the single source of truth of Tactus.

Two families implement it: SQL through SQLAlchemy Core (``db.backends.sql``: SQLite, PostgreSQL,
MariaDB/MySQL) and MongoDB through pymongo (``db.backends.mongo``). ``tests/contract/`` runs the
same suite against every backend that can be reached.

Rules every backend obeys:

- Every state change is a compare-and-set on the stored state (and, when given, the version): of
  two racing callers exactly one wins, the other gets :class:`~db.errors.StateConflict` and nothing
  changes. A successful change increments ``version`` and sets ``updated_at``.
- A state change and its history :class:`~db.models.Event` are written atomically: either both are
  stored or neither is (SQL: one transaction; MongoDB: one single-document update).
- Every "create once" is guarded by a unique key and raises :class:`~db.errors.DuplicateKey`.
- Instants go in and come out as aware UTC datetimes with millisecond precision.
- Driver exceptions never escape: connection failures become
  :class:`~db.errors.StoreUnavailable`.
- Lists are paginated by an opaque cursor; pages are stable under concurrent inserts.
- The store never calls the state machines: callers (``db.state_change``) decide, the store
  persists.

The interface is split by noun, as the backends are (``db/backends/*/``): one ABC per noun
(:class:`ProcessStore`, :class:`JobStore`, :class:`UowStore`, :class:`HistoryStore`,
:class:`FireStore`, :class:`SupervisedStore`, :class:`WorkerStore`, :class:`CredentialStore`,
:class:`PayloadStore`, :class:`MessageStore`),
composed with the lifecycle into :class:`Store`. The embedded queue is a capability of its own,
:class:`QueueStore`, which every backend implements too and only :mod:`mq.store_queue` (and the
settlement of a worker's outcome) uses.
"""

from __future__ import annotations

from db.store.boxes import SupervisedStore
from db.store.credentials import CredentialStore
from db.store.fires import FireStore
from db.store.history import HistoryStore
from db.store.jobs import JobStore
from db.store.messages import MessageStore
from db.store.payloads import PayloadStore
from db.store.processes import ProcessStore
from db.store.queue import QueueStore
from db.store.store import MAX_PAGE_SIZE, Store
from db.store.uows import UowStore
from db.store.workers import WorkerStore

__all__ = [
    "MAX_PAGE_SIZE",
    "CredentialStore",
    "FireStore",
    "HistoryStore",
    "JobStore",
    "MessageStore",
    "PayloadStore",
    "ProcessStore",
    "QueueStore",
    "Store",
    "SupervisedStore",
    "UowStore",
    "WorkerStore",
]
