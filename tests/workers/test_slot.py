"""One worker slot in this process, against a real SQLite store and the store queue: while the
next delivery is already in hand, its claim is written in the commit that records the outcome
before it (one durable write fewer per unit of work), and every odd next delivery (garbage, a
unit of work finished or claimed elsewhere) is dealt with as on its own.

Each test runs twice: with the store queue's settlements (the ack, the status message and the
next message claims written in the outcome's commit) and with acks of their own after the
commit, the way a broker outside the store (RabbitMQ) acks."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa

from db.backends.sql.engine import WRITE_OPTION
from db.chain import Lookahead
from db.errors import BrokerUnavailable
from db.state_change import change_uow
from db.states import UowState
from mq.broker import SettlingConsumer
from mq.message import Message, status_message, status_queue
from tests.workers.conftest import Harness
from workers.slot import Slot

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from db.clock import Clock
    from db.models import ProcessEntry, UnitOfWork
    from db.store import Store
    from mq.broker import Broker


class SpyStore:
    """The real store, noting the triggers of each state-changing write (one list a commit)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.commits: list[list[str]] = []
        #: Run once before the first write of several steps: another actor acting meanwhile.
        self.meanwhile: Callable[[], None] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def transition_uow(self, uow_id: str, **kwargs: Any) -> UnitOfWork:
        self.commits.append([kwargs["event"].trigger])
        return self._store.transition_uow(uow_id, **kwargs)

    def transition_uows(self, steps: Any) -> list[Any]:
        self._before(steps)
        return self._store.transition_uows(steps)

    def settle_uows(self, steps: Any, settlement: Any) -> tuple[list[Any], Any]:
        self._before(steps)
        return self._store.settle_uows(steps, settlement)

    def _before(self, steps: Any) -> None:
        if len(steps) > 1 and self.meanwhile is not None:
            meanwhile, self.meanwhile = self.meanwhile, None
            meanwhile()
        self.commits.append([step.event.trigger for step in steps])


@dataclass
class Owner:
    """What a slot needs from its worker process (``workers.slot.SlotOwner``)."""

    settings: Any
    entry: ProcessEntry
    store: Any
    broker: Broker
    clock: Clock
    queue: str
    worker_class: None = None
    worker_id: str = "chain@testbox:1-0"
    actor: str = "worker chain@testbox:1-0"
    stop_event: threading.Event = field(default_factory=threading.Event)
    failed: bool = False
    #: True: the consumer acks on its own after the outcome's commit (no settlements).
    separate_acks: bool = False
    #: What flow changes announced (db.flows): none here, no unit of work is a step.
    announced: list = field(default_factory=list)

    @property
    def quick_store(self) -> Any:
        return self.store  # a store that does not wait: outcomes are not journaled

    def current_entry(self) -> ProcessEntry:
        return self.entry

    @property
    def lookahead(self) -> Lookahead:
        return Lookahead(lambda name: self.entry if name == self.entry.name else None)

    def status_notice(self, uow: UnitOfWork) -> tuple[str, bytes]:
        return status_queue(self.settings.queue_prefix), status_message(
            uow.id, uow.process
        ).encode()

    def publish_status(self, uow: UnitOfWork) -> None:
        self.broker.publish(*self.status_notice(uow))

    def announce(self, uows) -> None:
        self.announced.extend(uows)

    def announcements(self, uows) -> list:
        self.announced.extend(uows)
        return []

    def slot_failed(self) -> None:
        self.failed = True

    def call_abandoned(self) -> None:
        self.failed = True


@pytest.fixture(params=["settled in the commit", "separate acks"])
def chain(harness: Harness, request):
    runs = harness.tmp / "runs"
    entry = harness.register("chain", command=["sh", "-c", f"echo {{uow_id}} >> {runs}"])
    spy = SpyStore(harness.store)
    owner = Owner(
        settings=harness.settings,
        entry=entry,
        store=spy,
        broker=harness.broker,
        clock=harness.clock,
        queue=harness.queue("chain"),
        separate_acks=request.param == "separate acks",
    )
    return owner, spy, runs


def _drain(owner: Owner, wrap: Callable[[Any], Any] | None = None) -> None:
    """Run one slot over what is in its queue with two messages in hand, as a worker would
    (``wrap``: put something around the real consumer)."""
    slot = Slot(owner, 0)
    with _consumer(owner, wrap) as consumer:
        while not owner.stop_event.is_set() and (delivery := consumer.get(0.5)) is not None:
            slot.handle(consumer, delivery)
    assert not owner.failed


