"""The scheduler through outages and failures (SPEC section 15), with an injected clock:
a failing pass backs off instead of spinning, what an outage kept from being published is
published when it ends, and workers get fresh heartbeats before any is declared lost."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from db.errors import StoreUnavailable
from db.ids import new_id
from db.models import UnitOfWork, WorkerRecord
from db.outage import Outage, Outages
from db.states import UowKind, UowState, WorkerState
from scheduler.presence import Presence
from scheduler.service import Scheduler
from tests.polling import wait_until


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def _outages(monotonic: FakeMonotonic) -> Outages:
    return Outages(
        store=Outage("store", monotonic=monotonic), broker=Outage("broker", monotonic=monotonic)
    )


def _scheduler(kit, outages: Outages) -> Scheduler:
    kit.scheduler = Scheduler(kit.store, kit.broker, kit.clock, kit.config, outages=outages)
    kit.scheduler.reload()
    return kit.scheduler


def _requested(kit, process: str, submitted_ago: timedelta) -> UnitOfWork:
    """A requested unit of work stored but never published (its publish met the outage)."""
    at = kit.clock.now() - submitted_ago
    return kit.store.create_uow(
        UnitOfWork(
            id=new_id(),
            process=process,
            kind=UowKind.FREERUN,
            start_timeperiod="2026010512",
            end_timeperiod="2026010513",
            run_key=new_id(),
            created_at=at,
            updated_at=at,
            submitted_at=at,
        )
    )


def test_a_pass_that_keeps_failing_backs_off_instead_of_spinning(kit):
    # given: a freerun that is always due, and a pass that fails on every fire (a bug)
    kit.register(name="cron", kind="freerun", command=["true"], trigger="every 1")
    attempts: list[float] = []

    class BrokenFires:
        def __init__(self, store):
            self._store = store

        def __getattr__(self, name):
            return getattr(self._store, name)

        def record_fires(self, fires):
            attempts.append(time.monotonic())
            raise RuntimeError("a bug in recording fires")

    kit.scheduler = Scheduler(BrokenFires(kit.store), kit.broker, kit.clock, kit.config)
    kit.clock.advance(5)
    # when the loop runs for 2.5 s
    loop = threading.Thread(target=kit.scheduler._loop, name="scheduler-loop", daemon=True)
    loop.start()
    try:
        time.sleep(2.5)
    finally:
        kit.scheduler.stop()
        loop.join(5)
    # then: passes at 0, ~1 s and ~3 s (doubling), not one after the other
    assert 1 <= len(attempts) <= 3, f"{len(attempts)} failing passes in 2.5 s"


def test_units_stored_during_an_outage_are_published_when_it_ends(kit):
    # given: a scheduler that saw the broker go away for 40 s
    kit.register(name="cron", kind="freerun", command=["true"], trigger="every 3600")
    monotonic = FakeMonotonic()
    outages = _outages(monotonic)
    scheduler = _scheduler(kit, outages)
    kit.run()
    kit.broker.published.clear()
    during = _requested(kit, "cron", submitted_ago=timedelta(seconds=20))
    # (published 3 minutes ago: before the outage and its margin, not yet due for the
    # unclaimed re-post of 5 minutes)
    long_before = _requested(kit, "cron", submitted_ago=timedelta(minutes=3))
    outages.broker.failed(StoreUnavailable("connection reset"))
    # when it comes back (40 s later)
    monotonic.now += 40
    outages.broker.succeeded()
    scheduler.run_pass()
    # then: the unit stored during the outage is published at once; the one published long
    # before is left to the broker that holds it
    assert kit.broker.uow_ids() == [during.id]
    assert long_before.id not in kit.broker.uow_ids()
    assert kit.store.get_uow(during.id).state is UowState.REQUESTED
    # and only once: the next pass does not publish it again
    kit.run(seconds=1)
    assert kit.broker.uow_ids() == [during.id]


def _worker(kit, worker_id: str, silent_for: timedelta) -> None:
    now = kit.clock.now()
    kit.store.save_worker(
        WorkerRecord(
            worker_id=worker_id,
            process="cron",
            box_id="b1",
            pid=1,
            started_at=now - silent_for,
            heartbeat_at=now - silent_for,
        )
    )


def _state(kit, worker_id: str) -> str:
    (record,) = [w for w in kit.store.list_workers() if w.worker_id == worker_id]
    return record.state


class Gate:
    """Stands for the scheduler's presence: how long its own beats have gone through on time."""

    def __init__(self) -> None:
        self.steady = 0.0

    def __call__(self) -> float:
        return self.steady


def _gated(kit, gate: Gate) -> Scheduler:
    kit.scheduler = Scheduler(kit.store, kit.broker, kit.clock, kit.config, store_steady_for=gate)
    kit.scheduler.reload()
    return kit.scheduler


def test_workers_get_fresh_heartbeats_after_the_schedulers_own_outage(kit):
    # given: the scheduler could not reach the store for a minute; neither could the worker
    gate = Gate()
    scheduler = _gated(kit, gate)
    _worker(kit, "w1", silent_for=timedelta(seconds=60))
    # when the store is back (the scheduler's beats go through again) and it recovers at once
    scheduler.run_pass()
    # then the worker is not judged yet: it has heartbeat_interval * misses (15 s) to beat
    assert _state(kit, "w1") == WorkerState.ALIVE
    gate.steady = 10
    kit.run(seconds=10)
    assert _state(kit, "w1") == WorkerState.ALIVE
    # when it stays silent past the grace
    gate.steady = 16
    kit.run(seconds=6)
    # then it is lost
    assert _state(kit, "w1") == WorkerState.LOST


