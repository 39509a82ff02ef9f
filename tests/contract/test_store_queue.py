"""The store contract, the embedded queue (``db.store.QueueStore``): the same tests on every
backend; its races run on the backends that are atomic across threads and OS processes."""

from __future__ import annotations

import multiprocessing
from datetime import datetime, timedelta

import pytest

from db import open_store
from db.errors import InvalidInput, StateConflict
from db.models import QueueSettlement, UnitOfWork
from db.states import UowState
from tests.contract.store_helpers import T0, _claimed_uow, _race_threads, _step, make_uow

VISIBILITY = timedelta(seconds=30)


def _claim(store, consumer: str = "c1", *, at: datetime = T0, queue: str = "q", **kw):
    return store.queue_claim(
        queue, consumer, now=at, visibility=kw.pop("visibility", VISIBILITY), **kw
    )


def test_queue_put_returns_ids_in_publish_order(store):
    # given one batch and then single messages published right after each other
    batch = store.queue_put("q", [b"a", b"b", b"c"], available_at=T0)
    singles = [store.queue_put("q", [bytes([i])], available_at=T0)[0] for i in range(20)]
    # then ids sort in publish order, even within one millisecond
    ids = batch + singles
    assert len(set(ids)) == 23 and ids == sorted(ids)
    assert store.queue_put("q", [], available_at=T0) == []


def test_queue_claim_takes_oldest_first_for_one_consumer(store):
    # given
    ids = store.queue_put("q", [b"m0", b"m1", b"m2", b"m3", b"m4"], available_at=T0)
    store.queue_put("other", [b"x"], available_at=T0)
    # when
    first = _claim(store, limit=3)
    second = _claim(store, "c2", limit=3)
    # then
    assert [m.id for m in first] == ids[:3] and [m.body for m in first] == [b"m0", b"m1", b"m2"]
    assert [m.id for m in second] == ids[3:]
    message = first[0]
    assert message.queue == "q" and message.deliveries == 1 and message.claimed_by == "c1"
    assert message.available_at == T0 and message.claimed_until == T0 + VISIBILITY
    assert message.created_at.tzinfo is not None
    assert _claim(store) == []


def test_queue_body_keeps_any_bytes(store):
    body = bytes(range(256)) * 400  # 100 KiB, more than a MySQL BLOB holds
    store.queue_put("q", [body, b""], available_at=T0)
    assert [m.body for m in _claim(store, limit=2)] == [body, b""]


def test_queue_delayed_message_invisible_until_due(store):
    # given
    store.queue_put("q", [b"later"], available_at=T0 + timedelta(seconds=10))
    # when / then (boundaries a second apart: nx-27017 compares instants to the second)
    assert _claim(store, at=T0 + timedelta(seconds=9)) == []
    assert [m.body for m in _claim(store, at=T0 + timedelta(seconds=10))] == [b"later"]


def test_queue_expired_claim_is_delivered_again(store):
    # given c1 claimed the message and went quiet
    [message] = store.queue_put("q", [b"m"], available_at=T0)
    _claim(store, "c1")
    # when the visibility timeout passes
    assert _claim(store, "c2", at=T0 + VISIBILITY - timedelta(seconds=1)) == []
    [again] = _claim(store, "c2", at=T0 + VISIBILITY)
    # then c2 holds it, counted as a second delivery, and c1's claim is lost
    assert again.id == message and again.deliveries == 2 and again.claimed_by == "c2"
    assert store.queue_ack(message, "c1") is False
    assert store.queue_ack(message, "c2") is True


def test_queue_ack_only_by_the_claim_holder(store):
    # given
    [message] = store.queue_put("q", [b"m"], available_at=T0)
    _claim(store, "c1")
    # when / then
    assert store.queue_ack(message, "c2") is False
    assert store.queue_depth("q", now=T0) == {"ready": 0, "delayed": 0, "claimed": 1}
    assert store.queue_ack(message, "c1") is True
    assert store.queue_ack(message, "c1") is False
    assert store.queue_ack("nosuchmessage", "c1") is False
    assert store.queue_depth("q", now=T0) == {"ready": 0, "delayed": 0, "claimed": 0}


def test_queue_ack_puts_messages_with_it(store):
    # given a claimed message
    [message] = store.queue_put("q", [b"m"], available_at=T0)
    _claim(store, "c1")
    # when its holder acks it with two messages for other queues
    acked = store.queue_ack(
        message, "c1", then_put=[("status", b"s1"), ("other", b"o1")], available_at=T0
    )
    # then the message is gone and the others are ready to claim
    assert acked is True
    assert store.queue_depth("q", now=T0)["claimed"] == 0
    assert [m.body for m in _claim(store, "c2", queue="status")] == [b"s1"]
    assert [m.body for m in _claim(store, "c2", queue="other")] == [b"o1"]
    # and a lost claim still puts them (a status is a hint; the truth is in the store)
    assert store.queue_ack(message, "c1", then_put=[("status", b"s2")], available_at=T0) is False
    assert [m.body for m in _claim(store, "c3", queue="status")] == [b"s2"]
    with pytest.raises(ValueError, match="available_at"):
        store.queue_ack(message, "c1", then_put=[("status", b"s3")])


