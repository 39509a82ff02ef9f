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
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from db.errors import DuplicateKey, InvalidInput, NotFound, StateConflict
from db.models import QueueSettled
from db.states import UowKind

if TYPE_CHECKING:
    from types import TracebackType

    from db.credentials import AuditEntry, Credential, CredentialKind
    from db.models import (
        Event,
        FireRecord,
        Job,
        JobQuery,
        Page,
        ProcessRecord,
        QueuedMessage,
        QueueSettlement,
        SupervisedProcess,
        UnitOfWork,
        UowQuery,
        UowTransition,
        WorkerRecord,
    )
    from db.states import JobState, ProcessKind, SupervisedState, UowState

#: Largest page a list call returns, whatever ``limit`` asks for.
MAX_PAGE_SIZE = 1000


class Store(ABC):
    """Persistent state of processes, jobs, units of work, fires, boxes and workers."""

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

    # -- processes ------------------------------------------------------------------------------

    @abstractmethod
    def list_processes(self, kind: ProcessKind | None = None) -> list[ProcessRecord]:
        """All registered processes (optionally of one kind), ordered by name."""

    @abstractmethod
    def get_process(self, name: str) -> ProcessRecord:
        """One process.

        Raises:
            NotFound: no process has that name.
        """

    @abstractmethod
    def insert_process(self, record: ProcessRecord) -> ProcessRecord:
        """Store a new process with ``version`` 1.

        Raises:
            DuplicateKey: a process of that name exists.
        """

    @abstractmethod
    def update_process(
        self, record: ProcessRecord, *, expected_version: int, event: Event | None = None
    ) -> ProcessRecord:
        """Replace a process's entry and registered values if its version is ``expected_version``.

        Compare-and-set on the version; increments it and sets ``updated_at`` from the record.
        ``event``, when given, is appended to the process's history in the same atomic write.

        Raises:
            NotFound: no such process.
            Conflict: the stored version differs (someone else changed it first).
        """

    @abstractmethod
    def delete_process(self, name: str) -> None:
        """Remove a process (its jobs and units of work stay as history).

        Raises:
            NotFound: no such process.
        """

    # -- jobs -----------------------------------------------------------------------------------

    @abstractmethod
    def create_job(self, job: Job) -> Job:
        """Insert one job.

        Raises:
            DuplicateKey: a job (process, timeperiod) exists.
        """

    @abstractmethod
    def ensure_jobs(self, jobs: Iterable[Job]) -> int:
        """Insert the jobs whose (process, timeperiod) does not exist yet; leave the others alone.

        Idempotent and safe to race: concurrent callers never create a job twice and never fail
        on each other's inserts. Efficient for thousands of jobs (one round trip per batch).

        Returns:
            How many jobs this call created.
        """

    @abstractmethod
    def get_job(self, process: str, timeperiod: str) -> Job:
        """One job.

        Raises:
            NotFound: no such job.
        """

    @abstractmethod
    def find_jobs(
        self, query: JobQuery, *, limit: int = 100, cursor: str | None = None
    ) -> Page[Job]:
        """Jobs matching ``query``, ordered by (timeperiod, process): newest timeperiod first
        unless ``query.newest_first`` is false.

        Raises:
            InvalidInput: ``cursor`` (field ``cursor``) is not one this store issued, or ``limit``
                is not positive.
        """

    @abstractmethod
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
        """Compare-and-set the job's state, apply ``changes`` and append ``event``, atomically.

        ``changes`` may set ``uow_id`` and ``run``. ``updated_at`` is taken from ``event.at``.

        Raises:
            NotFound: no such job.
            StateConflict: the stored state is not ``expected_state`` (or the version is not
                ``expected_version``); nothing was written.
        """

    @abstractmethod
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
        """Start a job's next run: compare-and-set the job on its state *and* version, link it
        to ``uow`` (``uow_id``), insert ``uow`` under its unique key and append both events,
        as one. The only way a managed unit of work is created, so a managed unit of work
        exists only as the run of the job it is linked to (no orphan, nothing to tidy up).

        ``uow`` is a managed unit of work of this job (same process and timeperiod) whose
        ``run_key`` names the job's run and ``expected_version`` (``db.state_change`` makes it
        ``r<run>v<version>``), so a unit of work stored under the same unique key is this very
        start: one that an interrupted earlier call stored (MongoDB, see below) is linked as it
        is, whatever became of it meanwhile, and ``uow`` is not inserted. ``event.details``
        gets ``uow_id``, the id of the unit of work linked (and ``adopted: True`` when it was
        such a stored one). ``updated_at`` of the job is taken from ``event.at``.

        Atomicity: SQL runs it in one transaction; of racing callers exactly one wins, and a
        loser leaves nothing behind. MongoDB, without multi-document transactions, writes the
        unit of work first, then compare-and-sets the job: a crash in between leaves a
        ``requested`` unit of work under this key that the next call for the same job version
        links (and that recovery may publish meanwhile: it is the job's work, so running it
        is right). A caller that loses the compare-and-set deletes the unit of work it inserted,
        unless a racer linked it, and only while nobody claimed it.

        Returns:
            (the job as stored, the unit of work it is linked to).

        Raises:
            NotFound: no such job; nothing was written.
            StateConflict: the job's state or version is not the expected one; nothing was
                written (MongoDB: nothing is left behind).
            DuplicateKey: ``uow``'s unique key is taken by a unit of work of another job.
            InvalidInput: ``uow`` is not a managed unit of work of this job, or a value is bad;
                nothing was written.
        """

    @staticmethod
    def _check_start(process: str, timeperiod: str, uow: UnitOfWork) -> None:
        """Refuse a :meth:`start_job` whose unit of work is not a managed one of the job."""
        if (uow.process, uow.timeperiod, uow.kind) != (process, timeperiod, UowKind.MANAGED):
            raise InvalidInput(
                "uow",
                f"a job's run is a managed unit of work of {process} {timeperiod} "
                f"(got {uow.kind} of {uow.process} {uow.timeperiod})",
            )

    @staticmethod
    def _start_twin(timeperiod: str, uow: UnitOfWork, twin: UnitOfWork) -> UnitOfWork:
        """The unit of work stored under ``uow``'s key, if it is this job's run (see
        :meth:`start_job`).

        Raises:
            DuplicateKey: it belongs to something else.
        """
        if twin.kind is not UowKind.MANAGED or twin.timeperiod != timeperiod:
            raise DuplicateKey(
                "uow", f"{uow.process}/{uow.start_timeperiod}-{uow.end_timeperiod}/{uow.run_key}"
            )
        return twin

    @staticmethod
    def _start_event(event: Event, linked: UnitOfWork, *, adopted: bool) -> Event:
        """The job's event of :meth:`start_job`, naming the unit of work linked."""
        details = {**event.details, "uow_id": linked.id}
        if adopted:
            details["adopted"] = True
        return replace(event, details=details)

    @abstractmethod
    def count_jobs(
        self, process: str | Iterable[str] | None = None
    ) -> dict[tuple[str, JobState], int]:
        """Number of jobs per (process, state): of one process (a name), of several (any
        other iterable of names, e.g. a page of the process list: one query), or of all (None).
        Processes without jobs have no key."""

    # -- units of work --------------------------------------------------------------------------

    @abstractmethod
    def create_uow(self, uow: UnitOfWork, *, event: Event | None = None) -> UnitOfWork:
        """Insert a unit of work; ``event`` (its creation) goes to its history atomically.

        Raises:
            DuplicateKey: one with the same (process, start_timeperiod, end_timeperiod, run_key)
                exists.
        """

    def create_uows(
        self, items: Sequence[tuple[UnitOfWork, Event | None]]
    ) -> list[UnitOfWork | DuplicateKey]:
        """Insert several units of work, each with its creation event, together: one
        transaction (one durable commit) where the backend has them. A unit of work whose
        unique key (process, start_timeperiod, end_timeperiod, run_key) is taken is refused on
        its own, :class:`~db.errors.DuplicateKey` in its place; the others are inserted. The
        scheduler creates what a pass fires this way.

        This default inserts one at a time (MongoDB: a unit of work is one document).
        """
        done: list[UnitOfWork | DuplicateKey] = []
        for uow, event in items:
            try:
                done.append(self.create_uow(uow, event=event))
            except DuplicateKey as exc:
                done.append(exc)
        return done

    @abstractmethod
    def get_uow(self, uow_id: str) -> UnitOfWork:
        """One unit of work.

        Raises:
            NotFound: no such unit of work.
        """

    @abstractmethod
    def find_uow_by_key(
        self, process: str, start_timeperiod: str, end_timeperiod: str, run_key: str
    ) -> UnitOfWork | None:
        """The unit of work with that unique key, or None."""

    @abstractmethod
    def find_uows(
        self, query: UowQuery, *, limit: int = 100, cursor: str | None = None
    ) -> Page[UnitOfWork]:
        """Units of work matching ``query``, by id (newest first unless ``query.newest_first``
        is false).

        Raises:
            InvalidInput: bad ``cursor`` or ``limit``.
        """

    @abstractmethod
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
        """Compare-and-set the unit of work's state, apply ``changes``, append ``event``.

        ``changes`` may set any field of :class:`~db.models.UnitOfWork` but ``id``, ``process``,
        the unique key, ``state``, ``version`` and ``created_at``. ``updated_at`` is taken from
        ``event.at``.

        Raises:
            NotFound: no such unit of work.
            StateConflict: the stored state (or version) is not the expected one.
        """

    def transition_uows(
        self, steps: Sequence[UowTransition]
    ) -> list[UnitOfWork | NotFound | StateConflict]:
        """Several compare-and-sets of :meth:`transition_uow`, written together: one transaction
        (one durable commit) where the backend has them. Each step applies or is refused on its
        own; the result holds, in the order of ``steps``, the stored unit of work or the
        :class:`~db.errors.NotFound` / :class:`~db.errors.StateConflict` that refused it (a
        refused step writes nothing, and does not stop the others). A worker finishes one unit
        of work and claims the next in one commit this way.

        This default applies the steps one after the other, for backends whose atomic unit is
        one document (MongoDB); the SQL store overrides it with one transaction.
        """
        done: list[UnitOfWork | NotFound | StateConflict] = []
        for step in steps:
            try:
                done.append(
                    self.transition_uow(
                        step.uow_id,
                        expected_state=step.expected_state,
                        new_state=step.new_state,
                        event=step.event,
                        changes=step.changes,
                        expected_version=step.expected_version,
                    )
                )
            except (NotFound, StateConflict) as exc:
                done.append(exc)
        return done

    def settle_uows(
        self, steps: Sequence[UowTransition], settlement: QueueSettlement
    ) -> tuple[list[UnitOfWork | NotFound | StateConflict], QueueSettled]:
        """:meth:`transition_uows` and the embedded-queue writes of ``settlement`` (acks, puts,
        a claim), together: one transaction (one durable commit) where the backend has them. A
        worker on the store queue records an outcome, claims the next unit of work, acks its
        delivery, sends the status message and claims the next messages this way. The steps
        apply or are refused on their own, as in :meth:`transition_uows`; the queue writes are
        done whatever became of the steps.

        This default does the parts one after the other (MongoDB: no multi-document
        transaction); a crash between them leaves a message unacked, which is delivered again
        and found finished (at-least-once, as with a crash before any ack).
        """
        done = self.transition_uows(steps) if steps else []
        acked = 0
        acks, put = list(settlement.ack), list(settlement.put)
        if acks:
            acked += self.queue_ack(
                acks[0], settlement.consumer, then_put=put, available_at=settlement.now
            )
            acked += self.queue_ack_many(acks[1:], settlement.consumer)
        elif put:
            for queue in dict.fromkeys(q for q, _ in put):
                self.queue_put(
                    queue, [b for q, b in put if q == queue], available_at=settlement.now
                )
        claimed: list[QueuedMessage] = []
        if settlement.claim_queue is not None and settlement.claim_limit > 0:
            claimed = self.queue_claim(
                settlement.claim_queue,
                settlement.consumer,
                now=settlement.now,
                visibility=settlement.visibility,
                limit=settlement.claim_limit,
            )
        return done, QueueSettled(acked=acked, claimed=tuple(claimed))

    @abstractmethod
    def update_uow(
        self,
        uow_id: str,
        *,
        expected_state: UowState,
        changes: Mapping[str, Any],
        expected_version: int | None = None,
    ) -> UnitOfWork:
        """Apply ``changes`` without changing state (heartbeat, widening, re-posting) if the
        stored state is still ``expected_state``. No history is written; the version increments;
        ``updated_at`` is left as it was (it tracks state changes and edits, not heartbeats).

        Raises:
            NotFound: no such unit of work.
            StateConflict: the stored state (or version) differs.
        """

    @abstractmethod
    def count_uows(
        self,
        process: str | Iterable[str] | None = None,
        *,
        states: Iterable[UowState] | None = None,
    ) -> dict[tuple[str, UowState], int]:
        """Number of units of work per (process, state): of one process (a name), of several
        (any other iterable of names: one query) or of all (None); of the given ``states``
        only (the scheduler counts what is in flight without reading the history). Processes
        without units of work have no key."""

    # -- history --------------------------------------------------------------------------------

    @abstractmethod
    def append_event(self, event: Event) -> None:
        """Append an event to an entity's history outside a state change (enable, edit, ...).

        Raises:
            NotFound: the entity does not exist (history belongs to an entity).
        """

    @abstractmethod
    def history(self, entity: str, entity_id: str, *, limit: int = 500) -> list[Event]:
        """The latest ``limit`` events of one entity, oldest first.

        ``entity`` is ``job`` (id ``process/timeperiod``), ``uow`` (its id), ``process`` (its
        name) or ``supervised`` (``box_id/process``).
        """

    # -- freerun fires --------------------------------------------------------------------------

    @abstractmethod
    def record_fire(self, fire: FireRecord) -> bool:
        """Record one fire of a freerun trigger, once.

        Returns:
            True if this call recorded it; False if (process, scheduled_at) was already recorded
            (by an earlier run, a restart or another scheduler): the caller must not fire again.
        """

    @abstractmethod
    def set_fire_uow(self, process: str, scheduled_at: datetime, uow_id: str) -> None:
        """Link a recorded fire to the unit of work created for it (no-op if no such fire)."""

    def record_fires(self, fires: Sequence[FireRecord]) -> list[bool]:
        """:meth:`record_fire` for several fires, together: one transaction where the backend
        has them (the fires a scheduler's pass makes). This default records one at a time.

        Returns:
            In the order of ``fires``: True for each this call recorded.
        """
        return [self.record_fire(fire) for fire in fires]

    def set_fire_uows(self, links: Sequence[tuple[str, datetime, str]]) -> None:
        """:meth:`set_fire_uow` for several (process, scheduled_at, uow_id), together where the
        backend has transactions. This default links one at a time."""
        for process, scheduled_at, uow_id in links:
            self.set_fire_uow(process, scheduled_at, uow_id)

    @abstractmethod
    def last_fire(self, process: str) -> FireRecord | None:
        """The fire of ``process`` with the latest ``scheduled_at``, or None."""

    @abstractmethod
    def list_fires(self, process: str, *, limit: int = 100) -> list[FireRecord]:
        """The latest fires of ``process``, newest first."""

    # -- boxes (supervisor) ---------------------------------------------------------------------

    @abstractmethod
    def list_supervised(self, box_id: str | None = None) -> list[SupervisedProcess]:
        """Supervised processes of one box, or of every box, ordered by (box_id, process)."""

    @abstractmethod
    def get_supervised(self, box_id: str, process: str) -> SupervisedProcess:
        """One supervised process.

        Raises:
            NotFound: none for that box and process.
        """

    @abstractmethod
    def ensure_supervised(self, record: SupervisedProcess) -> SupervisedProcess:
        """Insert the record if (box_id, process) is new; return the stored one either way."""

    @abstractmethod
    def set_desired(self, box_id: str, process: str, desired: bool, *, event: Event) -> None:
        """Set whether the operator wants the process running on the box; appends ``event``.

        Raises:
            NotFound: none for that box and process.
        """

    @abstractmethod
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
        """Compare-and-set the supervised state, apply ``changes`` (pid, create_time, started_at,
        stopped_at, exit_code, start_attempts, backoff_until, stats) and append ``event``.

        Raises:
            NotFound: none for that box and process.
            StateConflict: the stored state differs.
        """

    @abstractmethod
    def update_supervised_stats(
        self, box_id: str, process: str, stats: Mapping[str, Any], at: datetime
    ) -> None:
        """Refresh the psutil facts shown by the page (no state change, no history, no version
        change; no-op if no such record)."""

    @abstractmethod
    def delete_supervised(self, box_id: str, process: str) -> None:
        """Forget a process on a box (no error if absent)."""

    # -- workers --------------------------------------------------------------------------------

    @abstractmethod
    def save_worker(self, worker: WorkerRecord) -> None:
        """Insert or replace a worker's registration (keyed by ``worker_id``)."""

    @abstractmethod
    def beat_worker(self, worker_id: str, at: datetime, *, current_uow: str | None = None) -> None:
        """Record a heartbeat (and what the worker is running now). A worker declared ``lost``
        that beats again is ``alive`` again, in the same write (a stopped one stays stopped).

        Raises:
            NotFound: no such worker.
        """

    @abstractmethod
    def set_worker_state(self, worker_id: str, state: str, *, expected_state: str) -> bool:
        """Compare-and-set a worker's ``state`` (``alive``/``stopped``/``lost``).

        Returns:
            True if this call changed it.
        """

    @abstractmethod
    def list_workers(
        self, *, box_id: str | None = None, process: str | None = None
    ) -> list[WorkerRecord]:
        """Registered workers, ordered by (process, worker_id)."""

    @abstractmethod
    def delete_worker(self, worker_id: str) -> None:
        """Forget a worker (no error if absent)."""

    # -- the embedded queue (mq.store_queue) ------------------------------------------------------

    @abstractmethod
    def queue_put(
        self, queue: str, bodies: Sequence[bytes], *, available_at: datetime
    ) -> list[str]:
        """Append messages to ``queue``, deliverable from ``available_at``, in one write (atomic
        on SQL; on MongoDB an ordered insert, which a crash can cut short).

        Returns:
            Their ids, in order (ids sort in publish order).
        """

    @abstractmethod
    def queue_claim(
        self,
        queue: str,
        consumer: str,
        *,
        now: datetime,
        visibility: timedelta,
        limit: int = 1,
    ) -> list[QueuedMessage]:
        """Atomically claim up to ``limit`` deliverable messages (available, and unclaimed or
        with an expired claim), oldest id first, for ``consumer`` until ``now + visibility``.

        Of racing consumers (threads or OS processes) each message goes to exactly one;
        ``deliveries`` increments on each claim.
        """

    @abstractmethod
    def queue_ack(
        self,
        message_id: str,
        consumer: str,
        *,
        then_put: Sequence[tuple[str, bytes]] = (),
        available_at: datetime | None = None,
    ) -> bool:
        """Delete a message if ``consumer`` still holds its claim, and insert the ``then_put``
        (queue, body) messages, available from ``available_at``, in the same transaction where
        the backend has them (a worker's status messages leave with its ack: one commit). They
        are inserted whether or not the claim was still held.

        Returns:
            False if the claim was lost (expired and taken by another consumer, or gone).

        Raises:
            ValueError: ``then_put`` without ``available_at``.
        """

    def queue_ack_many(self, message_ids: Sequence[str], consumer: str) -> int:
        """Delete the messages of ``message_ids`` whose claim ``consumer`` still holds, in one
        transaction where the backend has them (a reader of status messages acks what it holds
        at once). Returns how many were deleted; the others' claims were lost.

        This default acks one message at a time.
        """
        return sum(self.queue_ack(message_id, consumer) for message_id in message_ids)

    @abstractmethod
    def queue_release(
        self, message_id: str, consumer: str, *, available_at: datetime, to_queue: str | None = None
    ) -> bool:
        """Give a claimed message back: unclaimed, deliverable from ``available_at``, moved to
        ``to_queue`` when given (dead-lettering).

        Returns:
            False if ``consumer`` no longer holds the claim.
        """

    @abstractmethod
    def queue_extend(self, message_id: str, consumer: str, *, until: datetime) -> bool:
        """Extend a claim (a long-running handler). False if the claim was lost."""

    @abstractmethod
    def queue_depth(self, queue: str, *, now: datetime) -> dict[str, int]:
        """``{"ready": n, "delayed": n, "claimed": n}`` for ``queue``."""

    def queue_depths(self, queues: Iterable[str], *, now: datetime) -> dict[str, dict[str, int]]:
        """:meth:`queue_depth` of several queues (``/metrics`` reads every process queue): one
        read where the backend can group. This default asks one queue at a time."""
        return {queue: self.queue_depth(queue, now=now) for queue in dict.fromkeys(queues)}

    @abstractmethod
    def queue_purge(self, queue: str) -> int:
        """Delete every message of ``queue`` (claimed or not); returns how many."""

    # -- credentials and the audit trail (mx) -----------------------------------------------------

    @abstractmethod
    def save_credential(self, credential: Credential) -> Credential:
        """Store a new token or user (secrets are stored hashed by the caller, never in clear).

        Args:
            credential: the credential, its ``secret_hash`` already computed.

        Returns:
            The stored credential.

        Raises:
            DuplicateKey: a credential of the same (kind, name), or the same ``secret_hash``,
                exists; nothing was written.
        """

    @abstractmethod
    def find_credential_by_hash(self, secret_hash: str) -> Credential | None:
        """The credential whose ``secret_hash`` is exactly this (a bearer token's lookup), or
        None."""

    @abstractmethod
    def find_credential(self, kind: CredentialKind, name: str) -> Credential | None:
        """The credential of this kind and name (a user's login), or None."""

    @abstractmethod
    def list_credentials(self, kind: CredentialKind | None = None) -> list[Credential]:
        """Every credential (optionally of one kind), ordered by (kind, name)."""

    @abstractmethod
    def delete_credential(self, kind: CredentialKind, name: str) -> None:
        """Remove a token or user; requests authenticated by it fail from then on.

        Raises:
            NotFound: no credential of this kind and name.
        """

    @abstractmethod
    def append_audit(
        self,
        *,
        who: str,
        what: str,
        target: str,
        at: datetime,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """Append one entry to the audit trail (append-only: entries are never changed).

        Args:
            who: the principal (``token deploy``, ``user alice``).
            what: the action (``POST /api/v1/uows/{id}/cancel``).
            target: what it acted on ("" when nothing in particular).
            at: when (aware).
            details: JSON-compatible facts (status, error code).

        Returns:
            The stored entry with its time-ordered id.

        Raises:
            InvalidInput: ``at`` is naive.
        """

    @abstractmethod
    def list_audit(self, *, limit: int = 100, cursor: str | None = None) -> Page[AuditEntry]:
        """Audit entries, newest first, keyset-paginated by id.

        Raises:
            InvalidInput: bad ``cursor`` or ``limit``.
        """
