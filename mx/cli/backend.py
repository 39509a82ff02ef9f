"""Where a command acts: the seam between the commands and the state they read or change.

The commands parse, call one method of a :class:`Backend` and render. :class:`LocalBackend` calls
the service verbs on this machine's store; :class:`RemoteBackend` asks an mx through its REST API,
which calls the same verbs. Both return the API's JSON shapes, so a command prints the same
whichever it is given (SPEC section 5: ``--url``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from mx.cli.local import LocalBackend
from mx.cli.remote import RemoteBackend

if TYPE_CHECKING:
    from datetime import datetime

    from db.clock import Clock
    from db.models import ProcessEntry
    from mx.client import ApiClient
    from settings import Settings

Json = dict[str, Any]


class Backend(Protocol):
    """The verbs of the command line, each answering in the shape of its API route.

    Every method raises the :mod:`db.errors` exception of a refusal: ``InvalidInput`` (bad input,
    the field named), ``NotFound``, ``TransitionRefused`` or ``Conflict``.
    """

    def now(self) -> datetime:
        """The current instant (for uptimes)."""

    def list_processes(self) -> list[Json]:
        """Every registered process, by name (GET /processes)."""

    def list_jobs(
        self,
        *,
        process: str | None,
        state: str | None,
        from_timeperiod: str | None,
        to_timeperiod: str | None,
        limit: int,
        cursor: str | None,
    ) -> Json:
        """One page ``{"items", "next_cursor"}`` of jobs, newest first (GET /jobs)."""

    def list_uows(
        self, *, process: str | None, state: str | None, limit: int, cursor: str | None
    ) -> Json:
        """One page ``{"items", "next_cursor"}`` of units of work, newest first (GET /uows)."""

    def list_boxes(self, box_id: str | None) -> list[Json]:
        """Supervised processes by (box_id, process) (GET /boxes)."""

    def list_workers(self, *, box_id: str | None, process: str | None) -> list[Json]:
        """Workers by worker_id, with their heartbeat and liveness (GET /workers)."""

    def trigger(self, process: str) -> Json:
        """Fire a process now: ``{"process", "uow"}``."""

    def reprocess(self, process: str, timeperiod: str) -> list[Json]:
        """Reprocess a job with its cascade; the jobs that changed."""

    def skip(self, process: str, timeperiod: str) -> list[Json]:
        """Skip a job with its cascade; the jobs that changed."""

    def cancel(self, uow_id: str) -> Json:
        """Cancel a unit of work; the unit of work after it."""

    def retry_failed(self, uow_id: str) -> Json:
        """Re-run the failed steps of a canceled flow run: the flow run, the steps re-run,
        its job."""

    def set_enabled(self, process: str, enabled: bool) -> Json:
        """Turn a process on or off; the process after it (PATCH /processes/<name>)."""

    def submit(
        self, command: str, *, scheduled_at: str | None, retries: int, payload_id: str | None
    ) -> Json:
        """An ad-hoc task, given the payload ``payload_id`` if any; ``{"task_id", ...}``."""

    def status_of(self, task_id: str) -> Json:
        """A task's (or any unit of work's) state and timestamps."""

    def post_payload(self, data: bytes, content_type: str) -> Json:
        """Store bytes as a payload (or find them stored): ``{"payload_id", "sha256", "size",
        ...}`` (POST /payloads)."""

    def messages(self, uow_id: str, *, after: int, limit: int) -> Json:
        """One page of a unit of work's messages after the ``seq`` ``after``: ``{"items",
        "dropped", "more", "next_after", "finished", ...}`` (GET /uows/<id>/messages)."""

    def register(
        self, entries: list[ProcessEntry], *, source: str, check: bool, prune: bool
    ) -> Json:
        """Upsert a registration file's entries (read and validated where the command runs);
        ``{"applied", "created", "updated", "unchanged", "pruned"}`` (PUT /registration)."""

    def start_process(self, box_id: str, process: str) -> list[Json]:
        """Desire a process (or instance) running on a box; its instances after it."""

    def stop_process(self, box_id: str, process: str) -> list[Json]:
        """Desire a process (or instance) stopped on a box; its instances after it."""

    def why(self, process: str, timeperiod: str | None) -> Json:
        """Why a process (at a timeperiod) has not run or is waiting: ``{"process", "kind",
        "timeperiod", "state", "checked_at", "reasons"}`` (GET /processes/<name>/why)."""


@dataclass(frozen=True, slots=True)
class Installation:
    """What a command acts on: this machine's settings, and an API client when ``--url``."""

    settings: Settings
    client: ApiClient | None = None
    #: The clock of the commands on this machine's store (None: the store's clock for what
    #: judges liveness, the system clock for the rest); tests pass a fake one.
    clock: Clock | None = None

    @property
    def remote(self) -> bool:
        """Whether commands go through the REST API."""
        return self.client is not None

    @contextlib.contextmanager
    def backend(self) -> Iterator[Backend]:
        """The backend, with whatever it opened closed afterwards."""
        if self.client is not None:
            yield RemoteBackend(self.client)
            return
        with LocalBackend(self.settings, clock=self.clock) as local:
            yield local
