"""The executor's outcome batcher (workers/executor/batch.py): an outcome alone goes alone;
those that come while a request is on the way go together, with one claim for their slots."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from db.errors import LeaseLost
from tests.polling import wait_until
from workers.executor.api import Unreachable
from workers.executor.batch import OutcomeBatcher


class SlowMx:
    """``outcome`` holds until ``release`` is set; ``outcomes`` answers from ``answer``."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.singles: list[str] = []
        self.batches: list[dict[str, Any]] = []
        self.answer = None
        self.fail: Exception | None = None

    def outcome(self, uow_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self.singles.append(uow_id)
        self.release.wait(10)
        return {"uow_id": uow_id, "state": body["state"], "changed": True, "next": None}

    def outcomes(self, body: dict[str, Any]) -> dict[str, Any]:
        self.batches.append(body)
        if self.fail is not None:
            raise self.fail
        return self.answer(body)


def report(uow_id: str, *, next_: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {"lease": f"1.2.http:x-{uow_id}", "state": "processed"}
    if next_:
        body["next"] = {"name": "x", "box": "b", "instance": "1-a", "running": [uow_id]}
    return body


def in_threads(batcher: OutcomeBatcher, mx: SlowMx, uow_ids: list[str]) -> dict[str, Any]:
    """``a`` sent alone and held; the others come meanwhile; then ``a`` is answered."""
    results: dict[str, Any] = {}

    def send(uow_id: str) -> None:
        try:
            results[uow_id] = batcher.outcome(uow_id, report(uow_id))
        except Exception as exc:
            results[uow_id] = exc

    first = threading.Thread(target=send, args=(uow_ids[0],))
    first.start()
    wait_until(lambda: mx.singles, 5, what="the first outcome on the way")
    others = [threading.Thread(target=send, args=(u,)) for u in uow_ids[1:]]
    for thread in others:
        thread.start()
    wait_until(lambda: len(batcher._waiting) == len(others), 5, what="the others waiting")
    mx.release.set()
    for thread in [first, *others]:
        thread.join(10)
    return results


def test_outcomes_that_come_meanwhile_go_together_with_one_claim():
    # given mx answering a batch with two claims
    mx = SlowMx()
    mx.answer = lambda body: {
        "outcomes": [
            {"uow_id": o["uow_id"], "state": "processed", "changed": True} for o in body["outcomes"]
        ],
        "next": [{"uow_id": "n1"}, {"uow_id": "n2"}],
    }
    batcher = OutcomeBatcher(mx)
    # when b and c end while a's outcome is on the way
    results = in_threads(batcher, mx, ["a", "b", "c"])
    # then a went alone, b and c together asking for two units of work
    assert mx.singles == ["a"]
    (batch,) = mx.batches
    assert [o["uow_id"] for o in batch["outcomes"]] == ["b", "c"]
    assert all("next" not in o for o in batch["outcomes"])
    assert batch["next"]["count"] == 2
    assert sorted(batch["next"]["running"]) == ["b", "c"]
    assert {results["b"]["next"]["uow_id"], results["c"]["next"]["uow_id"]} == {"n1", "n2"}
    assert results["a"]["changed"] is True
    assert batcher.take_spare() is None


def test_an_outcome_refused_in_a_batch_is_refused_to_its_slot_alone_and_its_claim_kept():
    mx = SlowMx()
    mx.answer = lambda body: {
        "outcomes": [
            {"uow_id": "b", "error": {"code": "lease_lost", "message": "gone", "status": 409}},
            {"uow_id": "c", "state": "processed", "changed": True},
        ],
        "next": [{"uow_id": "n1"}, {"uow_id": "n2"}],
    }
    batcher = OutcomeBatcher(mx)
    results = in_threads(batcher, mx, ["a", "b", "c"])
    assert isinstance(results["b"], LeaseLost)
    assert results["c"]["next"]["uow_id"] == "n1"
    # the claim made for b's slot is not lost: the next free slot takes it
    assert batcher.take_spare() == {"uow_id": "n2"}
    assert batcher.take_spare() is None


def test_a_batch_that_cannot_be_sent_fails_every_slot_of_it():
    mx = SlowMx()
    mx.fail = Unreachable("connection refused")
    batcher = OutcomeBatcher(mx)
    results = in_threads(batcher, mx, ["a", "b", "c"])
    assert isinstance(results["b"], Unreachable) and isinstance(results["c"], Unreachable)
    assert results["a"]["changed"] is True


def test_an_outcome_alone_goes_by_the_single_route():
    mx = SlowMx()
    mx.release.set()
    batcher = OutcomeBatcher(mx)
    assert batcher.outcome("a", report("a", next_=False))["state"] == "processed"
    assert (mx.singles, mx.batches) == (["a"], [])


@pytest.mark.parametrize("slots", [2, 8])
def test_many_slots_never_lose_an_outcome(slots):
    mx = SlowMx()
    mx.release.set()
    mx.answer = lambda body: {
        "outcomes": [
            {"uow_id": o["uow_id"], "state": "processed", "changed": True} for o in body["outcomes"]
        ],
        "next": [],
    }
    batcher = OutcomeBatcher(mx)
    done: list[str] = []

    def slot(n: int) -> None:
        for i in range(50):
            batcher.outcome(f"{n}-{i}", report(f"{n}-{i}"))
            done.append(f"{n}-{i}")

    threads = [threading.Thread(target=slot, args=(n,)) for n in range(slots)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    sent = mx.singles + [o["uow_id"] for b in mx.batches for o in b["outcomes"]]
    assert sorted(sent) == sorted(done) and len(done) == 50 * slots
