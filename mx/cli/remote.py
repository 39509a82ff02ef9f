"""The command line's backend through an mx's REST API (SPEC section 6): each verb is one route,
whose answer is already the shape :class:`mx.cli.backend.Backend` promises (a list of changes is
unwrapped from its envelope)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from db.clock import SystemClock
from db.errors import InvalidInput
from mx.client import RemoteFailure

if TYPE_CHECKING:
    from datetime import datetime

    from db.models import ProcessEntry
    from mx.client import ApiClient

Json = dict[str, Any]


def _seg(value: str, field: str) -> str:
    """One path segment, escaped: a name or id never adds, removes or climbs a segment.

    Raises:
        InvalidInput: ``field`` is empty (no route has an empty segment).
    """
    if not value:
        raise InvalidInput(field, "must not be empty")
    if value in (".", ".."):
        return value.replace(".", "%2E")
    return quote(value, safe="")


def _unwrap(answer: Any, key: str, route: str) -> Any:
    """``answer[key]``, or a one-line failure when the server answered another shape."""
    if not isinstance(answer, dict) or key not in answer:
        raise RemoteFailure(
            f"{route}: the answer has no {key!r} (not a Tactus API of this version?)"
        )
    return answer[key]


class RemoteBackend:
    """The command line's verbs as requests to one installation's API."""

    def __init__(self, client: ApiClient) -> None:
        self._client = client

    def now(self) -> datetime:
        return SystemClock().now()

    def list_processes(self) -> list[Json]:
        return self._client.get_all("/processes")

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
        params = {
            "process": process,
            "state": state,
            "from": from_timeperiod,
            "to": to_timeperiod,
            "limit": limit,
            "cursor": cursor,
        }
        return self._client.get("/jobs", params)

    def list_uows(
        self, *, process: str | None, state: str | None, limit: int, cursor: str | None
    ) -> Json:
        params = {"process": process, "state": state, "limit": limit, "cursor": cursor}
        return self._client.get("/uows", params)

    def list_boxes(self, box_id: str | None) -> list[Json]:
        return self._client.get_all("/boxes", {"box_id": box_id})

    def list_workers(self, *, box_id: str | None, process: str | None) -> list[Json]:
        return self._client.get_all("/workers", {"box_id": box_id, "process": process})

    def trigger(self, process: str) -> Json:
        return self._client.post(f"/processes/{_seg(process, 'process')}/trigger")

    def reprocess(self, process: str, timeperiod: str) -> list[Json]:
        route = f"/jobs/{_seg(process, 'process')}/{_seg(timeperiod, 'timeperiod')}/reprocess"
        return _unwrap(self._client.post(route), "changed", route)

    def skip(self, process: str, timeperiod: str) -> list[Json]:
        route = f"/jobs/{_seg(process, 'process')}/{_seg(timeperiod, 'timeperiod')}/skip"
        return _unwrap(self._client.post(route), "changed", route)

    def cancel(self, uow_id: str) -> Json:
        return self._client.post(f"/uows/{_seg(uow_id, 'uow_id')}/cancel")

    def retry_failed(self, uow_id: str) -> Json:
        return self._client.post(f"/uows/{_seg(uow_id, 'uow_id')}/retry-failed")

    def set_enabled(self, process: str, enabled: bool) -> Json:
        return self._client.patch(f"/processes/{_seg(process, 'process')}", {"enabled": enabled})

    def submit(
        self, command: str, *, scheduled_at: str | None, retries: int, payload_id: str | None
    ) -> Json:
        body: Json = {"command": command, "retries": retries}
        if scheduled_at is not None:
            body["scheduled_at"] = scheduled_at
        if payload_id is not None:
            body["payload_id"] = payload_id
        return self._client.post("/tasks", body)

    def status_of(self, task_id: str) -> Json:
        return self._client.get(f"/tasks/{_seg(task_id, 'id')}")

    def post_payload(self, data: bytes, content_type: str) -> Json:
        return self._client.post_bytes("/payloads", data, content_type)

    def messages(self, uow_id: str, *, after: int, limit: int) -> Json:
        route = f"/uows/{_seg(uow_id, 'uow_id')}/messages"
        return self._client.get(route, {"after": after, "limit": limit})

    def register(
        self, entries: list[ProcessEntry], *, source: str, check: bool, prune: bool
    ) -> Json:
        body = {
            "processes": [entry.to_dict() for entry in entries],
            "source": source,
            "check": check,
            "prune": prune,
        }
        return self._client.put("/registration", body)

    def start_process(self, box_id: str, process: str) -> list[Json]:
        route = f"/boxes/{_seg(box_id, 'boxid')}/processes/{_seg(process, 'process')}/start"
        return _unwrap(self._client.post(route), "items", route)

    def stop_process(self, box_id: str, process: str) -> list[Json]:
        route = f"/boxes/{_seg(box_id, 'boxid')}/processes/{_seg(process, 'process')}/stop"
        return _unwrap(self._client.post(route), "items", route)

    def why(self, process: str, timeperiod: str | None) -> Json:
        route = f"/processes/{_seg(process, 'process')}/why"
        return self._client.get(route, {"timeperiod": timeperiod})
