"""Units of work in MongoDB: one document each, ``_id`` the Tactus id, its history embedded."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pymongo.errors import DuplicateKeyError

from db.backends.base import (
    UOW_CHANGEABLE_FIELDS,
    check_changes,
    check_limit,
    decode_cursor,
    encode_cursor,
)
from db.backends.mongo.core import MongoCore
from db.backends.mongo.documents import (
    UOW_INSTANTS,
    event_doc,
    no_history,
    stored_values,
    to_utc,
    uow_doc,
    uow_from_doc,
)
from db.backends.mongo.errors import translated
from db.backends.mongo.schema import UOWS
from db.errors import DuplicateKey, InvalidInput, NotFound, StateConflict
from db.models import Page
from db.states import UowState

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from db.models import Event, UnitOfWork, UowQuery, UowTransition


class UowsMixin(MongoCore):
    """The unit-of-work half of the store interface."""

    @translated
    def create_uow(self, uow: UnitOfWork, *, event: Event | None = None) -> UnitOfWork:
        """Insert a unit of work, its creation event in the same document."""
        doc = uow_doc(uow)
        if event is not None:
            doc["history"] = [event_doc(event)]
        try:
            self._db[UOWS].insert_one(doc)
        except DuplicateKeyError as exc:
            raise DuplicateKey("uow", _unique_key(uow.process, doc)) from exc
        return uow_from_doc(doc)

    @translated
    def create_uows(
        self, items: Sequence[tuple[UnitOfWork, Event | None]]
    ) -> list[UnitOfWork | DuplicateKey]:
        """One document insert each (a unit of work and its history are one document); every
        document is built, so every value checked, before the first is written."""
        docs = []
        for uow, event in items:
            doc = uow_doc(uow)
            if event is not None:
                doc["history"] = [event_doc(event)]
            docs.append((uow, doc))
        done: list[UnitOfWork | DuplicateKey] = []
        for uow, doc in docs:
            try:
                self._db[UOWS].insert_one(doc)
            except DuplicateKeyError:
                done.append(DuplicateKey("uow", _unique_key(uow.process, doc)))
            else:
                done.append(uow_from_doc(doc))
        return done

    @translated
    def get_uow(self, uow_id: str) -> UnitOfWork:
        """One unit of work; NotFound if there is none."""
        doc = self._db[UOWS].find_one({"_id": uow_id}, projection=no_history())
        if doc is None:
            raise NotFound("uow", uow_id)
        return uow_from_doc(doc)

    @translated
    def find_uow_by_key(
        self, process: str, start_timeperiod: str, end_timeperiod: str, run_key: str
    ) -> UnitOfWork | None:
        """The unit of work with that unique key, or None."""
        doc = self._db[UOWS].find_one(
            {
                "process": process,
                "start_timeperiod": start_timeperiod,
                "end_timeperiod": end_timeperiod,
                "run_key": run_key,
            },
            projection=no_history(),
        )
        return None if doc is None else uow_from_doc(doc)

    @translated
    def find_uows(
        self, query: UowQuery, *, limit: int = 100, cursor: str | None = None
    ) -> Page[UnitOfWork]:
        """Units of work matching ``query``, keyset-paginated by id."""
        limit = check_limit(limit)
        clauses: list[dict[str, Any]] = []
        for field, value in (
            ("process", query.process),
            ("kind", None if query.kind is None else query.kind.value),
            ("timeperiod", query.timeperiod),
        ):
            if value is not None:
                clauses.append({field: value})
        if query.states is not None:
            clauses.append({"state": {"$in": sorted(s.value for s in query.states)}})
        if query.retry_due_before is not None:
            due = to_utc(query.retry_due_before, "retry_due_before")
            clauses.append({"retry_at": {"$lte": due}})
        if query.submitted_before is not None:
            submitted = to_utc(query.submitted_before, "submitted_before")
            clauses.append({"submitted_at": {"$lt": submitted}})
        if query.heartbeat_before is not None:
            beat = to_utc(query.heartbeat_before, "heartbeat_before")
            # {field: None} matches both null and a missing field, on MongoDB as on nx-27017.
            clauses.append({"$or": [{"heartbeat_at": {"$lt": beat}}, {"heartbeat_at": None}]})
        if query.parent is not None:
            clauses.append({"parent": query.parent})
        if query.steps is not None:
            clauses.append({"step": {"$in": sorted(query.steps)}})
        if query.top_level:
            clauses.append({"parent": {"$in": [None]}})
        if query.flow is not None:
            # documents stored before flows have no "flow" field: not a flow run
            clauses.append({"flow": True} if query.flow else {"flow": {"$ne": True}})
        if cursor is not None:
            clauses.append({"_id": {"$lt" if query.newest_first else "$gt": _uow_cursor(cursor)}})
        docs = list(
            self._db[UOWS]
            .find({"$and": clauses} if clauses else {}, projection=no_history())
            .sort("_id", -1 if query.newest_first else 1)
            .limit(limit + 1)
        )
        items = [uow_from_doc(doc) for doc in docs[:limit]]
        next_cursor = encode_cursor(items[-1].id) if len(docs) > limit else None
        return Page(items, next_cursor)

    @translated
    def transition_uow(
        self,
        uow_id: str,
        *,
        expected_state: UowState,
        new_state: UowState,
        event: Event,
        changes: Mapping[str, Any] | None = None,
        expected_version: int | None = None,
    ) -> UnitOfWork:
        """Compare-and-set a unit of work's state, apply ``changes``, append ``event``."""
        values = self._uow_values(changes)
        values["state"] = UowState(new_state).value
        values["updated_at"] = to_utc(event.at, "event.at")
        return self._apply(uow_id, UowState(expected_state), values, event, expected_version)

    @translated
    def transition_uows(
        self, steps: Sequence[UowTransition]
    ) -> list[UnitOfWork | NotFound | StateConflict]:
        """One single-document compare-and-set per step, in order (a unit of work is one
        document: no multi-document transaction is needed for any one step). Every step's
        changes and event instant are checked before the first is written, so bad input
        writes nothing."""
        for step in steps:
            self._uow_values(step.changes)
            to_utc(step.event.at, "event.at")
        return super().transition_uows(steps)

    @translated
    def update_uow(
        self,
        uow_id: str,
        *,
        expected_state: UowState,
        changes: Mapping[str, Any],
        expected_version: int | None = None,
    ) -> UnitOfWork:
        """Apply ``changes`` if the state is still ``expected_state``; no history.

        ``updated_at`` is left as it is: no event, hence no instant, comes with the change.
        """
        values = self._uow_values(changes)
        return self._apply(uow_id, UowState(expected_state), values, None, expected_version)

    @translated
    def count_uows(
        self,
        process: str | Iterable[str] | None = None,
        *,
        states: Iterable[UowState] | None = None,
    ) -> dict[tuple[str, UowState], int]:
        """Number of units of work per (process, state), of one, several or all processes,
        of the given ``states`` only when given."""
        wanted = None if states is None else sorted(UowState(s).value for s in states)
        if wanted == []:
            return {}
        # a flow run counts once, not once per step ($in [null] also matches a missing field,
        # on MongoDB as on nx-27017, whose {"parent": None} misses some beside other clauses)
        counts = self._count_by_process_and_state(
            UOWS, process, states=wanted, match={"parent": {"$in": [None]}}
        )
        return {(name, UowState(state)): count for (name, state), count in counts.items()}

    @staticmethod
    def _uow_values(changes: Mapping[str, Any] | None) -> dict[str, Any]:
        return stored_values(
            check_changes("uow", dict(changes or {}), UOW_CHANGEABLE_FIELDS), UOW_INSTANTS
        )

    def _apply(
        self,
        uow_id: str,
        expected_state: UowState,
        values: dict[str, Any],
        event: Event | None,
        expected_version: int | None,
    ) -> UnitOfWork:
        try:
            doc = self._change(
                self._db[UOWS],
                entity="uow",
                key=uow_id,
                match={"_id": uow_id},
                expected_state=expected_state.value,
                values=values,
                event=event,
                expected_version=expected_version,
            )
        except DuplicateKeyError as exc:
            # Widening end_timeperiod onto another unit of work's unique key.
            end = values.get("end_timeperiod")
            raise DuplicateKey("uow", f"{uow_id} (end_timeperiod {end})") from exc
        except StateConflict as exc:
            # nx-27017 answers a unique-index violation in find_one_and_update with "no match"
            # instead of an error, so the state looks unchanged; name the real cause.
            if exc.actual == exc.expected and "end_timeperiod" in values:
                self._refuse_taken_key(uow_id, values["end_timeperiod"])
            raise
        return uow_from_doc(doc)

    def _refuse_taken_key(self, uow_id: str, end_timeperiod: str) -> None:
        current = self._db[UOWS].find_one({"_id": uow_id}, projection=no_history())
        if current is None:
            return
        key = {**current, "end_timeperiod": end_timeperiod}
        taken = self._db[UOWS].find_one(
            {
                "process": current["process"],
                "start_timeperiod": current["start_timeperiod"],
                "end_timeperiod": end_timeperiod,
                "run_key": current["run_key"],
                "_id": {"$ne": uow_id},
            },
            projection={"_id": True},
        )
        if taken is not None:
            raise DuplicateKey("uow", _unique_key(current["process"], key))


def _unique_key(process: str, doc: Mapping[str, Any]) -> str:
    return f"{process}/{doc['start_timeperiod']}-{doc['end_timeperiod']}/{doc['run_key']}"


def _uow_cursor(cursor: str) -> str:
    (value,) = decode_cursor(cursor, 1)
    if not isinstance(value, str):
        raise InvalidInput("cursor", "is not a cursor this server issued")
    return value
