"""Collections and indexes of the MongoDB store.

Every entity that has a state (process, job, unit of work, supervised process) is one document
holding its own history array, so a state change and its event are one single-document update:
atomic without transactions, which a standalone mongod does not offer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pymongo.database import Database

PROCESSES = "processes"
JOBS = "jobs"
UOWS = "uows"
FIRES = "fires"
SUPERVISED = "supervised"
WORKERS = "workers"
#: The embedded queue: one document per message, ``_id`` the time-ordered message id.
QUEUE_MESSAGES = "queue_messages"
#: Tokens and users of mx (hashed secrets); ``_id`` the credential id.
CREDENTIALS = "credentials"
#: The audit trail of mx; ``_id`` the time-ordered entry id.
AUDIT = "audit"
#: Payloads' descriptions (``_id`` the payload id, unique ``sha256``) and their bytes in chunks
#: (``_id`` ``<sha256>:<n>``).
PAYLOADS = "payloads"
PAYLOAD_CHUNKS = "payload_chunks"
#: Messages of units of work (``_id`` ``<uow_id>:<seq>``) and their tallies (``_id`` the uow id).
MESSAGES = "uow_messages"
MESSAGE_TALLIES = "uow_message_tallies"

#: Every collection Tactus owns, in creation order.
COLLECTIONS = (
    PROCESSES,
    JOBS,
    UOWS,
    FIRES,
    SUPERVISED,
    WORKERS,
    QUEUE_MESSAGES,
    CREDENTIALS,
    AUDIT,
    PAYLOADS,
    PAYLOAD_CHUNKS,
    MESSAGES,
    MESSAGE_TALLIES,
)

#: (collection, keys, unique) of every index; ``_id`` is indexed by MongoDB itself. Jobs and units
#: of work keep their string id as ``_id``, workers their ``worker_id``.
INDEXES: tuple[tuple[str, list[tuple[str, int]], bool], ...] = (
    (PROCESSES, [("name", 1)], True),
    (JOBS, [("process", 1), ("timeperiod", 1)], True),
    (JOBS, [("process", 1), ("state", 1), ("timeperiod", 1)], False),
    (JOBS, [("timeperiod", 1), ("process", 1)], False),
    (JOBS, [("state", 1), ("timeperiod", 1)], False),
    (
        UOWS,
        [("process", 1), ("start_timeperiod", 1), ("end_timeperiod", 1), ("run_key", 1)],
        True,
    ),
    (UOWS, [("process", 1), ("_id", 1)], False),
    (UOWS, [("process", 1), ("state", 1), ("_id", 1)], False),
    (UOWS, [("state", 1), ("_id", 1)], False),
    (UOWS, [("state", 1), ("retry_at", 1)], False),
    (UOWS, [("state", 1), ("submitted_at", 1)], False),
    (UOWS, [("state", 1), ("heartbeat_at", 1)], False),
    (UOWS, [("process", 1), ("timeperiod", 1)], False),
    (UOWS, [("parent", 1), ("step", 1)], False),
    (FIRES, [("process", 1), ("scheduled_at", 1)], True),
    (FIRES, [("uow_id", 1), ("outcome", 1), ("process", 1)], False),
    (SUPERVISED, [("box_id", 1), ("process", 1)], True),
    (WORKERS, [("box_id", 1)], False),
    (WORKERS, [("process", 1)], False),
    # The claim: a queue's deliverable messages in _id order; depth and purge: by queue.
    (QUEUE_MESSAGES, [("queue", 1), ("_id", 1)], False),
    (QUEUE_MESSAGES, [("queue", 1), ("available_at", 1)], False),
    (CREDENTIALS, [("kind", 1), ("name", 1)], True),
    (CREDENTIALS, [("secret_hash", 1)], True),
    (PAYLOADS, [("sha256", 1)], True),
    (PAYLOAD_CHUNKS, [("sha256", 1), ("n", 1)], True),
    (MESSAGES, [("uow_id", 1), ("seq", 1)], True),
)


def create_indexes(db: Database, *, nx: bool = False) -> None:
    """Create every missing index (``create_index`` is a no-op for an existing one).

    Args:
        db: the store's database.
        nx: the server is nx-27017, whose inserts fail ("JSON path error near '_id'") once a
            compound index names ``_id``; those indexes only speed up paging, so they are left
            out there.
    """
    for collection, keys, unique in INDEXES:
        if nx and len(keys) > 1 and any(name == "_id" for name, _ in keys):
            continue
        db[collection].create_index(keys, unique=unique)


def drop_collections(db: Database) -> None:
    """Drop the collections Tactus owns, and nothing else in the database."""
    for collection in COLLECTIONS:
        db.drop_collection(collection)