def test_queue_ack_many_deletes_only_what_the_consumer_holds(store):
    # given three messages claimed by c1 and one by c2
    ids = store.queue_put("q", [b"a", b"b", b"c", b"d"], available_at=T0)
    _claim(store, "c1", limit=3)
    _claim(store, "c2")
    # when c1 acks its three, c2's and an unknown id
    acked = store.queue_ack_many([*ids, "nosuchmessage", ids[0]], "c1")
    # then its three are gone and c2's claim stands
    assert acked == 3
    assert store.queue_depth("q", now=T0) == {"ready": 0, "delayed": 0, "claimed": 1}
    assert store.queue_ack_many([], "c1") == 0
    assert store.queue_ack(ids[3], "c2") is True


def _settlement(consumer: str = "c1", **fields) -> QueueSettlement:
    return QueueSettlement(consumer=consumer, now=T0, visibility=VISIBILITY, **fields)


def test_settle_uows_writes_the_steps_and_the_queue_work_together(store):
    # given a unit of work in progress and a requested one, whose messages c1 holds, and two
    # more messages waiting
    running = _claimed_uow(store, start="2026010510")
    waiting = store.create_uow(make_uow(start="2026010511"))
    first, second, third, fourth = store.queue_put("q", [b"1", b"2", b"3", b"4"], available_at=T0)
    _claim(store, "c1", limit=2)
    at = T0 + timedelta(seconds=9)
    # when c1 finishes the first, claims the second unit of work, acks the first message, puts
    # a status message and claims one message more, all at once
    done, settled = store.settle_uows(
        [
            _step(running, UowState.IN_PROGRESS, UowState.PROCESSED, "succeed", at, exit_code=0),
            _step(waiting, UowState.REQUESTED, UowState.IN_PROGRESS, "claim", at, worker_id="c1"),
        ],
        _settlement(ack=(first,), put=(("status", b"s1"),), claim_queue="q", claim_limit=1),
    )
    # then both steps are stored with their events
    assert [type(result) for result in done] == [UnitOfWork, UnitOfWork]
    assert store.get_uow(running.id).state is UowState.PROCESSED
    assert store.get_uow(waiting.id).worker_id == "c1"
    assert [e.trigger for e in store.history("uow", running.id)] == ["claim", "succeed"]
    # and the first message is gone, the third is c1's, the fourth waits, the status is ready
    assert settled.acked == 1
    assert [(m.id, m.body, m.claimed_by) for m in settled.claimed] == [(third, b"3", "c1")]
    assert settled.claimed[0].claimed_until == T0 + VISIBILITY
    assert store.queue_depth("q", now=T0) == {"ready": 1, "delayed": 0, "claimed": 2}
    assert [m.id for m in _claim(store, "c2")] == [fourth]
    assert store.queue_ack(second, "c1") and store.queue_ack(third, "c1")
    assert [m.body for m in _claim(store, "c2", queue="status")] == [b"s1"]


def test_settle_uows_does_the_queue_work_when_the_steps_are_refused(store):
    # given a unit of work claimed by another worker, and a message whose claim c1 lost to c2
    taken = _claimed_uow(store)
    [message] = store.queue_put("q", [b"m"], available_at=T0)
    _claim(store, "c2")
    # when c1 settles a claim of it, and when it settles with no step at all
    done, settled = store.settle_uows(
        [_step(taken, UowState.REQUESTED, UowState.IN_PROGRESS, "claim")],
        _settlement(ack=(message,), put=(("status", b"s1"),), claim_queue="q", claim_limit=2),
    )
    nothing, put_only = store.settle_uows([], _settlement(put=(("status", b"s2"),)))
    # then the step is refused, the lost claim is not acked, and the status messages are put
    assert [type(result) for result in done] == [StateConflict]
    assert (settled.acked, settled.claimed) == (0, ())
    assert (nothing, put_only.acked, put_only.claimed) == ([], 0, ())
    assert store.queue_depth("q", now=T0)["claimed"] == 1
    assert [m.body for m in _claim(store, "c3", queue="status", limit=5)] == [b"s1", b"s2"]


