"""Messages of units of work in MongoDB (SPEC section 12).

One document per stored message (``_id`` ``<uow_id>:<seq>``, unique by (uow_id, seq)), and one
tally per unit of work: how many messages it emitted and how many the cap dropped. An append
reserves its ``seq`` numbers with one atomic ``$inc`` of the tally, so concurrent appenders never
share a number.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pymongo import ReturnDocument

from db.backends.base import check_count, check_limit
from db.backends.mongo.core import MongoCore
from db.backends.mongo.documents import aware_utc, to_utc
from db.backends.mongo.errors import translated
from db.backends.mongo.schema import MESSAGE_TALLIES, MESSAGES
from db.models import MessagePage, UowMessage

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime


class MessagesMixin(MongoCore):
    """The message part of the store interface."""

    @translated
    def append_messages(
        self, uow_id: str, attempt: int, messages: Sequence[tuple[datetime, str]], *, limit: int
    ) -> int:
        """Reserve ``seq`` numbers, store the messages within ``limit``, count the others."""
        limit = check_count(limit, "limit")
        texts = [(to_utc(at, "at"), text) for at, text in messages]
        count = len(texts)
        if count == 0:
            return 0
        tallies = self._db[MESSAGE_TALLIES]
        tally = tallies.find_one_and_update(
            {"_id": uow_id},
            self._portable({"$inc": {"emitted": count}}),
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        first = int(tally["emitted"]) - count + 1
        docs = [
            {
                "_id": f"{uow_id}:{first + i:09d}",
                "uow_id": uow_id,
                "seq": first + i,
                "attempt": attempt,
                "at": at,
                "text": text,
            }
            for i, (at, text) in enumerate(texts)
            if first + i <= limit
        ]
        if docs:
            self._db[MESSAGES].insert_many(docs, ordered=True)
        dropped = count - len(docs)
        if dropped:
            tallies.update_one({"_id": uow_id}, self._portable({"$inc": {"dropped": dropped}}))
        return len(docs)

    @translated
    def list_messages(
        self, uow_id: str, *, after: int = 0, limit: int = 100, newest: bool = False
    ) -> MessagePage:
        """Messages above ``after`` in ``seq`` order (the last ``limit`` when ``newest``)."""
        after = check_count(after, "after", minimum=0)
        limit = check_limit(limit)
        found = self._db[MESSAGES].find({"uow_id": uow_id, "seq": {"$gt": after}})
        if newest:
            docs = list(found.sort("seq", -1).limit(limit))[::-1]
        else:
            docs = list(found.sort("seq", 1).limit(limit + 1))
        tally = self._db[MESSAGE_TALLIES].find_one({"_id": uow_id}) or {}
        items = [_message_from(doc) for doc in docs[:limit]]
        return MessagePage(
            items=items, dropped=int(tally.get("dropped", 0)), more=len(docs) > limit
        )


def _message_from(doc: Mapping[str, Any]) -> UowMessage:
    return UowMessage(
        uow_id=doc["uow_id"],
        seq=int(doc["seq"]),
        attempt=int(doc["attempt"]),
        at=aware_utc(doc["at"]),
        text=doc["text"],
    )