@contextlib.contextmanager
def _consumer(owner: Owner, wrap: Callable[[Any], Any] | None = None) -> Iterator[Any]:
    """The slot's consumer: the real one (without settlements for ``separate_acks``), wrapped."""
    with owner.broker.consumer(owner.queue, prefetch=2) as real:
        consumer = Wrapped(real) if owner.separate_acks else real
        yield consumer if wrap is None else wrap(consumer)


@contextlib.contextmanager
def _commits(store: Any) -> Iterator[list[int]]:
    """Counts the SQL store's committed write transactions while entered (the one-element
    list); read transactions commit too, and are not counted."""
    count = [0]

    def committed(conn: sa.Connection) -> None:
        if conn.get_execution_options().get(WRITE_OPTION, False):
            count[0] += 1

    sa.event.listen(store.engine, "commit", committed)
    try:
        yield count
    finally:
        sa.event.remove(store.engine, "commit", committed)


class Wrapped:
    """A real consumer with some of its methods replaced; a consumer without settlements (a
    slot acks after the outcome's commit), whatever the real one is."""

    def __init__(self, real: Any, **replaced: Callable[..., Any]) -> None:
        self._real = real
        self.__dict__.update(replaced)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@SettlingConsumer.register
class WrappedSettling(Wrapped):
    """:class:`Wrapped` of a consumer with settlements (the store queue's), keeping them."""


def wrapped(real: Any, **replaced: Callable[..., Any]) -> Wrapped:
    """``real`` with some methods replaced, of its kind (with settlements or without)."""
    kind = WrappedSettling if isinstance(real, SettlingConsumer) else Wrapped
    return kind(real, **replaced)


def _statuses(harness: Harness) -> list[str]:
    found = []
    with harness.broker.consumer(status_queue(harness.settings.queue_prefix)) as consumer:
        while (delivery := consumer.get(0.2)) is not None:
            found.append(Message.decode(delivery.body).uow_id)
            consumer.ack(delivery)
    return found


def test_the_next_claim_is_written_with_the_outcome_before_it(harness, chain):
    owner, spy, runs = chain
    # given three units of work in the queue
    uows = [harness.submit("chain") for _ in range(3)]
    # when one slot takes them, two in hand at a time
    _drain(owner)
    # then each ran once and is processed, claimed by this worker, with its history in order
    assert runs.read_text().split() == [u.id for u in uows]
    for uow in uows:
        done = harness.uow(uow.id)
        assert done.state is UowState.PROCESSED and done.worker_id == owner.worker_id
        assert harness.history(uow.id) == [("claim", "in_progress"), ("succeed", "processed")]
    # and after the first claim, every claim went in the commit of the outcome before it
    assert spy.commits == [["claim"], ["succeed", "claim"], ["succeed", "claim"], ["succeed"]]
    # and each outcome was announced once, every message acked
    assert sorted(_statuses(harness)) == sorted(u.id for u in uows)
    assert harness.broker.depth(owner.queue) == 0


@pytest.mark.parametrize("chain", ["settled in the commit"], indirect=True)
def test_on_the_store_queue_a_flowing_unit_of_work_costs_one_commit(harness, chain):
    owner, spy, runs = chain
    # given ten units of work in the queue
    uows = [harness.submit("chain") for _ in range(10)]
    # when one slot takes them, two in hand at a time
    with _commits(harness.store) as commits:
        _drain(owner)
    # then all ran and were announced once, nothing is left in the queue
    assert runs.read_text().split() == [u.id for u in uows]
    assert sorted(_statuses(harness)) == sorted(u.id for u in uows)
    assert harness.broker.depth(owner.queue) == 0
    # and the work cost one commit a unit of work (each outcome with its ack, its status
    # message, the next claim and the message taken to refill the prefetch), plus the first
    # claims of a message and of a unit of work
    assert spy.commits[1:-1] == [["succeed", "claim"]] * 9
    assert commits[0] == 2 + 10


def test_a_next_delivery_claimed_elsewhere_is_acked_and_the_outcome_kept(harness, chain):
    owner, spy, runs = chain
    # given two units of work; another worker claims the second after this slot has it in hand
    first, second = harness.submit("chain"), harness.submit("chain")

    def other_worker_claims() -> None:
        change_uow(harness.store, harness.uow(second.id), "claim", clock=harness.clock, actor="o")

    spy.meanwhile = other_worker_claims
    # when the slot finishes the first and tries to claim the second in the same commit
    _drain(owner)
    # then the first is processed, the second stays the other worker's and did not run here
    assert harness.uow(first.id).state is UowState.PROCESSED
    assert harness.history(second.id) == [("claim", "in_progress")]
    assert harness.uow(second.id).worker_id is None
    assert runs.read_text().split() == [first.id]
    assert spy.commits == [["claim"], ["succeed", "claim"]]
    # and its message is acked: nothing is left in the queue
    assert harness.broker.depth(owner.queue) == 0
    assert _statuses(harness) == [first.id]