def test_settle_uows_with_a_bad_change_writes_nothing(store):
    # given a unit of work and a message c1 holds
    uow = store.create_uow(make_uow())
    [message] = store.queue_put("q", [b"m"], available_at=T0)
    _claim(store, "c1")
    # when a step would change what no step may change
    with pytest.raises(InvalidInput):
        store.settle_uows(
            [_step(uow, UowState.REQUESTED, UowState.IN_PROGRESS, "claim", process="evil")],
            _settlement(ack=(message,), put=(("status", b"s1"),)),
        )
    # then neither the unit of work nor the queues changed
    assert store.get_uow(uow.id).state is UowState.REQUESTED
    assert store.queue_depth("q", now=T0)["claimed"] == 1
    assert store.queue_depth("status", now=T0)["ready"] == 0


def test_queue_ack_after_expiry_while_nobody_took_it(store):
    # given c1's claim expired, and no other consumer claimed the message since
    [message] = store.queue_put("q", [b"m"], available_at=T0)
    _claim(store, "c1")
    assert store.queue_depth("q", now=T0 + VISIBILITY)["ready"] == 1
    # when / then c1 still holds it: the late ack counts
    assert store.queue_ack(message, "c1") is True
    assert _claim(store, "c2", at=T0 + VISIBILITY) == []


def test_queue_release_with_delay(store):
    # given
    [message] = store.queue_put("q", [b"m"], available_at=T0)
    _claim(store, "c1")
    # when
    later = T0 + timedelta(seconds=10)
    assert store.queue_release(message, "c2", available_at=T0) is False
    assert store.queue_release(message, "c1", available_at=later) is True
    # then
    assert store.queue_depth("q", now=T0) == {"ready": 0, "delayed": 1, "claimed": 0}
    assert _claim(store, "c2") == []
    [again] = _claim(store, "c2", at=later)
    assert again.id == message and again.deliveries == 2 and again.available_at == later
    assert store.queue_release(message, "c1", available_at=T0) is False


def test_queue_release_to_another_queue(store):
    # given
    [message] = store.queue_put("q", [b"bad"], available_at=T0)
    _claim(store, "c1")
    # when the consumer dead-letters it
    assert store.queue_release(message, "c1", available_at=T0, to_queue="q.dead") is True
    # then
    assert _claim(store, "c2") == []
    [dead] = _claim(store, "c2", queue="q.dead")
    assert (dead.id, dead.queue, dead.body) == (message, "q.dead", b"bad")
    assert store.queue_depth("q", now=T0)["ready"] == 0


def test_queue_extend_keeps_the_claim(store):
    # given
    [message] = store.queue_put("q", [b"m"], available_at=T0)
    _claim(store, "c1", visibility=timedelta(seconds=10))
    # when
    assert store.queue_extend(message, "c2", until=T0 + timedelta(seconds=60)) is False
    assert store.queue_extend(message, "c1", until=T0 + timedelta(seconds=60)) is True
    # then nobody else gets it until the new expiry
    assert _claim(store, "c2", at=T0 + timedelta(seconds=59)) == []
    assert [m.id for m in _claim(store, "c2", at=T0 + timedelta(seconds=60))] == [message]
    assert store.queue_extend(message, "c1", until=T0 + timedelta(seconds=90)) is False


def test_queue_depth_counts_ready_delayed_and_claimed(store):
    # given 3 ready, 2 delayed; then one claimed, one claimed and expired
    store.queue_put("q", [b"r1", b"r2", b"r3"], available_at=T0)
    store.queue_put("q", [b"d1", b"d2"], available_at=T0 + timedelta(minutes=5))
    store.queue_put("other", [b"x"], available_at=T0)
    _claim(store, "c1", visibility=timedelta(seconds=5))
    _claim(store, "c2", visibility=timedelta(minutes=1))
    # when / then
    assert store.queue_depth("q", now=T0) == {"ready": 1, "delayed": 2, "claimed": 2}
    at = T0 + timedelta(seconds=5)
    assert store.queue_depth("q", now=at) == {"ready": 2, "delayed": 2, "claimed": 1}
    at = T0 + timedelta(minutes=5)
    assert store.queue_depth("q", now=at) == {"ready": 5, "delayed": 0, "claimed": 0}
    assert store.queue_depth("empty", now=T0) == {"ready": 0, "delayed": 0, "claimed": 0}
    # and several queues in one call give what each would
    names = ["q", "other", "empty", "q"]
    for when in (T0, T0 + timedelta(seconds=5)):
        assert store.queue_depths(names, now=when) == {
            name: store.queue_depth(name, now=when) for name in ("q", "other", "empty")
        }
    assert store.queue_depths([], now=T0) == {}


