"""The executor's side (workers/executor/): backoff, running claims by the shell driver and by
worker classes, outcomes delivered through an outage, leases lost, drain and hurried stops,
against a fake mx."""

from __future__ import annotations

import base64
import random
import threading
from datetime import timedelta
from typing import Any

import pytest

from db.errors import InvalidInput, LeaseLost
from settings import load_settings
from tests.polling import wait_until
from workers.executor.api import Refused, Unreachable
from workers.executor.loop import EXIT_FAILURE, EXIT_RESTART, Executor, ExecutorConfig
from workers.executor.retry import BackoffKind, BackoffPolicy
from workers.executor.run import Claim

FAST = BackoffPolicy(base=timedelta(milliseconds=20), cap=timedelta(milliseconds=50))


def claim(uow_id: str, **fields: Any) -> dict[str, Any]:
    """A claim as mx answers it."""
    return {
        "uow_id": uow_id,
        "lease": f"1.1000.http:t@b:{uow_id}",
        "process": "p",
        "step": None,
        "parent": None,
        "kind": "freerun",
        "command": ["true"],
        "shell": False,
        "worker": None,
        "noop_exit_code": None,
        "arguments": {},
        "timeout": 30.0,
        "attempt": 1,
        "retries": 0,
        "timeperiod": None,
        "start_timeperiod": "20260105130000",
        "end_timeperiod": "20260105130000",
        "heartbeat_interval": 0.05,
        **fields,
    }


class FakeMx:
    """mx as an executor sees it: claims handed out from a list, outcomes recorded."""

    def __init__(self, *claims: dict[str, Any]) -> None:
        self.claims = list(claims)
        self.outcomes: dict[str, list[dict[str, Any]]] = {}
        self.beats: list[str] = []
        #: Messages that came with heartbeats, per unit of work.
        self.messages: dict[str, list[str]] = {}
        self.bodies: list[dict[str, Any]] = []
        #: Bodies of ``POST outcomes`` (several outcomes in one request).
        self.batches: list[dict[str, Any]] = []
        #: Calls to fail with Unreachable before answering (per route).
        self.unreachable = {"claim": 0, "outcome": 0}
        #: Units of work whose heartbeat answers 409.
        self.lost: set[str] = set()
        self.refuse_claims = False
        self.left = threading.Event()
        self._lock = threading.Lock()

    def _fail(self, route: str) -> None:
        with self._lock:
            if self.unreachable[route] > 0:
                self.unreachable[route] -= 1
                raise Unreachable("connection refused")

    def claim(self, body: dict[str, Any]) -> dict[str, Any] | None:
        if self.refuse_claims:
            raise Refused("the token lacks the role")
        self._fail("claim")
        with self._lock:
            self.bodies.append(body)
            if self.claims:
                return self.claims.pop(0)
        threading.Event().wait(min(body["wait"], 0.05))
        return None

    def heartbeat(self, uow_id: str, lease: str, messages: list[str]) -> None:
        self.beats.append(uow_id)
        self.messages.setdefault(uow_id, []).extend(messages)
        if uow_id in self.lost:
            raise LeaseLost(uow_id, "taken over")

    def outcome(self, uow_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self._fail("outcome")
        with self._lock:
            self.outcomes.setdefault(uow_id, []).append(body)
        return {"uow_id": uow_id, "state": body["state"], "changed": True}

    def outcomes(self, body: dict[str, Any]) -> dict[str, Any]:
        self._fail("outcome")
        with self._lock:
            self.batches.append(body)
            for each in body["outcomes"]:
                fields = {k: v for k, v in each.items() if k != "uow_id"}
                self.outcomes.setdefault(each["uow_id"], []).append(fields)
            count = body["next"]["count"] if body.get("next") else 0
            claims = [self.claims.pop(0) for _ in range(min(count, len(self.claims)))]
        answers = [
            {"uow_id": each["uow_id"], "state": each["state"], "changed": True}
            for each in body["outcomes"]
        ]
        return {"outcomes": answers, "next": claims}

    def leave(self, body: dict[str, Any]) -> None:
        self.left.set()


@pytest.fixture
def settings(tmp_path):
    return load_settings(environ={}, cwd=tmp_path)


def executor(mx: FakeMx, settings, **config: Any) -> Executor:
    fields = {"name": "t", "box_id": "b", "wait": 0.05, "backoff": FAST, **config}
    return Executor(mx, ExecutorConfig(**fields), settings)


def run_until(ex: Executor, done) -> int:
    """Run ``ex`` in a thread until ``done()``, then drain it; its exit code."""
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(ex.run()))
    thread.start()
    try:
        wait_until(done, 20, what="the executor's work")
    finally:
        ex.stop()
        thread.join(30)
    return codes[0]


