"""The units-of-work part of the store interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from db.errors import DuplicateKey, NotFound, StateConflict
from db.models import UowInstants, UowQuery

if TYPE_CHECKING:
    from db.models import Event, Page, UnitOfWork, UowTransition
    from db.states import UowState


#: Every unit of work, newest first.
_NEWEST = UowQuery()


class UowStore(ABC):
    """Units of work: a part of :class:`~db.store.Store`."""

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

    def get_uows(self, uow_ids: Sequence[str]) -> dict[str, UnitOfWork]:
        """The units of work with these ids that exist, by id: one grouped read where the
        backend has one (a scheduler pass reads the runs of every started job in its processes'
        windows this way). An unknown id has no key. This default reads one at a time."""
        found = {}
        for uow_id in dict.fromkeys(uow_ids):
            try:
                found[uow_id] = self.get_uow(uow_id)
            except NotFound:
                continue
        return found

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

        A step's ``together`` transitions apply with it, all or none, where the backend has
        transactions (:attr:`atomic_groups`); its result is the step's.

        This default applies the steps one after the other, for backends whose atomic unit is
        one document (MongoDB); the SQL store overrides it with one transaction. Here a group
        is applied in order and stops at its first refusal, which is its result: what it
        wrote before stays written, so its writer must be able to converge again (the flow
        reconciliation of :mod:`db.flows` is).
        """
        done: list[UnitOfWork | NotFound | StateConflict] = []
        for step in steps:
            try:
                stored = self._one_transition(step)
                for member in step.together:
                    self._one_transition(member)
                done.append(stored)
            except (NotFound, StateConflict) as exc:
                done.append(exc)
        return done

    def _one_transition(self, step: UowTransition) -> UnitOfWork:
        return self.transition_uow(
            step.uow_id,
            expected_state=step.expected_state,
            new_state=step.new_state,
            event=step.event,
            changes=step.changes,
            expected_version=step.expected_version,
        )

    #: True when :meth:`transition_uows` applies a step with its ``together`` transitions in
    #: one transaction (SQL); False when they are separate writes (MongoDB).
    atomic_groups: bool = False

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

    def newest_uow_instants(self, limit: int) -> list[UowInstants]:
        """The process and dispatch instants of the newest ``limit`` units of work (by id,
        newest first, as ``find_uows(UowQuery(), limit=limit)``): only those columns where the
        backend can read them alone. This default reads the whole units of work.

        Raises:
            InvalidInput: ``limit`` out of range (as :meth:`find_uows`).
        """
        from_page = self.find_uows(_NEWEST, limit=limit).items
        return [
            UowInstants(
                process=u.process,
                created_at=u.created_at,
                scheduled_at=u.scheduled_at,
                submitted_at=u.submitted_at,
                started_at=u.started_at,
            )
            for u in from_page
        ]

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
        without units of work have no key. The steps of a flow run are not counted: a flow run
        counts once."""