def test_queue_next_available_is_the_earliest_time_an_unclaimed_message_comes(store):
    # given an empty queue, then messages due in 10 s and in 20 s, and one in another queue
    assert store.queue_next_available("q", now=T0) is None
    store.queue_put("q", [b"later"], available_at=T0 + timedelta(seconds=20))
    store.queue_put("q", [b"sooner"], available_at=T0 + timedelta(seconds=10))
    store.queue_put("other", [b"x"], available_at=T0 + timedelta(seconds=1))
    # then the earliest of the queue's own, until it is claimed
    assert store.queue_next_available("q", now=T0) == T0 + timedelta(seconds=10)
    at = T0 + timedelta(seconds=10)
    [sooner] = _claim(store, at=at)
    assert store.queue_next_available("q", now=at) == T0 + timedelta(seconds=20)
    # and a claim that expires counts again, as available since it was published
    expired = at + VISIBILITY
    assert store.queue_next_available("q", now=expired) == T0 + timedelta(seconds=10)
    # and a message available already gives a time at or before now
    assert store.queue_release(sooner.id, "c1", available_at=T0) is True
    assert store.queue_next_available("q", now=at) == T0


def test_queue_purge_drops_claimed_and_unclaimed(store):
    # given
    store.queue_put("q", [b"1", b"2", b"3"], available_at=T0)
    store.queue_put("q", [b"later"], available_at=T0 + timedelta(hours=1))
    [claimed] = _claim(store)
    store.queue_put("other", [b"x"], available_at=T0)
    # when / then
    assert store.queue_purge("q") == 4
    assert store.queue_purge("q") == 0
    assert store.queue_ack(claimed.id, "c1") is False
    assert store.queue_depth("other", now=T0)["ready"] == 1


def test_queue_refuses_bad_arguments(store):
    store.queue_put("q", [b"m"], available_at=T0)
    naive = datetime(2026, 1, 5, 13, 0)
    with pytest.raises(InvalidInput) as err:
        store.queue_put("q", [b"m"], available_at=naive)
    assert err.value.field == "available_at"
    with pytest.raises(InvalidInput) as err:
        _claim(store, at=naive)
    assert err.value.field == "now"
    with pytest.raises(InvalidInput) as err:
        _claim(store, limit=0)
    assert err.value.field == "limit"
    with pytest.raises(InvalidInput) as err:
        _claim(store, visibility=timedelta(0))
    assert err.value.field == "visibility"
    assert store.queue_depth("q", now=T0)["ready"] == 1


#: Messages the queue races hand out; every one must be delivered exactly once.
RACE_MESSAGES = 200


def _drain(store, consumer: str, limit: int) -> list[str]:
    """Claim until the queue is empty; the ids this consumer got."""
    got: list[str] = []
    while batch := store.queue_claim(
        "q", consumer, now=T0, visibility=timedelta(minutes=10), limit=limit
    ):
        got.extend(m.id for m in batch)
    return got


def test_race_threads_queue_claim_delivers_each_message_once(concurrent_store_uri):
    # given
    setup = open_store(concurrent_store_uri)
    ids = setup.queue_put("q", [str(i).encode() for i in range(RACE_MESSAGES)], available_at=T0)
    stores = [open_store(concurrent_store_uri) for _ in range(6)]
    # when six threads drain the queue at once, some a message at a time, some in batches
    results = _race_threads(6, lambda i: _drain(stores[i], f"t{i}", 1 + i % 3))
    # then
    assert all(isinstance(r, list) for r in results), results
    got = [message_id for r in results for message_id in r]
    assert len(got) == RACE_MESSAGES and sorted(got) == sorted(ids)
    assert setup.queue_depth("q", now=T0) == {"ready": 0, "delayed": 0, "claimed": RACE_MESSAGES}
    for s in [setup, *stores]:
        s.close()


def _queue_racer(uri: str, barrier, results, index: int) -> None:
    store = open_store(uri)
    try:
        barrier.wait(30)
        results[index] = _drain(store, f"p{index}", 1 + index % 2)
    except Exception as exc:  # noqa: BLE001 - reported back to the parent test
        results[index] = f"error: {exc!r}"
    finally:
        store.close()


@pytest.mark.slow
def test_race_processes_queue_claim_delivers_each_message_once(concurrent_store_uri):
    # given
    setup = open_store(concurrent_store_uri)
    ids = setup.queue_put("q", [str(i).encode() for i in range(RACE_MESSAGES)], available_at=T0)
    ctx = multiprocessing.get_context("spawn")
    n = 4
    barrier = ctx.Barrier(n)
    manager = ctx.Manager()
    results = manager.list([None] * n)
    # when four OS processes drain the queue at once
    procs = [
        ctx.Process(target=_queue_racer, args=(concurrent_store_uri, barrier, results, i))
        for i in range(n)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(90)
    # then
    outcome = list(results)
    manager.shutdown()
    assert all(isinstance(r, list) for r in outcome), outcome
    got = [message_id for r in outcome for message_id in r]
    assert len(got) == RACE_MESSAGES and sorted(got) == sorted(ids)
    setup.close()