def test_garbage_next_in_hand_is_dead_lettered_and_the_outcome_kept(harness, chain):
    owner, spy, runs = chain
    # given a unit of work followed by a malformed message
    first = harness.submit("chain")
    harness.publish_raw("chain", b"not json")
    # when
    _drain(owner)
    # then the garbage went to the dead-letter queue and the first finished alone
    assert harness.uow(first.id).state is UowState.PROCESSED
    assert harness.dead_depth("chain") == 1
    assert spy.commits == [["claim"], ["succeed"]]
    assert harness.broker.depth(owner.queue) == 0


def test_a_stopping_worker_takes_nothing_more_in_the_outcome_commit(harness, chain):
    owner, spy, runs = chain
    # given two units of work, and a stop asked as the first run starts (the runner interrupts
    # runs on its own; this one goes on to the end)
    first, second = harness.submit("chain"), harness.submit("chain")

    def entry_then_stop() -> ProcessEntry:
        owner.stop_event.set()
        return owner.entry

    owner.current_entry = entry_then_stop  # type: ignore[method-assign]
    # when
    _drain(owner)
    # then the first is processed alone and the second is left requested, its message back
    assert harness.uow(first.id).state is UowState.PROCESSED
    assert harness.uow(second.id).state is UowState.REQUESTED
    assert spy.commits == [["claim"], ["succeed"]]
    assert harness.broker.depth(owner.queue) == 1


def test_a_stop_just_before_the_commit_hands_the_chained_unit_back(harness, chain):
    owner, spy, runs = chain
    # given two units of work, and the stop coming after the slot looked at the second but
    # before the commit that records the first and claims the second
    first, second = harness.submit("chain"), harness.submit("chain")
    spy.meanwhile = owner.stop_event.set
    # when
    _drain(owner)
    # then the first is processed; the second was claimed, not run, and handed back
    assert harness.uow(first.id).state is UowState.PROCESSED
    assert harness.uow(second.id).state is UowState.REQUESTED
    assert harness.history(second.id) == [("claim", "in_progress"), ("release", "requested")]
    assert runs.read_text().split() == [first.id]
    assert harness.broker.depth(owner.queue) == 1


def test_a_failure_to_look_ahead_does_not_cost_the_outcome(harness, chain):
    owner, spy, runs = chain
    # given two units of work and a broker that fails whenever the slot looks ahead
    first, second = harness.submit("chain"), harness.submit("chain")

    def broken(*_args: Any) -> None:
        raise BrokerUnavailable("the broker went away")

    # when
    _drain(owner, wrap=lambda real: wrapped(real, get_ready=broken))
    # then each outcome is recorded on its own, nothing is chained, both ran once
    assert [harness.uow(u.id).state for u in (first, second)] == [UowState.PROCESSED] * 2
    assert spy.commits == [["claim"], ["succeed"], ["claim"], ["succeed"]]
    assert runs.read_text().split() == [first.id, second.id]


# (a settlement's ack is part of the commit: there is no ack after it to fail)
@pytest.mark.parametrize("chain", ["separate acks"], indirect=True)
def test_a_chained_claim_is_handed_back_when_the_ack_after_the_commit_fails(harness, chain):
    owner, spy, runs = chain
    # given two units of work, and an ack that fails for a reason the slot cannot handle
    first, second = harness.submit("chain"), harness.submit("chain")
    slot = Slot(owner, 0)

    def failing_ack(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("bug in the ack")

    with _consumer(owner, lambda real: wrapped(real, ack=failing_ack)) as consumer:
        delivery = consumer.get(5)
        # when the commit that records the first and claims the second is followed by the error
        with pytest.raises(RuntimeError, match="bug in the ack"):
            slot.handle(consumer, delivery)
    # then the second is not left in progress: it was handed back, and never ran
    assert harness.uow(first.id).state is UowState.PROCESSED
    assert harness.history(second.id) == [("claim", "in_progress"), ("release", "requested")]
    assert runs.read_text().split() == [first.id]