# -- backoff ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "failures", "seconds"),
    [
        (BackoffKind.EXPONENTIAL, 1, 1),
        (BackoffKind.EXPONENTIAL, 2, 2),
        (BackoffKind.EXPONENTIAL, 4, 8),
        (BackoffKind.EXPONENTIAL, 10, 30),
        (BackoffKind.FIXED, 1, 1),
        (BackoffKind.FIXED, 10, 1),
    ],
)
def test_backoff_delays_without_jitter(kind, failures, seconds):
    policy = BackoffPolicy(kind=kind, jitter=0.0)
    assert policy.delay(failures) == timedelta(seconds=seconds)


def test_backoff_jitter_spreads_the_delays():
    policy = BackoffPolicy(kind=BackoffKind.FIXED, base=timedelta(seconds=10), jitter=0.2)
    rng = random.Random(7)
    delays = {policy.delay(3, rng).total_seconds() for _ in range(50)}
    assert len(delays) > 40 and min(delays) >= 8.0 and max(delays) <= 12.0


def test_backoff_refuses_a_bad_policy():
    with pytest.raises(InvalidInput, match="backoff_max"):
        BackoffPolicy(base=timedelta(seconds=5), cap=timedelta(seconds=1))


# -- running and reporting -------------------------------------------------------------------------


def test_a_command_claim_runs_and_is_reported(settings, tmp_path):
    mark = tmp_path / "ran"
    mx = FakeMx(claim("u1", command=["sh", "-c", f"echo {{uow_id}} >> {mark}; echo out"]))
    code = run_until(executor(mx, settings), lambda: "u1" in mx.outcomes)
    assert code == 0
    (body,) = mx.outcomes["u1"]
    assert (body["state"], body["exit_code"], body["output_tail"]) == ("processed", 0, "out\n")
    assert body["lease"] == "1.1000.http:t@b:u1"
    assert mark.read_text() == "u1\n"
    assert mx.left.is_set()
    assert mx.bodies[0]["name"] == "t" and mx.bodies[0]["box"] == "b"


def test_a_failing_command_is_reported_invalid(settings):
    mx = FakeMx(
        claim("u1", command=["sh", "-c", "exit 4"]),
        claim("u2", command=["sh", "-c", "exit 7"], noop_exit_code=7),
    )
    run_until(executor(mx, settings), lambda: {"u1", "u2"} <= set(mx.outcomes))
    assert mx.outcomes["u1"][0]["state"] == "invalid"
    assert "exited with code 4" in mx.outcomes["u1"][0]["error"]
    assert mx.outcomes["u2"][0]["state"] == "noop"


def test_the_timeout_kills_the_commands_process_group(settings, tmp_path):
    child = tmp_path / "child.pid"
    command = ["sh", "-c", f"sleep 30 & echo $! > {child}; wait"]
    mx = FakeMx(claim("u1", command=command, timeout=0.5))
    run_until(executor(mx, settings), lambda: "u1" in mx.outcomes)
    body = mx.outcomes["u1"][0]
    assert body["state"] == "invalid" and "timed out after 0.5 s" in body["error"]
    pid = int(child.read_text())
    import psutil

    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_worker_classes_run_with_their_outcomes(settings):
    mx = FakeMx(
        claim("u1", command=None, worker="tests.fixtures.workers:Succeeding"),
        claim("u2", command=None, worker="tests.fixtures.workers:Failing"),
        claim("u3", command=None, worker="no.such:Class"),
    )
    run_until(executor(mx, settings), lambda: {"u1", "u2", "u3"} <= set(mx.outcomes))
    assert mx.outcomes["u1"][0]["state"] == "processed"
    assert mx.outcomes["u2"][0]["state"] == "invalid"
    assert "cannot load worker no.such:Class" in mx.outcomes["u3"][0]["error"]


def test_a_step_hands_on_its_result(settings):
    command = ["sh", "-c", 'echo \'{{"rows": 3}}\' > "$TACTUS_RESULT"']
    mx = FakeMx(claim("u1", command=command, step="extract", parent="run1"))
    run_until(executor(mx, settings), lambda: "u1" in mx.outcomes)
    assert mx.outcomes["u1"][0]["result"] == {"rows": 3}


