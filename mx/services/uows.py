"""Verbs on units of work: list and show."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from db import flows
from db.models import UowQuery
from db.states import UowState
from mx.services import messages, validate
from mx.services.runs import returned
from mx.services.serialize import event_json, instant, uow_json

if TYPE_CHECKING:
    from collections.abc import Iterable

    from db.models import Event, UnitOfWork
    from db.store import Store


def list_uows(
    store: Store,
    *,
    process: str | None = None,
    state: str | Iterable[str] | None = None,
    limit: int | str | None = None,
    cursor: str | None = None,
) -> dict[str, Any]:
    """A page of units of work, newest first (the arguments as :func:`mx.services.jobs.list_jobs`).

    Raises:
        InvalidInput: a bad filter, limit or cursor (the field is named).
    """
    query = UowQuery(
        process=validate.process_filter(process), states=validate.states(UowState, state)
    )
    page = store.find_uows(query, limit=validate.limit(limit), cursor=validate.cursor(cursor))
    return {"items": [uow_json(u) for u in page.items], "next_cursor": page.next_cursor}


def get_uow(store: Store, uow_id: str) -> dict[str, Any]:
    """One unit of work with its history (attempts, exit codes, output tail).

    Raises:
        InvalidInput: an empty id, or one with a NUL or a lone surrogate.
        NotFound: no such unit of work.
    """
    return _uow(store, uow_id)[0]


def uow_page(store: Store, uow_id: str) -> dict[str, Any]:
    """:func:`get_uow`, plus ``returned``: what its worker class returned in its latest
    finished attempt (``processed``, ``noop``, ``exception``, ``timed out``, ``bad return``;
    None for a command, which has an exit code instead), and ``messages``: its last messages
    (:func:`mx.services.messages.tail`).

    Raises:
        InvalidInput, NotFound: as :func:`get_uow`.
    """
    data, uow, events = _uow(store, uow_id)
    data["returned"] = returned(events)
    data["messages"] = messages.tail(store, uow.id)
    return data


def _uow(store: Store, uow_id: str) -> tuple[dict[str, Any], UnitOfWork, list[Event]]:
    uow = store.get_uow(validate.identifier(uow_id, "uow_id"))
    events = store.history("uow", uow_id)
    data = uow_json(uow)
    data["history"] = [event_json(e) for e in events]
    if uow.flow:
        data["steps"] = flow_steps(store, uow)
    return data, uow, events


def flow_steps(store: Store, flow_run: UnitOfWork) -> list[dict[str, Any]]:
    """The steps of a flow run in DAG order (file order), each with its upstream steps and
    ``run_if``; a step not created yet (the run is not expanded) has ``state`` None."""
    dag = flows.Dag.of(flow_run)
    stored = flows.steps_of(store, flow_run.id)
    out = []
    for name in dag.names or list(stored):
        uow = stored.get(name)
        out.append(
            {
                "name": name,
                "upstream": list(dag.upstream.get(name, ())),
                "run_if": dag.run_if[name].value if name in dag.run_if else None,
                "uow_id": None if uow is None else uow.id,
                "state": None if uow is None else uow.state.value,
                "attempt": None if uow is None else uow.attempt,
                "started_at": None if uow is None else instant(uow.started_at),
                "finished_at": None if uow is None else instant(uow.finished_at),
                "exit_code": None if uow is None else uow.exit_code,
                "error": None if uow is None else uow.error,
            }
        )
    return out