def test_a_worker_that_beats_within_the_grace_is_never_lost(kit):
    gate = Gate()
    scheduler = _gated(kit, gate)
    _worker(kit, "w1", silent_for=timedelta(seconds=120))
    scheduler.run_pass()
    gate.steady = 4
    kit.store.beat_worker("w1", kit.clock.advance(4))
    gate.steady = 20
    kit.run(seconds=2)
    assert _state(kit, "w1") == WorkerState.ALIVE


def test_presence_is_steady_only_while_its_beats_go_through_on_time(kit):
    # given the scheduler's presence, beating every 5 s
    monotonic = FakeMonotonic()
    presence = Presence(
        kit.store, kit.clock, box_id="b1", interval=timedelta(seconds=5), monotonic=monotonic
    )
    assert presence.steady_for() == 0.0  # nothing went through yet
    presence._register()
    for _ in range(3):
        monotonic.now += 5
        presence._beat_once()
    assert presence.steady_for() == 15
    # when a beat hangs behind a lock held elsewhere for 25 s (a stall, not an error)
    monotonic.now += 11
    assert presence.steady_for() == 0.0  # overdue: the workers' beats hang too
    monotonic.now += 14
    presence._beat_once()  # it went through at last
    # then a new run starts: the grace counts from here
    assert presence.steady_for() == 0.0
    monotonic.now += 5
    presence._beat_once()
    assert presence.steady_for() == 5


def test_presence_beats_that_fail_do_not_count(kit):
    monotonic = FakeMonotonic()

    class Away:
        def beat_worker(self, *args, **kwargs):
            raise StoreUnavailable("down")

    presence = Presence(
        kit.store, kit.clock, box_id="b1", interval=timedelta(seconds=5), monotonic=monotonic
    )
    presence._register()
    presence._store = Away()
    monotonic.now += 5
    with pytest.raises(StoreUnavailable):
        presence._beat_once()
    monotonic.now += 6
    assert presence.steady_for() == 0.0


def test_lost_and_stopped_workers_are_removed_after_the_retention(kit):
    # given (retention: a day by default)
    _worker(kit, "old-lost", silent_for=timedelta(days=2))
    _worker(kit, "old-stopped", silent_for=timedelta(days=2))
    _worker(kit, "new-lost", silent_for=timedelta(hours=2))
    _worker(kit, "alive", silent_for=timedelta(seconds=1))
    kit.store.set_worker_state("old-stopped", WorkerState.STOPPED, expected_state=WorkerState.ALIVE)
    kit.store.set_worker_state("new-lost", WorkerState.LOST, expected_state=WorkerState.ALIVE)
    # when recovery runs (the first pass declares old-lost lost, a later pass removes it)
    kit.run()
    kit.run(seconds=2)
    # then
    remaining = {w.worker_id: w.state for w in kit.store.list_workers()}
    assert remaining == {"new-lost": WorkerState.LOST, "alive": WorkerState.ALIVE}


def test_the_status_listener_survives_poison_and_goes_on(kit, tmp_path):
    # given: a scheduler on the embedded queue, its listener running
    from mq import open_broker
    from mq.message import dead_letter_queue, status_message, status_queue

    broker = open_broker("store", kit.store)
    queue = status_queue(kit.config.queue_prefix)
    broker.declare(queue)
    kit.register(name="cron", kind="freerun", command=["true"], trigger="every 3600")
    scheduler = Scheduler(kit.store, broker, kit.clock, kit.config)
    woken: list[str] = []
    real_wake = scheduler.wake
    scheduler.wake = lambda *names: (woken.extend(names), real_wake(*names))
    listener = threading.Thread(target=scheduler._listen, name="scheduler-status", daemon=True)
    # when poison arrives first, then a good status
    broker.publish(queue, b"[" * 100_000)
    broker.publish(queue, b"\xff\xfe")
    uow = _requested(kit, "cron", submitted_ago=timedelta(0))
    broker.publish(queue, status_message(uow.id, "cron").encode())
    listener.start()
    try:
        # then the good one is taken, the poison dead-lettered, the thread alive
        wait_until(lambda: "cron" in woken, what="the status after the poison")
        assert broker.depth(dead_letter_queue(queue)) == 2
        assert listener.is_alive()
    finally:
        scheduler._stopping.set()
        listener.join(5)


def test_a_starting_scheduler_gives_workers_fresh_heartbeats_too(kit):
    # given: a scheduler that starts after a crash, not knowing how long the store was away
    # (its presence has only just registered); a worker whose last beat is a minute old
    gate = Gate()
    scheduler = _gated(kit, gate)
    _worker(kit, "w1", silent_for=timedelta(seconds=60))
    # when it recovers at once
    scheduler.run_pass()
    # then the worker gets heartbeat_interval * misses (15 s) from the start to beat
    assert _state(kit, "w1") == WorkerState.ALIVE
    gate.steady = 16
    kit.run(seconds=16)
    assert _state(kit, "w1") == WorkerState.LOST