def test_an_outcome_waits_out_mx_and_is_delivered_once(settings):
    mx = FakeMx(claim("u1"))
    mx.unreachable["outcome"] = 4
    run_until(executor(mx, settings), lambda: "u1" in mx.outcomes)
    assert len(mx.outcomes["u1"]) == 1 and mx.unreachable["outcome"] == 0


def test_claims_back_off_while_mx_is_unreachable(settings):
    mx = FakeMx(claim("u1"))
    mx.unreachable["claim"] = 3
    ex = executor(mx, settings)
    run_until(ex, lambda: "u1" in mx.outcomes)
    assert ex.outage.outages == 1 and ex.outage.up


def test_a_lost_lease_stops_the_run_and_drops_its_outcome(settings, tmp_path):
    mx = FakeMx(claim("u1", command=["sleep", "30"]))
    mx.lost.add("u1")
    ex = executor(mx, settings)
    run_until(ex, lambda: "u1" in mx.beats and not ex._running)
    assert "u1" not in mx.outcomes


def test_a_refused_claim_stops_the_executor(settings):
    mx = FakeMx()
    mx.refuse_claims = True
    assert executor(mx, settings).run() == EXIT_FAILURE


def test_drain_finishes_the_running_unit_and_claims_nothing_more(settings, tmp_path):
    started = tmp_path / "started"
    mx = FakeMx(
        claim("u1", command=["sh", "-c", f"touch {started}; sleep 1"]),
        claim("u2"),
    )
    ex = executor(mx, settings)
    thread = threading.Thread(target=ex.run)
    thread.start()
    wait_until(started.exists, 10, what="u1 to start")
    ex.stop()
    thread.join(20)
    assert mx.outcomes["u1"][0]["state"] == "processed"
    assert "u2" not in mx.outcomes and mx.claims  # u2 was never claimed


def test_a_hurried_stop_kills_the_run_and_reports_nothing(settings, tmp_path):
    started = tmp_path / "started"
    mx = FakeMx(claim("u1", command=["sh", "-c", f"touch {started}; sleep 30"]))
    ex = executor(mx, settings)
    thread = threading.Thread(target=ex.run)
    thread.start()
    wait_until(started.exists, 10, what="u1 to start")
    ex.stop()
    ex.hurry()
    thread.join(20)
    assert not thread.is_alive() and "u1" not in mx.outcomes


def test_a_python_call_past_its_timeout_is_invalid_and_the_executor_restarts(settings):
    mx = FakeMx(
        claim(
            "u1",
            command=None,
            worker="tests.fixtures.workers:Sleeping",
            timeout=0.3,
            arguments={"seconds": 2},
        )
    )
    ex = executor(mx, settings)
    code = run_until(ex, lambda: "u1" in mx.outcomes)
    assert mx.outcomes["u1"][0]["state"] == "invalid"
    assert "timed out after 0.3 s" in mx.outcomes["u1"][0]["error"]
    assert code == EXIT_RESTART and ex.abandoned


def test_a_claim_is_read_from_mxs_answer():
    parsed = Claim.from_json(claim("u1", command="echo {uow_id}", shell=True, timeout=2))
    assert parsed.entry().command == "echo {uow_id}" and parsed.entry().shell
    assert parsed.timeout == timedelta(seconds=2)
    with pytest.raises(ValueError, match="not a claim"):
        Claim.from_json({"uow_id": "x"})


def test_messages_go_with_heartbeats_and_the_outcome_and_the_payload_comes_with_the_claim(
    settings,
):
    command = [
        "sh",
        "-c",
        'echo one >> "$TACTUS_MESSAGES"; sleep 0.3; echo two >> "$TACTUS_MESSAGES";'
        ' cat "$TACTUS_PAYLOAD"',
    ]
    data = base64.b64encode(b"payload bytes").decode()
    mx = FakeMx(
        claim("u1", command=command, payload_id="p1", payload=data),
        claim(
            "u2",
            command=None,
            worker="tests.fixtures.workers:Messaging",
            arguments={"messages": ["a", "b"]},
            payload_id="p1",
            payload=data,
        ),
        claim("u3", payload_id="gone", payload=None),
    )
    run_until(executor(mx, settings), lambda: {"u1", "u2", "u3"} <= set(mx.outcomes))
    (first,) = mx.outcomes["u1"]
    assert first["output_tail"] == "payload bytes"
    assert mx.messages.get("u1", []) + first.get("messages", []) == ["one", "two"]
    assert sorted(mx.messages.get("u2", []) + mx.outcomes["u2"][0].get("messages", [])) == [
        "a",
        "b",
    ]
    assert "payload gone is not in the store" in mx.outcomes["u3"][0]["error"]
