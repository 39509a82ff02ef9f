"""What a worker sends back and gives back: the status with its ack, once per outcome, and again
when the worker that stored an outcome died before acking (the message comes back and the next
worker re-announces the outcome instead of running the unit of work again); and the messages it
prefetched behind a long run, for an idle worker to take. On the store queue and on RabbitMQ."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from db.state_change import change_uow
from db.states import UowState
from mq import open_broker
from mq.message import Message, status_queue, uow_message
from tests import servers
from tests.polling import wait_until
from tests.workers.conftest import Harness
from workers.runner import EXIT_OK

if TYPE_CHECKING:
    from pathlib import Path

    from db.models import UnitOfWork
    from mq.broker import Broker

RABBITMQ = os.environ.get("TACTUS_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/%2F")


@dataclass
class Setup:
    """A worker test installation (``harness``) with the broker under test."""

    harness: Harness
    broker: Broker
    #: Environment of worker processes (which broker to use).
    env: dict[str, str] = field(default_factory=dict)

    def queue(self, process: str) -> str:
        return self.harness.queue(process)

    def publish(self, uow: UnitOfWork) -> None:
        self.broker.publish(self.queue(uow.process), uow_message(uow.id, uow.process).encode())

    @property
    def status_queue(self) -> str:
        return status_queue(self.harness.settings.queue_prefix)


@pytest.fixture(params=["store", "rabbitmq"])
def setup(request, harness):
    """The harness on the store queue, or on RabbitMQ (its queues deleted afterwards)."""
    if request.param == "store":
        yield Setup(harness, harness.broker)
        return
    if not servers.port_open("127.0.0.1", 5672):
        servers.unavailable("RabbitMQ not reachable on 127.0.0.1:5672")
    broker = open_broker(RABBITMQ, harness.store)
    used = Setup(harness, broker, {"TACTUS_BROKER_URI": RABBITMQ})
    try:
        yield used
    finally:
        for process in ("counted", "once", "mixed"):
            broker.delete(used.queue(process))
        broker.delete(used.status_queue)
        broker.close()


def _statuses(broker, queue: str, count: int) -> list[Message]:
    """Consume ``count`` status messages (failing if they do not come), then check no more do."""
    found: list[Message] = []
    with broker.consumer(queue, prefetch=10) as consumer:
        while len(found) < count:
            delivery = consumer.get(15)
            assert delivery is not None, f"{len(found)} of {count} status messages came"
            found.append(Message.decode(delivery.body))
            consumer.ack(delivery)
        assert consumer.get(0.5) is None, "more status messages than outcomes"
    return found


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_worker_sends_one_status_per_outcome(setup):
    harness = setup.harness
    # given three units of work
    runs = harness.tmp / "runs"
    harness.register("counted", command=["sh", "-c", f"echo {{uow_id}} >> {runs}"])
    uows = [harness.submit("counted", publish=False) for _ in range(3)]
    for uow in uows:
        setup.publish(uow)
    # when a worker runs them
    worker = harness.start_worker("counted", **setup.env)
    for uow in uows:
        harness.wait_uow(uow.id, UowState.PROCESSED)
    # then each outcome is announced once
    statuses = _statuses(setup.broker, setup.status_queue, 3)
    assert sorted(m.uow_id for m in statuses) == sorted(u.id for u in uows)
    assert {m.kind for m in statuses} == {"uow_status"}
    assert sorted(_lines(runs)) == sorted(u.id for u in uows)
    # and every message was acked (a stopping worker gives unacked ones back)
    worker.send_signal(signal.SIGTERM)
    assert harness.wait_exit(worker) == EXIT_OK
    assert setup.broker.depth(setup.queue("counted")) == 0


def test_worker_announces_again_what_a_dead_worker_stored_but_never_acked(setup):
    harness = setup.harness
    # given a worker that took the message, stored the outcome and died before acking: its
    # unacked message goes back to the queue, marked redelivered, and no status was sent
    runs = harness.tmp / "runs"
    harness.register("once", command=["sh", "-c", f"echo {{uow_id}} >> {runs}"])
    uow = harness.submit("once", publish=False)
    setup.publish(uow)
    with setup.broker.consumer(setup.queue("once")) as dead:
        assert dead.get(15) is not None
        claimed = change_uow(harness.store, uow, "claim", clock=harness.clock, actor="dead")
        change_uow(harness.store, claimed, "succeed", clock=harness.clock, actor="dead")
    # when a new worker starts
    worker = harness.start_worker("once", **setup.env)
    # then it announces the stored outcome, without running the unit of work again
    (status,) = _statuses(setup.broker, setup.status_queue, 1)
    assert (status.kind, status.uow_id) == ("uow_status", uow.id)
    assert _lines(runs) == []
    assert harness.history(uow.id) == [("claim", "in_progress"), ("succeed", "processed")]
    # and it acked the message: nothing comes back when it stops
    worker.send_signal(signal.SIGTERM)
    assert harness.wait_exit(worker) == EXIT_OK
    assert setup.broker.depth(setup.queue("once")) == 0


def test_messages_prefetched_behind_a_long_run_go_to_an_idle_worker(setup):
    harness = setup.harness
    # given a long unit of work and a short one, both prefetched by the first worker
    slow = harness.tmp / "slow"
    slow.mkdir()
    harness.register(
        "mixed",
        command=["sh", "-c", f"if [ -e {slow}/{{uow_id}} ]; then sleep 8; fi"],
        timeout=60,
    )
    long, short = (harness.submit("mixed", publish=False) for _ in range(2))
    (slow / long.id).touch()
    setup.publish(long)
    setup.publish(short)
    first = harness.start_worker("mixed", TACTUS_WORKER_PREFETCH="2", **setup.env)
    harness.wait_uow(long.id, UowState.IN_PROGRESS)
    wait_until(lambda: setup.broker.depth(setup.queue("mixed")) == 0, what="both prefetched")
    # when a second worker comes up while the long one runs
    harness.start_worker("mixed", TACTUS_WORKER_PREFETCH="2", **setup.env)
    # then the short one runs there, without waiting for the long one
    done = harness.wait_uow(short.id, UowState.PROCESSED, deadline=6)
    assert harness.uow(long.id).state == UowState.IN_PROGRESS
    assert not done.worker_id.startswith(f"mixed@testbox:{first.pid}-")
    long_done = harness.wait_uow(long.id, UowState.PROCESSED)
    assert long_done.worker_id.startswith(f"mixed@testbox:{first.pid}-")
