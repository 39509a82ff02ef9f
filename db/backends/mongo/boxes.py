"""Boxes in MongoDB: supervised processes (unique by box and process) and worker registrations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pymongo.errors import DuplicateKeyError

from db.backends.base import SUPERVISED_CHANGEABLE_FIELDS, check_changes
from db.backends.mongo.core import MongoCore
from db.backends.mongo.documents import (
    SUPERVISED_INSTANTS,
    no_history,
    push_event,
    stored_values,
    supervised_doc,
    supervised_from_doc,
    to_utc,
    worker_doc,
    worker_from_doc,
)
from db.backends.mongo.errors import translated
from db.backends.mongo.schema import SUPERVISED, WORKERS
from db.errors import NotFound
from db.states import SupervisedState, WorkerState

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

    from db.models import Event, SupervisedProcess, WorkerRecord


class SupervisedMixin(MongoCore):
    """The supervised-process half of the store interface."""

    @translated
    def list_supervised(self, box_id: str | None = None) -> list[SupervisedProcess]:
        """Supervised processes of one box, or of every box, ordered by (box_id, process)."""
        condition = {} if box_id is None else {"box_id": box_id}
        docs = (
            self._db[SUPERVISED]
            .find(condition, projection=no_history())
            .sort([("box_id", 1), ("process", 1)])
        )
        return [supervised_from_doc(doc) for doc in docs]

    @translated
    def get_supervised(self, box_id: str, process: str) -> SupervisedProcess:
        """One supervised process; NotFound if there is none."""
        doc = self._db[SUPERVISED].find_one(
            {"box_id": box_id, "process": process}, projection=no_history()
        )
        if doc is None:
            raise NotFound("supervised", f"{box_id}/{process}")
        return supervised_from_doc(doc)

    @translated
    def ensure_supervised(self, record: SupervisedProcess) -> SupervisedProcess:
        """Insert the record if (box_id, process) is new; return the stored one either way."""
        # Insert first and read after: the unique index settles a race between two supervisors.
        try:
            self._db[SUPERVISED].insert_one(supervised_doc(record))
        except DuplicateKeyError:
            pass
        return self.get_supervised(record.box_id, record.process)

    @translated
    def set_desired(self, box_id: str, process: str, desired: bool, *, event: Event) -> None:
        """Set whether the operator wants the process running; appends ``event``."""
        result = self._db[SUPERVISED].update_one(
            {"box_id": box_id, "process": process},
            self._portable(
                {
                    "$set": {"desired": bool(desired), "updated_at": to_utc(event.at, "event.at")},
                    "$inc": {"version": 1},
                    "$push": push_event(event),
                }
            ),
        )
        if result.matched_count == 0:
            raise NotFound("supervised", f"{box_id}/{process}")

    @translated
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
        """Compare-and-set the supervised state, apply ``changes`` and append ``event``."""
        allowed = check_changes("supervised", dict(changes or {}), SUPERVISED_CHANGEABLE_FIELDS)
        values = stored_values(allowed, SUPERVISED_INSTANTS)
        values["state"] = SupervisedState(new_state).value
        values["updated_at"] = to_utc(event.at, "event.at")
        doc = self._change(
            self._db[SUPERVISED],
            entity="supervised",
            key=f"{box_id}/{process}",
            match={"box_id": box_id, "process": process},
            expected_state=SupervisedState(expected_state).value,
            values=values,
            event=event,
        )
        return supervised_from_doc(doc)

    @translated
    def update_supervised_stats(
        self, box_id: str, process: str, stats: Mapping[str, Any], at: datetime
    ) -> None:
        """Refresh the psutil facts shown by the page (no state change, no history)."""
        self._db[SUPERVISED].update_one(
            {"box_id": box_id, "process": process},
            self._portable({"$set": {"stats": dict(stats), "updated_at": to_utc(at, "at")}}),
        )

    @translated
    def delete_supervised(self, box_id: str, process: str) -> None:
        """Forget a process on a box (no error if absent)."""
        self._db[SUPERVISED].delete_one({"box_id": box_id, "process": process})


class WorkersMixin(MongoCore):
    """The worker half of the store interface; ``_id`` is the worker id."""

    @translated
    def save_worker(self, worker: WorkerRecord) -> None:
        """Insert or replace a worker's registration."""
        doc = worker_doc(worker)
        worker_id = doc.pop("_id")
        self._db[WORKERS].update_one({"_id": worker_id}, self._portable({"$set": doc}), upsert=True)

    @translated
    def beat_worker(self, worker_id: str, at: datetime, *, current_uow: str | None = None) -> None:
        """Record a heartbeat and what the worker runs now (a lost worker is alive again);
        NotFound if it is not registered."""
        beat = {"heartbeat_at": to_utc(at, "at"), "current_uow": current_uow}
        # Two single-document writes, each atomic: a lost worker revived, else a plain beat.
        revived = self._db[WORKERS].update_one(
            {"_id": worker_id, "state": WorkerState.LOST.value},
            self._portable({"$set": {**beat, "state": WorkerState.ALIVE.value}}),
        )
        if revived.matched_count:
            return
        result = self._db[WORKERS].update_one({"_id": worker_id}, self._portable({"$set": beat}))
        if result.matched_count == 0:
            raise NotFound("worker", worker_id)

    @translated
    def set_worker_state(self, worker_id: str, state: str, *, expected_state: str) -> bool:
        """Compare-and-set a worker's state; True if this call changed it."""
        result = self._db[WORKERS].update_one(
            {"_id": worker_id, "state": expected_state},
            self._portable({"$set": {"state": state}}),
        )
        return result.matched_count == 1

    @translated
    def list_workers(
        self, *, box_id: str | None = None, process: str | None = None
    ) -> list[WorkerRecord]:
        """Registered workers, ordered by (process, worker_id)."""
        condition = {
            name: value
            for name, value in (("box_id", box_id), ("process", process))
            if value is not None
        }
        docs = self._db[WORKERS].find(condition).sort([("process", 1), ("_id", 1)])
        return [worker_from_doc(doc) for doc in docs]

    @translated
    def delete_worker(self, worker_id: str) -> None:
        """Forget a worker (no error if absent)."""
        self._db[WORKERS].delete_one({"_id": worker_id})
