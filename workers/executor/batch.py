"""Outcomes of an executor's slots that end together, sent to mx in one request.

Each slot reports its run through :meth:`OutcomeBatcher.outcome`, which keeps the contract of
:meth:`~workers.executor.api.ExecutorApi.outcome` (the answer, with the slot's next claim, or
the error that slot acts on). At most one request is on the way at a time: an outcome that
comes while none is goes out at once, alone (``POST uows/<id>/outcome``), so that nothing waits
for a batch to fill; the outcomes that come while a request is on the way go together in the
next one (``POST outcomes``), with one claim of as many units of work as they free slots
(``next.count``), all written by mx in one commit. With one slot, or slots that end apart,
every outcome goes alone as before.

What mx refuses of one outcome of a batch comes back to that outcome's slot alone
(``lease_lost``: :class:`~db.errors.LeaseLost`; anything else: :class:`Refused`); a failed
request (:class:`Unreachable`, :class:`Refused`) comes back to every slot of the batch, each of
which then acts as it would on its own (tries again after its backoff, or drops it).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from db.errors import LeaseLost
from workers.executor.api import Refused

if TYPE_CHECKING:
    from workers.executor.api import ExecutorApi


@dataclass(slots=True)
class _Report:
    """One slot's outcome, waiting for its answer."""

    uow_id: str
    body: dict[str, Any]
    answer: dict[str, Any] | None = None
    error: BaseException | None = None
    done: bool = field(default=False)


class OutcomeBatcher:
    """Sends the outcomes of one executor's slots, those that end together in one request."""

    def __init__(self, api: ExecutorApi) -> None:
        self.api = api
        self._changed = threading.Condition()
        self._waiting: list[_Report] = []
        self._sending = False
        #: Claims mx made for outcomes it then refused: the next free slot runs them.
        self._spare: list[dict[str, Any]] = []

    def outcome(self, uow_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Deliver one outcome (``body`` as for ``POST uows/<id>/outcome``, ``next`` asking for
        the slot's next claim); its answer, ``next`` the slot's next claim or None.

        Raises:
            Unreachable, Refused, LeaseLost: as :meth:`ExecutorApi.outcome` does, for this
                outcome.
        """
        report = _Report(uow_id, body)
        with self._changed:
            self._waiting.append(report)
            while not report.done:
                if self._sending:
                    self._changed.wait()
                    continue
                # no request on the way: this thread sends every outcome waiting, its own too
                batch, self._waiting, self._sending = self._waiting, [], True
                self._changed.release()
                try:
                    self._send(batch)
                finally:
                    self._changed.acquire()
                    self._sending = False
                    self._changed.notify_all()
        if report.error is not None:
            raise report.error
        assert report.answer is not None
        return report.answer

    def _send(self, batch: list[_Report]) -> None:
        try:
            if len(batch) == 1:
                (report,) = batch
                report.answer = self.api.outcome(report.uow_id, report.body)
            else:
                self._send_together(batch)
        except Exception as exc:  # each slot of the batch acts on it (LeaseLost, Unreachable ...)
            for report in batch:
                if report.answer is None and report.error is None:
                    report.error = exc
        finally:
            for report in batch:
                report.done = True

    def _send_together(self, batch: list[_Report]) -> None:
        wanting = [r for r in batch if r.body.get("next") is not None]
        body: dict[str, Any] = {
            "outcomes": [
                {"uow_id": r.uow_id, **{k: v for k, v in r.body.items() if k != "next"}}
                for r in batch
            ]
        }
        if wanting:
            running = dict.fromkeys(u for r in wanting for u in r.body["next"].get("running", []))
            body["next"] = {**wanting[-1].body["next"], "running": list(running)}
            body["next"]["count"] = len(wanting)
        answer = self.api.outcomes(body)
        claims = list(answer.get("next") or [])
        for report, each in zip(batch, answer["outcomes"], strict=True):
            error = each.get("error")
            if error is None:
                report.answer = {**each, "next": None}
            elif error.get("code") == "lease_lost" or error.get("status") == 409:
                report.error = LeaseLost(report.uow_id, str(error.get("message")))
            else:
                report.error = Refused(str(error.get("message")))
        for report in wanting:
            if report.answer is not None and claims:
                report.answer["next"] = claims.pop(0)
        with self._changed:
            self._spare += claims  # mx claimed them for this executor: they must run

    def take_spare(self) -> dict[str, Any] | None:
        """A claim that came with a batch whose outcome for its slot was refused, if any."""
        with self._changed:
            return self._spare.pop(0) if self._spare else None
