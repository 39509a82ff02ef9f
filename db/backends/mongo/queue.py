"""The embedded queue in MongoDB (``broker_uri = store``): one document per message.

A message is deliverable when ``available_at`` has come and it is unclaimed (``claimed_until``
null) or its claim has expired. A claim is one ``find_one_and_update`` per message, filtered on
that condition and sorted by ``_id`` (our time-ordered id): the server matches and updates one
document atomically, so of racing consumers each message goes to exactly one, without
transactions (a standalone mongod has none). Ack, release and extend filter on ``claimed_by``:
only the claim holder's call matches.

nx-27017 (the test server) needs two detours, both harmless on MongoDB: updates that ``$set``
datetimes go through :meth:`MongoCore._portable`, and depth counts use only range conditions,
because its ``count_documents`` never matches ``field: null``. One quirk remains: it compares
instants through SQLite's ``datetime()``, to the whole second, so there a delay or a claim can
end up to a second early (MongoDB compares milliseconds).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pymongo import ReturnDocument

from db.backends.base import check_limit
from db.backends.mongo.core import MongoCore
from db.backends.mongo.documents import aware_utc, from_stored, to_utc
from db.backends.mongo.errors import translated
from db.backends.mongo.schema import QUEUE_MESSAGES
from db.errors import InvalidInput
from db.ids import new_ids
from db.models import QueuedMessage

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


class QueueMixin(MongoCore):
    """The embedded queue (:class:`~db.store.QueueStore`) on MongoDB."""

    @translated
    def queue_put(
        self, queue: str, bodies: Sequence[bytes], *, available_at: datetime
    ) -> list[str]:
        """Insert the messages, in order; their ids sort in publish order.

        One ordered ``insert_many``: one round trip, but (without transactions) not atomic: if
        the server fails midway, the first messages stay stored and the error is raised.
        """
        at = to_utc(available_at, "available_at")
        if not bodies:
            return []
        ids = new_ids(len(bodies))
        created = to_utc(datetime.now(UTC), "created_at")
        docs = [
            {
                "_id": message_id,
                "queue": queue,
                "body": _as_bytes(body),
                "available_at": at,
                "deliveries": 0,
                "claimed_by": None,
                "claimed_until": None,
                "created_at": created,
            }
            for message_id, body in zip(ids, bodies, strict=True)
        ]
        self._db[QUEUE_MESSAGES].insert_many(docs, ordered=True)
        return ids

    @translated
    def queue_claim(
        self,
        queue: str,
        consumer: str,
        *,
        now: datetime,
        visibility: timedelta,
        limit: int = 1,
    ) -> list[QueuedMessage]:
        """Claim up to ``limit`` deliverable messages, oldest id first, one atomic update each."""
        limit = check_limit(limit)
        if not isinstance(visibility, timedelta) or visibility <= timedelta(0):
            raise InvalidInput("visibility", f"must be a positive timedelta (got {visibility!r})")
        at = to_utc(now, "now")
        update = self._portable(
            {
                "$set": {"claimed_by": consumer, "claimed_until": to_utc(at + visibility, "now")},
                "$inc": {"deliveries": 1},
            }
        )
        collection = self._db[QUEUE_MESSAGES]
        claimed: list[QueuedMessage] = []
        while len(claimed) < limit:
            doc = collection.find_one_and_update(
                _deliverable(queue, at),
                update,
                sort=[("_id", 1)],
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                break
            claimed.append(_message(doc))
        return claimed

    @translated
    def queue_ack(
        self,
        message_id: str,
        consumer: str,
        *,
        then_put: Sequence[tuple[str, bytes]] = (),
        available_at: datetime | None = None,
    ) -> bool:
        """Insert ``then_put`` (one ordered insert per queue, as :meth:`queue_put`), then delete
        the message if ``consumer`` holds its claim. Not one transaction: a failure between the
        two leaves the messages put and the claim held (it expires and is delivered again)."""
        if then_put:
            if available_at is None:
                raise ValueError("then_put needs available_at")
            by_queue: dict[str, list[bytes]] = {}
            for queue, body in then_put:
                by_queue.setdefault(queue, []).append(body)
            for queue, bodies in by_queue.items():
                self.queue_put(queue, bodies, available_at=available_at)
        result = self._db[QUEUE_MESSAGES].delete_one({"_id": message_id, "claimed_by": consumer})
        return result.deleted_count == 1

    @translated
    def queue_ack_many(self, message_ids: Sequence[str], consumer: str) -> int:
        """Delete the messages whose claim ``consumer`` holds (one ``delete_many``)."""
        ids = list(dict.fromkeys(message_ids))
        if not ids:
            return 0
        found = self._db[QUEUE_MESSAGES].delete_many({"_id": {"$in": ids}, "claimed_by": consumer})
        return found.deleted_count

    @translated
    def queue_release(
        self, message_id: str, consumer: str, *, available_at: datetime, to_queue: str | None = None
    ) -> bool:
        """Unclaim the message (into ``to_queue`` if given) if ``consumer`` holds its claim."""
        values: dict[str, Any] = {
            "claimed_by": None,
            "claimed_until": None,
            "available_at": to_utc(available_at, "available_at"),
        }
        if to_queue is not None:
            values["queue"] = to_queue
        result = self._db[QUEUE_MESSAGES].update_one(
            {"_id": message_id, "claimed_by": consumer}, self._portable({"$set": values})
        )
        return result.matched_count == 1

    @translated
    def queue_extend(self, message_id: str, consumer: str, *, until: datetime) -> bool:
        """Move the claim's expiry to ``until`` if ``consumer`` holds it."""
        result = self._db[QUEUE_MESSAGES].update_one(
            {"_id": message_id, "claimed_by": consumer},
            self._portable({"$set": {"claimed_until": to_utc(until, "until")}}),
        )
        return result.matched_count == 1

    @translated
    def queue_next_available(self, queue: str, *, now: datetime) -> datetime | None:
        """The earliest availability of an unclaimed message of ``queue``: one ``find_one``,
        sorted on ``available_at``."""
        at = to_utc(now, "now")
        doc = self._db[QUEUE_MESSAGES].find_one(
            {"queue": queue, "$or": [{"claimed_until": None}, {"claimed_until": {"$lte": at}}]},
            projection={"available_at": True},
            sort=[("available_at", 1)],
        )
        return None if doc is None else aware_utc(doc["available_at"])

    @translated
    def queue_depth(self, queue: str, *, now: datetime) -> dict[str, int]:
        """Ready, delayed and claimed messages of ``queue`` at ``now``.

        Counted from range conditions only (see the module doc): a claim is taken only of an
        available message, so a delayed message under a live claim exists only if a caller's
        ``now`` went backwards; it is subtracted all the same.
        """
        at = to_utc(now, "now")
        collection = self._db[QUEUE_MESSAGES]
        total = collection.count_documents({"queue": queue})
        claimed = collection.count_documents({"queue": queue, "claimed_until": {"$gt": at}})
        later = collection.count_documents({"queue": queue, "available_at": {"$gt": at}})
        later_claimed = collection.count_documents(
            {"queue": queue, "available_at": {"$gt": at}, "claimed_until": {"$gt": at}}
        )
        delayed = later - later_claimed
        return {"ready": total - claimed - delayed, "delayed": delayed, "claimed": claimed}

    @translated
    def queue_purge(self, queue: str) -> int:
        """Delete every message of ``queue``; how many there were."""
        return self._db[QUEUE_MESSAGES].delete_many({"queue": queue}).deleted_count


def _deliverable(queue: str, now: datetime) -> dict[str, Any]:
    """Filter of the messages of ``queue`` a consumer may claim at ``now``."""
    return {
        "queue": queue,
        "available_at": {"$lte": now},
        "$or": [{"claimed_until": None}, {"claimed_until": {"$lte": now}}],
    }


def _message(doc: Mapping[str, Any]) -> QueuedMessage:
    return QueuedMessage(
        id=doc["_id"],
        queue=doc["queue"],
        body=bytes(doc["body"]),
        available_at=aware_utc(doc["available_at"]),
        deliveries=doc["deliveries"],
        claimed_by=doc.get("claimed_by"),
        claimed_until=from_stored(doc.get("claimed_until")),
        created_at=aware_utc(doc["created_at"]),
    )


def _as_bytes(body: object) -> bytes:
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    raise InvalidInput("body", f"must be bytes (got {type(body).__name__})")
