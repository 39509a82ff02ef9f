"""``/api/v1/health`` and ``/api/v1/openapi.json``: the two routes open to everyone."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from importlib import metadata
from typing import TYPE_CHECKING, Any

from flask import jsonify

from db.errors import TactusError
from db.liveness import is_live
from mq.message import status_queue
from mx.api.common import bp
from mx.api.openapi import build_document
from mx.auth import public
from mx.runtime import runtime

if TYPE_CHECKING:
    from flask.typing import ResponseReturnValue

    from db.store import Store

log = logging.getLogger(f"tactus.{__name__}")

#: Worker records of this process are the scheduler's heartbeats.
SCHEDULER = "scheduler"


def version() -> str:
    """The installed version of Tactus."""
    try:
        return metadata.version("tactus")
    except metadata.PackageNotFoundError:
        return "unknown"


def scheduler_liveness(store: Store, now: datetime, liveness: timedelta) -> dict[str, Any]:
    """``{"alive", "leader"}`` from the worker records a scheduler keeps under the process name
    ``scheduler`` (``WorkerRecord`` with its heartbeat). Both are None while no scheduler has
    registered such a record: unknown, not dead. ``leader`` is the freshest alive one's id (a
    standby scheduler, if any, beats too but acts only through compare-and-set)."""
    records = store.list_workers(process=SCHEDULER)
    if not records:
        return {"alive": None, "leader": None}
    alive = [r for r in records if is_live(r, now, liveness)]
    leader = max(alive, key=lambda r: r.heartbeat_at).worker_id if alive else None
    return {"alive": bool(alive), "leader": leader}


@bp.get("/health")
@public
def health() -> ResponseReturnValue:
    """Health of mx and what it depends on: 200 when the store and the broker answer, else 503.
    Open to everyone, so it names no address."""
    rt = runtime()
    store_ok = broker_ok = True
    scheduler: dict[str, Any] = {"alive": None, "leader": None}
    try:
        rt.store.ping()
        scheduler = scheduler_liveness(rt.store, rt.clock.now(), rt.liveness)
    except TactusError as exc:
        log.debug("health: store: %s", exc)  # the outage itself is logged once (db.outage)
        store_ok = False
    try:
        rt.broker.depth(status_queue(rt.settings.queue_prefix))
    except TactusError as exc:
        log.debug("health: broker: %s", exc)
        broker_ok = False
    body = {
        "status": "ok" if store_ok and broker_ok else "degraded",
        "version": version(),
        "store": "ok" if store_ok else "unavailable",
        "broker": "ok" if broker_ok else "unavailable",
        "scheduler": scheduler,
    }
    return jsonify(body), 200 if store_ok and broker_ok else 503


@bp.get("/openapi.json")
@public
def openapi() -> ResponseReturnValue:
    """The OpenAPI 3.1 document of this API."""
    return jsonify(build_document(version()))
