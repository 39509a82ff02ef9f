"""Jobs in MongoDB: one document per (process, timeperiod), its history embedded."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from pymongo.errors import BulkWriteError, DuplicateKeyError

from db.backends.base import (
    JOB_CHANGEABLE_FIELDS,
    check_changes,
    check_limit,
    decode_cursor,
    encode_cursor,
)
from db.backends.mongo.core import MongoCore
from db.backends.mongo.documents import (
    event_doc,
    job_doc,
    job_from_doc,
    no_history,
    to_utc,
    uow_doc,
    uow_from_doc,
)
from db.backends.mongo.errors import only_duplicates, translated
from db.backends.mongo.schema import JOBS, UOWS
from db.errors import DuplicateKey, InvalidInput, NotFound, StateConflict, StoreUnavailable
from db.models import Page
from db.states import JobState, UowState

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from db.models import Event, Job, JobQuery, UnitOfWork

#: The fields of a unit of work's unique key.
_UOW_KEY = ("process", "start_timeperiod", "end_timeperiod", "run_key")
#: Jobs sent per ``insert_many`` by ``ensure_jobs`` (one round trip each).
ENSURE_BATCH = 1000


class JobsMixin(MongoCore):
    """The job half of the store interface."""

    @translated
    def create_job(self, job: Job) -> Job:
        """Insert one job; DuplicateKey if (process, timeperiod) exists."""
        doc = job_doc(job)
        try:
            self._db[JOBS].insert_one(doc)
        except DuplicateKeyError as exc:
            raise DuplicateKey("job", job.key) from exc
        return job_from_doc(doc)

    @translated
    def ensure_jobs(self, jobs: Iterable[Job]) -> int:
        """Insert the jobs that do not exist yet; return how many this call created.

        Unordered ``insert_many`` lets the unique (process, timeperiod) index refuse the jobs
        that exist (or that a racing caller inserts first) while the others go in, so racing
        callers never fail on each other and never create a job twice.
        """
        created = 0
        pending = iter(jobs)
        while batch := [job_doc(job) for job in itertools.islice(pending, ENSURE_BATCH)]:
            try:
                created += len(self._db[JOBS].insert_many(batch, ordered=False).inserted_ids)
            except BulkWriteError as exc:
                if not only_duplicates(exc):
                    raise StoreUnavailable(
                        f"{self.describe()} refused jobs: {exc.details.get('writeErrors')}"
                    ) from exc
                created += exc.details.get("nInserted", 0)
        return created

    @translated
    def get_job(self, process: str, timeperiod: str) -> Job:
        """One job; NotFound if there is none."""
        doc = self._db[JOBS].find_one(
            {"process": process, "timeperiod": timeperiod}, projection=no_history()
        )
        if doc is None:
            raise NotFound("job", f"{process}/{timeperiod}")
        return job_from_doc(doc)

    @translated
    def find_jobs(
        self, query: JobQuery, *, limit: int = 100, cursor: str | None = None
    ) -> Page[Job]:
        """Jobs matching ``query``, keyset-paginated by (timeperiod, process)."""
        limit = check_limit(limit)
        clauses: list[dict[str, Any]] = []
        if query.process is not None:
            clauses.append({"process": query.process})
        if query.processes is not None:
            clauses.append({"process": {"$in": sorted(query.processes)}})
        if query.states is not None:
            clauses.append({"state": {"$in": sorted(s.value for s in query.states)}})
        bounds = {}
        if query.from_timeperiod is not None:
            bounds["$gte"] = query.from_timeperiod
        if query.to_timeperiod is not None:
            bounds["$lt"] = query.to_timeperiod
        if bounds:
            clauses.append({"timeperiod": bounds})
        # Newest first is timeperiod descending; the process breaks ties ascending either way.
        direction = -1 if query.newest_first else 1
        if cursor is not None:
            timeperiod, process = _job_cursor(cursor)
            after = {"$lt" if query.newest_first else "$gt": timeperiod}
            clauses.append(
                {
                    "$or": [
                        {"timeperiod": after},
                        {"timeperiod": timeperiod, "process": {"$gt": process}},
                    ]
                }
            )
        docs = list(
            self._db[JOBS]
            .find({"$and": clauses} if clauses else {}, projection=no_history())
            .sort([("timeperiod", direction), ("process", 1)])
            .limit(limit + 1)
        )
        items = [job_from_doc(doc) for doc in docs[:limit]]
        next_cursor = None
        if len(docs) > limit:
            next_cursor = encode_cursor(items[-1].timeperiod, items[-1].process)
        return Page(items, next_cursor)

    @translated
    def transition_job(
        self,
        process: str,
        timeperiod: str,
        *,
        expected_state: JobState,
        new_state: JobState,
        event: Event,
        changes: Mapping[str, Any] | None = None,
        expected_version: int | None = None,
    ) -> Job:
        """Compare-and-set a job's state, apply ``changes`` and append ``event``, atomically."""
        values = check_changes("job", dict(changes or {}), JOB_CHANGEABLE_FIELDS)
        values["state"] = JobState(new_state).value
        values["updated_at"] = to_utc(event.at, "event.at")
        doc = self._change(
            self._db[JOBS],
            entity="job",
            key=f"{process}/{timeperiod}",
            match={"process": process, "timeperiod": timeperiod},
            expected_state=JobState(expected_state).value,
            values=values,
            event=event,
            expected_version=expected_version,
        )
        return job_from_doc(doc)

    @translated
    def start_job(
        self,
        process: str,
        timeperiod: str,
        *,
        expected_state: JobState,
        expected_version: int,
        new_state: JobState,
        event: Event,
        uow: UnitOfWork,
        uow_event: Event,
    ) -> tuple[Job, UnitOfWork]:
        """Two single-document writes, in the one order that is safe to interrupt: the unit of
        work first (with its creation event), then the job's compare-and-set (with its event).

        - Interrupted after the first write: the unit of work waits, ``requested``, under a key
          that names this job version; the next start of the same version finds it by that key
          and links it (recovery may publish it meanwhile, and a worker run it: it is the job's
          work). Nothing cancels it.
        - Racing callers: one compare-and-set wins. A loser with the same key adopted the
          winner's unit of work and leaves it; a loser that inserted its own (another window)
          deletes it, which is safe because nothing linked it and, if still ``requested``,
          nobody ran it.
        """
        self._check_start(process, timeperiod, uow)
        doc = uow_doc(uow)
        doc["history"] = [event_doc(uow_event)]
        event_doc(event)  # a bad instant: refused before the first write
        values = {"state": JobState(new_state).value, "updated_at": to_utc(event.at, "event.at")}
        match = {"process": process, "timeperiod": timeperiod}
        key = f"{process}/{timeperiod}"
        try:
            self._db[UOWS].insert_one(doc)
            linked, inserted = uow_from_doc(doc), True
        except DuplicateKeyError as exc:
            stored = self._db[UOWS].find_one(
                {name: doc[name] for name in _UOW_KEY}, projection=no_history()
            )
            if stored is None:
                # Withdrawn since the insert failed: its inserter lost the job's compare-and-set,
                # so the job changed and this call would lose it too.
                current = self._db[JOBS].find_one(match, projection={"state": True})
                if current is None:
                    raise NotFound("job", key) from exc
                raise StateConflict("job", key, str(expected_state), current["state"]) from exc
            linked, inserted = self._start_twin(timeperiod, uow, uow_from_doc(stored)), False
        try:
            job = self._change(
                self._db[JOBS],
                entity="job",
                key=key,
                match=match,
                expected_state=JobState(expected_state).value,
                values={**values, "uow_id": linked.id},
                event=self._start_event(event, linked, adopted=not inserted),
                expected_version=expected_version,
            )
        except (StateConflict, NotFound):
            if inserted:
                self._withdraw(match, linked.id)
            raise
        return job_from_doc(job), linked

    def _withdraw(self, match: Mapping[str, Any], uow_id: str) -> None:
        """Delete the unit of work a losing :meth:`start_job` inserted, unless a racer that
        adopted it linked it, or a worker claimed it (then it is left to run: at least once)."""
        if self._db[JOBS].find_one({**match, "uow_id": uow_id}, projection={"_id": True}):
            return
        self._db[UOWS].delete_one({"_id": uow_id, "state": UowState.REQUESTED.value})

    @translated
    def count_jobs(
        self, process: str | Iterable[str] | None = None
    ) -> dict[tuple[str, JobState], int]:
        """Number of jobs per (process, state), of one process, several or all."""
        return {
            (name, JobState(state)): count
            for (name, state), count in self._count_by_process_and_state(JOBS, process).items()
        }


def _job_cursor(cursor: str) -> tuple[str, str]:
    values = decode_cursor(cursor, 2)
    if not all(isinstance(value, str) for value in values):
        raise InvalidInput("cursor", "is not a cursor this server issued")
    return values[0], values[1]
