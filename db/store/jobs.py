"""The jobs part of the store interface: one job per (process, timeperiod) of a managed process."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from db.errors import DuplicateKey, InvalidInput
from db.states import UowKind

if TYPE_CHECKING:
    from db.models import Event, Job, JobQuery, Page, UnitOfWork
    from db.states import JobState


class JobStore(ABC):
    """Jobs, and the start of a job's run: a part of :class:`~db.store.Store`."""

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
