"""Verbs on boxes and workers: what runs where, and the supervisor's desired state."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from db.errors import NotFound, StateConflict
from db.liveness import is_live
from db.models import Event, SupervisedProcess, UowQuery
from db.placement import process_of
from db.state_change import change_supervised
from db.states import SupervisedState, UowState
from mx.services import validate
from mx.services.serialize import supervised_json, worker_json

if TYPE_CHECKING:
    from db.clock import Clock
    from db.store import Store

#: A worker that has not beaten for this long is shown as not alive.
DEFAULT_LIVENESS = timedelta(seconds=30)


def list_boxes(store: Store, *, box_id: str | None = None) -> list[dict[str, Any]]:
    """Supervised processes per box with their states, by (box_id, process).

    Args:
        store: the store.
        box_id: only this box (None or empty: every box).

    Raises:
        InvalidInput: a ``box_id`` with a NUL character or a lone surrogate.
    """
    box = validate.text("box_id", box_id) if box_id else None
    records = store.list_supervised(box)
    return [supervised_json(r) for r in sorted(records, key=lambda r: (r.box_id, r.process))]


def list_workers(
    store: Store,
    *,
    now: datetime,
    liveness: timedelta = DEFAULT_LIVENESS,
    box_id: str | None = None,
    process: str | None = None,
) -> list[dict[str, Any]]:
    """Registered workers with their last heartbeat and whether they look alive, by worker id.

    Args:
        store: the store.
        now: the current instant.
        liveness: how long a worker may stay silent and still count as alive.
        box_id: only the workers of this box (None or empty: every box).
        process: only the workers of this process (None or empty: every process).

    Raises:
        InvalidInput: a bad filter (the field is named).
    """
    box = validate.text("box_id", box_id) if box_id else None
    name = validate.process_filter(process)
    running = _running(store)
    return [
        worker_json(w, alive=is_live(w, now, liveness), running=running.get(w.worker_id, 0))
        for w in sorted(store.list_workers(box_id=box, process=name), key=lambda w: w.worker_id)
    ]


def _running(store: Store) -> Counter[str]:
    """Units of work in progress per worker id (a bounded set: what the workers run now)."""
    counts: Counter[str] = Counter()
    query = UowQuery(states=frozenset({UowState.IN_PROGRESS}), flow=False)
    cursor = None
    while True:
        page = store.find_uows(query, limit=1000, cursor=cursor)
        counts.update(u.worker_id for u in page.items if u.worker_id)
        cursor = page.next_cursor
        if cursor is None:
            return counts


def start_process(
    store: Store, box_id: str, process: str, *, clock: Clock, actor: str
) -> list[dict[str, Any]]:
    """Ask the supervisor of ``box_id`` to run ``process`` (``launch.py super --start P``).

    ``process`` names a registered process (all its instances on the box) or one instance
    (``site_hourly.1``). A ``fatal`` instance is reset to ``stopped`` with a fresh count of
    starts, so the supervisor starts it again.

    Args:
        store: where the box configuration lives.
        box_id: the box.
        process: a process or instance name.
        clock: source of the events' instants.
        actor: who asks (``cli``, ``user alice``).

    Returns:
        The instances as the API shows them, after the change.

    Raises:
        NotFound: the box has no such process (the supervisor of a box lists what the
            registrations place there the first time it runs).
    """
    changed = []
    for record in _instances(store, box_id, process):
        _desire(store, record, True, clock=clock, actor=actor)
        if record.state == SupervisedState.FATAL:
            _reset_fatal(store, record, clock=clock, actor=actor)
        changed.append(store.get_supervised(box_id, record.process))
    return [supervised_json(r) for r in changed]


def stop_process(
    store: Store, box_id: str, process: str, *, clock: Clock, actor: str
) -> list[dict[str, Any]]:
    """Ask the supervisor of ``box_id`` to stop ``process`` (``launch.py super --stop P``); the
    supervisor signals its group and records ``stopping`` then ``stopped``.

    Args and Raises: as :func:`start_process`.

    Returns:
        The instances as the API shows them, after the change.
    """
    changed = []
    for record in _instances(store, box_id, process):
        _desire(store, record, False, clock=clock, actor=actor)
        changed.append(store.get_supervised(box_id, record.process))
    return [supervised_json(r) for r in changed]


def _instances(store: Store, box_id: str, process: str) -> list[SupervisedProcess]:
    validate.identifier(box_id, "box_id")
    validate.identifier(process, "name")
    found = [
        r
        for r in store.list_supervised(box_id)
        if r.process == process or process_of(r.process) == process
    ]
    if not found:
        raise NotFound("supervised process", f"{box_id}/{process}")
    return found


def _desire(
    store: Store, record: SupervisedProcess, desired: bool, *, clock: Clock, actor: str
) -> None:
    wish = "running" if desired else "stopped"
    event = Event(
        entity="supervised",
        entity_id=record.key,
        at=clock.now(),
        trigger="desire",
        from_state=record.state.value,
        to_state=record.state.value,
        actor=actor,
        reason=f"desired {wish}",
        details={"desired": desired},
    )
    store.set_desired(record.box_id, record.process, desired, event=event)


def _reset_fatal(store: Store, record: SupervisedProcess, *, clock: Clock, actor: str) -> None:
    try:
        change_supervised(
            store,
            record,
            "stop",
            clock=clock,
            actor=actor,
            reason="operator start: reset after fatal",
            changes={"start_attempts": 0, "backoff_until": None},
        )
    except StateConflict:
        # The supervisor moved it first (a restarted supervisor retries fatal processes itself).
        pass
