"""Waiting out outages (db/outage.py): the log reads like a pager, waits end when the store is
back, stopping ends them, and a patient store retries until the store answers."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

import pytest

from db.errors import NotFound, StoreUnavailable
from db.outage import Outage, PatientStore, call_patiently
from db.store import Store
from tests.polling import wait_until


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_an_outage_is_logged_when_it_starts_once_a_minute_and_when_it_ends(caplog):
    # given
    clock = FakeMonotonic()
    outage = Outage("store", monotonic=clock)
    caplog.set_level(logging.WARNING, logger="tactus")
    # when: 10 minutes of failures, one a second, from several callers
    for _ in range(600):
        outage.failed(StoreUnavailable("connection refused"))
        clock.now += 1.0
    outage.succeeded()
    outage.succeeded()
    # then: one line to start, one a minute (9 reminders), one to end
    lines = _warnings(caplog)
    assert lines[0].startswith("store unavailable: connection refused; waiting it out")
    assert sum("still unavailable" in line for line in lines) == 9
    assert lines[-1].startswith("store available again after 600.0 s (600 calls failed")
    assert len(lines) == 11
    assert outage.up and outage.outages == 1


def test_recovery_listeners_get_the_length_of_the_outage():
    clock = FakeMonotonic()
    outage = Outage("broker", monotonic=clock)
    heard: list[float] = []
    outage.on_recovery(heard.append)
    outage.on_recovery(lambda lasted: 1 / 0)  # a failing listener does not hide the others
    outage.failed(StoreUnavailable("down"))
    clock.now += 12
    outage.succeeded()
    assert heard == [12]


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [(1, 0.175, 0.325), (3, 0.7, 1.3), (10, 21.0, 30.0), (50, 21.0, 30.0)],
)
def test_pauses_double_with_jitter_up_to_the_cap(attempt, low, high):
    outage = Outage("store", backoff_max=timedelta(seconds=30))
    pauses = [outage.pause(attempt) for _ in range(200)]
    assert all(low <= p <= high for p in pauses)
    assert len(set(pauses)) > 50  # jittered, not in lockstep (at the cap, only downwards)


def test_a_wait_ends_when_another_call_gets_through():
    # given: a long pause ahead
    outage = Outage("store", base=timedelta(seconds=60), backoff_max=timedelta(seconds=60))
    outage.failed(StoreUnavailable("down"))
    ended = threading.Event()

    def waiter():
        outage.wait(1)
        ended.set()

    threading.Thread(target=waiter, daemon=True).start()
    # when another thread's call succeeds
    time.sleep(0.1)
    outage.succeeded()
    # then the waiter goes on at once, not after 60 s
    assert ended.wait(2)


def test_a_wait_gives_up_when_the_daemon_stops():
    outage = Outage("store", base=timedelta(seconds=60), backoff_max=timedelta(seconds=60))
    stopping = threading.Event()
    threading.Timer(0.1, stopping.set).start()
    started = time.monotonic()
    assert outage.wait(1, stopping) is False
    assert time.monotonic() - started < 2


def test_call_patiently_retries_until_the_call_goes_through():
    outage = Outage("store", base=timedelta(milliseconds=1), backoff_max=timedelta(milliseconds=5))
    answers = iter([StoreUnavailable("a"), StoreUnavailable("b"), StoreUnavailable("c"), 42])

    def call():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert call_patiently(outage, call, errors=(StoreUnavailable,)) == 42
    assert outage.up and outage.outages == 1


def test_call_patiently_raises_at_once_without_waiting_and_for_permanent_errors():
    outage = Outage("store")
    calls: list[int] = []

    def down():
        calls.append(1)
        raise StoreUnavailable("down")

    with pytest.raises(StoreUnavailable):
        call_patiently(outage, down, errors=(StoreUnavailable,), wait=False)
    assert len(calls) == 1 and not outage.up  # tracked all the same

    def no_driver():
        calls.append(2)
        raise StoreUnavailable("no driver", transient=False)

    with pytest.raises(StoreUnavailable):
        call_patiently(Outage("store"), no_driver, errors=(StoreUnavailable,))
    assert calls.count(2) == 1


class FlakyStore:
    """Fails its first ``failures`` calls of ``get_process`` with StoreUnavailable."""

    backend = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.closed = False

    def get_process(self, name):
        self.calls += 1
        if self.calls <= self.failures:
            raise StoreUnavailable("connection refused")
        if name == "missing":
            raise NotFound("process", name)
        return f"record of {name}"

    def close(self):
        self.closed = True


def test_patient_store_waits_out_the_outage_and_passes_the_rest_through():
    # given
    inner = FlakyStore(failures=5)
    outage = Outage("store", base=timedelta(milliseconds=1), backoff_max=timedelta(milliseconds=5))
    store = PatientStore(inner, outage)
    # then
    assert isinstance(store, Store)
    assert store.backend == "flaky"
    assert store.get_process("a") == "record of a" and inner.calls == 6
    with pytest.raises(NotFound):
        store.get_process("missing")  # not an outage: raised at once
    assert inner.calls == 7
    with store:
        pass
    assert inner.closed


def test_impatient_view_tries_once_and_reports_to_the_same_outage():
    inner = FlakyStore(failures=1)
    outage = Outage("store")
    store = PatientStore(inner, outage).impatient()
    with pytest.raises(StoreUnavailable):
        store.get_process("a")
    assert not outage.up
    assert store.get_process("a") == "record of a"
    assert outage.up


def test_patient_store_raises_when_stopping():
    inner = FlakyStore(failures=10**9)
    stopping = threading.Event()
    store = PatientStore(inner, Outage("store", base=timedelta(seconds=1)), stopping=stopping)
    threading.Timer(0.2, stopping.set).start()
    with pytest.raises(StoreUnavailable):
        store.get_process("a")
    wait_until(lambda: stopping.is_set())
