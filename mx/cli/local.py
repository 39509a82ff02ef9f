"""The command line's backend on this machine's store: the same service verbs the API routes call,
answering in the same shapes (see :class:`mx.cli.backend.Backend`)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from db import open_store
from db.clock import StoreClock, SystemClock
from db.liveness import silence_limit
from mq import open_broker
from mx.services import (
    actions,
    boxes,
    entries,
    jobs,
    messages,
    payloads,
    processes,
    tasks,
    uows,
    why,
)
from mx.services.context import ServiceContext

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from db.clock import Clock
    from db.models import ProcessEntry
    from db.store import Store
    from settings import Settings

Json = dict[str, Any]

#: Who the history and the audit name for what the local command line does.
ACTOR = "cli"


class LocalBackend(contextlib.AbstractContextManager):
    """Opens the store on first use (reads) and the broker with it for actions; closes both on
    exit."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self._settings = settings
        self._given_clock = clock
        self._clock = clock or SystemClock()
        self._resources = contextlib.ExitStack()
        self._store: Store | None = None
        self._context: ServiceContext | None = None

    def __exit__(self, *exc_info: object) -> None:
        self._resources.close()

    def store(self) -> Store:
        """The installation's store, opened once (reading needs no schema change)."""
        if self._store is None:
            self._store = self._resources.enter_context(open_store(self._settings.store_uri))
        return self._store

    def context(self) -> ServiceContext:
        """The service context of the actions: the store (schema ensured) and the broker."""
        if self._context is None:
            store = self.store()
            store.init_schema()
            broker = self._resources.enter_context(open_broker(self._settings.broker_uri, store))
            self._context = ServiceContext(
                store=store,
                clock=self._clock,
                publish=lambda queue, body, delay: broker.publish(queue, body, delay=delay),
                queue_prefix=self._settings.queue_prefix,
                timezone=self._settings.timezone,
                actor=ACTOR,
            )
        return self._context

    def now(self) -> datetime:
        return self._clock.now()

    def register(
        self, entries: list[ProcessEntry], *, source: str, check: bool, prune: bool
    ) -> Json:
        store = self.store()
        store.init_schema()
        result = processes.register_entries(
            store, entries, source=source, clock=self._clock, actor=ACTOR, check=check, prune=prune
        )
        return processes.registration_json(result)

    def list_processes(self) -> list[Json]:
        return processes.list_processes(
            self.store(), now=self.now(), default_timezone=self._settings.timezone
        )

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
        return jobs.list_jobs(
            self.store(),
            process=process,
            state=state,
            from_timeperiod=from_timeperiod,
            to_timeperiod=to_timeperiod,
            limit=limit,
            cursor=cursor,
        )

    def list_uows(
        self, *, process: str | None, state: str | None, limit: int, cursor: str | None
    ) -> Json:
        return uows.list_uows(
            self.store(), process=process, state=state, limit=limit, cursor=cursor
        )

    def list_boxes(self, box_id: str | None) -> list[Json]:
        return boxes.list_boxes(self.store(), box_id=box_id)

    def _liveness(self) -> timedelta:
        return silence_limit(self._settings.heartbeat_interval, self._settings.heartbeat_misses)

    def list_workers(self, *, box_id: str | None, process: str | None) -> list[Json]:
        # The liveness, filters and order of GET /workers.
        return boxes.list_workers(
            self.store(), now=self.now(), liveness=self._liveness(), box_id=box_id, process=process
        )

    def why(self, process: str, timeperiod: str | None) -> Json:
        # Judged by the store's clock, as the scheduler and mx judge heartbeats.
        clock = self._given_clock or StoreClock(self.store())
        return why.explain(
            self.store(),
            process,
            timeperiod,
            now=clock.now(),
            liveness=self._liveness(),
            default_timezone=self._settings.timezone,
        )

    def trigger(self, process: str) -> Json:
        return actions.trigger(self.context(), process)

    def reprocess(self, process: str, timeperiod: str) -> list[Json]:
        return actions.reprocess(self.context(), process, timeperiod)

    def skip(self, process: str, timeperiod: str) -> list[Json]:
        return actions.skip(self.context(), process, timeperiod)

    def cancel(self, uow_id: str) -> Json:
        return actions.cancel(self.context(), uow_id)

    def retry_failed(self, uow_id: str) -> Json:
        return actions.retry_failed(self.context(), uow_id)

    def set_enabled(self, process: str, enabled: bool) -> Json:
        # The verb of PATCH /processes/<name>, so both modes answer with the same process shape.
        return entries.edit_process(self.context(), process, {"enabled": enabled})

    def submit(
        self, command: str, *, scheduled_at: str | None, retries: int, payload_id: str | None
    ) -> Json:
        return tasks.submit(
            self.context(),
            command,
            scheduled_at=scheduled_at,
            retries=retries,
            payload_id=payload_id,
        )

    def status_of(self, task_id: str) -> Json:
        return tasks.status_of(self.context(), task_id)

    def post_payload(self, data: bytes, content_type: str) -> Json:
        return payloads.post_payload(
            self.context(), data, content_type, limit=self._settings.max_payload_bytes
        )

    def messages(self, uow_id: str, *, after: int, limit: int) -> Json:
        return messages.list_messages(self.store(), uow_id, after=after, limit=limit)

    def start_process(self, box_id: str, process: str) -> list[Json]:
        return boxes.start_process(self.store(), box_id, process, clock=self._clock, actor=ACTOR)

    def stop_process(self, box_id: str, process: str) -> list[Json]:
        return boxes.stop_process(self.store(), box_id, process, clock=self._clock, actor=ACTOR)
