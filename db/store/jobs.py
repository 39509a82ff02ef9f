"""The jobs part of the store interface: one job per (process, timeperiod) of a managed process."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from db.errors import DuplicateKey, InvalidInput, NotFound, StateConflict
from db.models import JobQuery
from db.states import UowKind

if TYPE_CHECKING:
    from db.models import Event, Job, JobStart, JobTransition, Page, UnitOfWork
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

    def newest_jobs(self, processes: Sequence[str]) -> dict[str, Job]:
        """The job of the latest timeperiod of each of ``processes`` that has jobs, by process
        name: one grouped read where the backend has one (a scheduler pass materializes every
        due process from its newest job), each an index lookup, whatever the history. This
        default reads one process at a time."""
        found = {}
        for process in dict.fromkeys(processes):
            newest = self.find_jobs(JobQuery(process=process), limit=1).items
            if newest:
                found[process] = newest[0]
        return found

    def job_windows(
        self, limits: Mapping[str, int], states: Iterable[JobState]
    ) -> dict[str, list[Job]]:
        """Each process's jobs in ``states``, oldest timeperiod first, at most ``limits[name]``
        of them (a positive number), by process name; a process without such jobs has an empty
        list. One grouped read where the backend has one: a scheduler pass reads every due
        process's active window this way. The cost follows the jobs in ``states``, not the
        history. This default reads one process at a time (:meth:`find_jobs`).

        Raises:
            InvalidInput: a limit is not positive.
        """
        wanted = frozenset(states)
        return {
            process: self.find_jobs(
                JobQuery(process=process, states=wanted, newest_first=False), limit=limit
            ).items
            for process, limit in limits.items()
        }

    def transition_jobs(
        self, steps: Sequence[JobTransition]
    ) -> list[Job | NotFound | StateConflict]:
        """Several compare-and-sets of :meth:`transition_job`, each with its event, written
        together: one transaction (one durable commit) where the backend has them. Each step
        applies or is refused on its own, in the order of ``steps`` (a later step of the same
        job sees what an earlier one wrote); the result holds, in that order, the stored job or
        the :class:`~db.errors.NotFound` / :class:`~db.errors.StateConflict` that refused it (a
        refused step writes nothing and does not stop the others). A scheduler pass moves the
        jobs of all its processes this way.

        Raises:
            InvalidInput: a step's ``changes`` are bad; checked for every step before anything
                is written where the backend has transactions.

        This default applies the steps one after the other (MongoDB: a job is one document).
        """
        done: list[Job | NotFound | StateConflict] = []
        for step in steps:
            try:
                done.append(
                    self.transition_job(
                        step.process,
                        step.timeperiod,
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

    def start_jobs(
        self, starts: Sequence[JobStart]
    ) -> list[tuple[Job, UnitOfWork] | NotFound | StateConflict | DuplicateKey]:
        """Several :meth:`start_job`, written together: one transaction (one durable commit)
        where the backend has them. Each start applies or is refused on its own with the same
        guarantees as :meth:`start_job` (compare-and-set on state and version; the unit of work
        under its unique key, or the one an interrupted start stored, linked), in the order of
        ``starts``; the result holds, in that order, (the job as stored, its unit of work) or
        the :class:`~db.errors.NotFound` / :class:`~db.errors.StateConflict` /
        :class:`~db.errors.DuplicateKey` that refused it (a refused start writes nothing and
        does not stop the others). A scheduler pass starts the jobs of all its processes this
        way.

        Raises:
            InvalidInput: a start's unit of work is not a managed one of its job, or a value is
                bad; every start is checked before anything is written.

        This default checks them all, then starts one after the other (MongoDB's
        :meth:`start_job` is a sequence of single-document writes anyway).
        """
        for start in starts:
            self._check_start(start.process, start.timeperiod, start.uow)
        done: list[tuple[Job, UnitOfWork] | NotFound | StateConflict | DuplicateKey] = []
        for start in starts:
            try:
                done.append(
                    self.start_job(
                        start.process,
                        start.timeperiod,
                        expected_state=start.expected_state,
                        expected_version=start.expected_version,
                        new_state=start.new_state,
                        event=start.event,
                        uow=start.uow,
                        uow_event=start.uow_event,
                    )
                )
            except (NotFound, StateConflict, DuplicateKey) as exc:
                done.append(exc)
        return done

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
