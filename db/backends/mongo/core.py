"""What every part of the MongoDB store shares: the database handle and the compare-and-set."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pymongo
from pymongo import ReturnDocument

from db.backends.mongo.documents import no_history, push_event
from db.errors import NotFound, StateConflict

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from pymongo.collection import Collection
    from pymongo.database import Database

    from db.models import Event

#: Field of a ``$pull`` added to every update sent to nx-27017 so that it applies the update in
#: Python. Its SQL fast path stores a ``$set`` datetime as a plain string (which range queries
#: then miss) and ``$push`` turns the array's documents into JSON strings. A ``$pull`` with a
#: condition is one of the things that path declines; on a field that never exists it is a no-op
#: on every server.
NX_PYTHON_UPDATE_FIELD = "_nx_python_update"


class MongoCore:
    """Base of the store's parts (one mixin per noun): holds the database they all use."""

    _db: Database
    _client: Any
    #: Whether the server is nx-27017; None until the first update asks.
    _nx: bool | None = None

    def describe(self) -> str:
        """Overridden by the store: its masked address."""
        return "mongodb"

    def _portable(self, update: dict[str, Any]) -> dict[str, Any]:
        """``update`` as sent to this server: on nx-27017, with the no-op ``$pull`` of
        :data:`NX_PYTHON_UPDATE_FIELD`."""
        if not self._server_is_nx():
            return update
        return {**update, "$pull": {NX_PYTHON_UPDATE_FIELD: {"never": True}}}

    def _server_is_nx(self) -> bool:
        """Whether the server is the nx-27017 test server (asked once, on first use)."""
        if self._nx is None:
            # nx-27017 answers buildInfo with its server status, whose "process" names it;
            # MongoDB's buildInfo has no "process". Test doubles (mongomock) are not pymongo
            # clients and are never asked.
            self._nx = isinstance(self._client, pymongo.MongoClient) and (
                self._db.command("buildInfo").get("process") == "nx_27017"
            )
        return self._nx

    def _change(
        self,
        collection: Collection,
        *,
        entity: str,
        key: object,
        match: Mapping[str, Any],
        expected_state: str,
        values: Mapping[str, Any],
        event: Event | None,
        expected_version: int | None = None,
    ) -> dict[str, Any]:
        """Compare-and-set one document's state, apply ``values`` and push ``event``, atomically.

        One ``find_one_and_update`` filters on the state (and version), so of two racing callers
        exactly one matches; the version increments and the event joins the capped history in the
        same single-document write.

        Args:
            collection: where the entity lives.
            entity: its name in errors (``job``, ``uow`` ...).
            key: its key in errors.
            match: the filter selecting the document.
            expected_state: the state value the caller read.
            values: fields to ``$set`` (the new state among them).
            event: appended to the history, or None.
            expected_version: also compare the version, unless None.

        Returns:
            The document after the change, without its history.

        Raises:
            NotFound: no document matches ``match``.
            StateConflict: the state (or version) differs; nothing was written.
        """
        condition = {**match, "state": expected_state}
        if expected_version is not None:
            condition["version"] = expected_version
        update: dict[str, Any] = {"$set": dict(values), "$inc": {"version": 1}}
        if event is not None:
            update["$push"] = push_event(event)
        doc = collection.find_one_and_update(
            condition,
            self._portable(update),
            projection=no_history(),
            return_document=ReturnDocument.AFTER,
        )
        if doc is not None:
            return doc
        # Lost the race, or never had a chance: read what is there to say which.
        current = collection.find_one(match, projection={"state": True})
        if current is None:
            raise NotFound(entity, key)
        raise StateConflict(entity, key, expected_state, current.get("state"))

    def _push(self, collection: Collection, match: Mapping[str, Any], event: Event) -> bool:
        """Append ``event`` to one document's history; False if no document matches."""
        result = collection.update_one(match, self._portable({"$push": push_event(event)}))
        return result.matched_count == 1

    def _count_by_process_and_state(
        self,
        collection: str,
        process: str | Iterable[str] | None,
        *,
        states: list[str] | None = None,
        match: dict[str, Any] | None = None,
    ) -> dict[tuple[str, str], int]:
        """Number of documents per (process, state value) in ``collection``, of one process
        (a name), several (any other iterable of names) or all (None); of ``states`` only
        when given; ``match`` adds conditions."""
        match = dict(match or {})
        if isinstance(process, str):
            match["process"] = process
        elif process is not None:
            match["process"] = {"$in": sorted(set(process))}
        if states is not None:
            match["state"] = {"$in": states}
        # Group on one string, "state:process": nx-27017 leaves a compound group _id such as
        # {"p": "$process", "s": "$state"} unevaluated. States never contain ":".
        pipeline: list[dict[str, Any]] = [
            {"$match": match},
            {
                "$group": {
                    "_id": {"$concat": ["$state", ":", "$process"]},
                    "count": {"$sum": 1},
                }
            },
        ]
        counts: dict[tuple[str, str], int] = {}
        for row in self._db[collection].aggregate(pipeline):
            state, name = row["_id"].split(":", 1)
            counts[(name, state)] = row["count"]
        return counts
