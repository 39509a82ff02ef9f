"""Registered processes in MongoDB: one document per process, unique by name."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from db.backends.mongo.core import MongoCore
from db.backends.mongo.documents import no_history, process_doc, process_from_doc, push_event
from db.backends.mongo.errors import translated
from db.backends.mongo.schema import PROCESSES
from db.errors import Conflict, DuplicateKey, NotFound

if TYPE_CHECKING:
    from db.models import Event, ProcessRecord
    from db.states import ProcessKind


class ProcessesMixin(MongoCore):
    """The process half of the store interface."""

    @translated
    def list_processes(self, kind: ProcessKind | None = None) -> list[ProcessRecord]:
        """All registered processes (optionally of one kind), ordered by name."""
        condition = {} if kind is None else {"kind": kind.value}
        docs = self._db[PROCESSES].find(condition, projection=no_history()).sort("name", 1)
        return [process_from_doc(doc) for doc in docs]

    @translated
    def get_process(self, name: str) -> ProcessRecord:
        """One process; NotFound if there is none of that name."""
        doc = self._db[PROCESSES].find_one({"name": name}, projection=no_history())
        if doc is None:
            raise NotFound("process", name)
        return process_from_doc(doc)

    @translated
    def insert_process(self, record: ProcessRecord) -> ProcessRecord:
        """Store a new process with version 1; DuplicateKey if the name is taken."""
        doc = {**process_doc(record), "version": 1, "history": []}
        try:
            self._db[PROCESSES].insert_one(doc)
        except DuplicateKeyError as exc:
            raise DuplicateKey("process", record.name) from exc
        return process_from_doc(doc)

    @translated
    def update_process(
        self, record: ProcessRecord, *, expected_version: int, event: Event | None = None
    ) -> ProcessRecord:
        """Compare-and-set a process's entry on its version, with an optional event."""
        values = process_doc(record)
        for kept in ("name", "version", "created_at"):
            del values[kept]
        update: dict[str, Any] = {"$set": values, "$inc": {"version": 1}}
        if event is not None:
            update["$push"] = push_event(event)
        doc = self._db[PROCESSES].find_one_and_update(
            {"name": record.name, "version": expected_version},
            self._portable(update),
            projection=no_history(),
            return_document=ReturnDocument.AFTER,
        )
        if doc is not None:
            return process_from_doc(doc)
        current = self._db[PROCESSES].find_one({"name": record.name}, projection={"version": 1})
        if current is None:
            raise NotFound("process", record.name)
        raise Conflict(
            "process",
            record.name,
            f"expected version {expected_version} but it is {current['version']}"
            " (changed concurrently)",
        )

    @translated
    def delete_process(self, name: str) -> None:
        """Remove a process; NotFound if there is none of that name."""
        if self._db[PROCESSES].delete_one({"name": name}).deleted_count == 0:
            raise NotFound("process", name)
