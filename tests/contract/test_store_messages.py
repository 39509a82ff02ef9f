"""The store contract for messages of units of work (SPEC section 12), on every backend: in the
order emitted, numbered, capped per unit of work with the oldest kept."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from db import open_store
from db.errors import InvalidInput
from tests.contract.store_helpers import T0, _race_threads, stamped

UOW = "0123456789abcdef01234567"


def _texts(page) -> list[str]:
    return [m.text for m in page.items]


def test_messages_arrive_in_order_with_seq_attempt_and_time(store):
    # given
    second = T0 + timedelta(milliseconds=250)
    assert store.append_messages(UOW, 1, [(T0, "one"), (second, "two")], limit=100) == 2
    # when a later attempt emits more
    later = T0 + timedelta(seconds=3)
    assert store.append_messages(UOW, 2, stamped(later, "three", "four", "five"), limit=100) == 3
    # then
    page = store.list_messages(UOW)
    assert _texts(page) == ["one", "two", "three", "four", "five"]
    assert [m.seq for m in page.items] == [1, 2, 3, 4, 5]
    assert [m.attempt for m in page.items] == [1, 1, 2, 2, 2]
    assert [m.at for m in page.items] == [T0, second, later, later, later]
    assert page.items[0].uow_id == UOW
    assert (page.dropped, page.more) == (0, False)


def test_messages_page_and_follow_after_a_seq(store):
    store.append_messages(UOW, 1, stamped(T0, *(f"m{i}" for i in range(1, 8))), limit=100)
    first = store.list_messages(UOW, limit=3)
    assert _texts(first) == ["m1", "m2", "m3"] and first.more
    rest = store.list_messages(UOW, after=first.items[-1].seq, limit=10)
    assert _texts(rest) == ["m4", "m5", "m6", "m7"] and not rest.more
    assert store.list_messages(UOW, after=7).items == []
    tail = store.list_messages(UOW, limit=2, newest=True)
    assert _texts(tail) == ["m6", "m7"]


def test_messages_of_units_of_work_are_apart(store):
    store.append_messages(UOW, 1, stamped(T0, "mine"), limit=10)
    store.append_messages("other", 1, stamped(T0, "theirs"), limit=10)
    assert _texts(store.list_messages(UOW)) == ["mine"]
    assert [m.seq for m in store.list_messages("other").items] == [1]
    assert store.list_messages("unknown").items == []


def test_messages_cap_keeps_the_oldest_and_reports_the_rest(store):
    # given a cap of 5
    assert store.append_messages(UOW, 1, stamped(T0, "a", "b", "c"), limit=5) == 3
    # when 4 more come, then 2 more
    assert store.append_messages(UOW, 1, stamped(T0, "d", "e", "f", "g"), limit=5) == 2
    assert store.append_messages(UOW, 2, stamped(T0, "h", "i"), limit=5) == 0
    # then the first five are kept and four reported dropped
    page = store.list_messages(UOW)
    assert _texts(page) == ["a", "b", "c", "d", "e"]
    assert page.dropped == 4
    assert store.list_messages(UOW, newest=True, limit=1).dropped == 4


def test_messages_bad_input_is_refused(store):
    with pytest.raises(InvalidInput):
        store.append_messages(UOW, 1, stamped(datetime(2026, 1, 5, 13, 0), "x"), limit=5)  # noqa: DTZ001
    with pytest.raises(InvalidInput):
        store.append_messages(UOW, 1, stamped(T0, "x"), limit=0)
    with pytest.raises(InvalidInput):
        store.list_messages(UOW, after=-1)
    with pytest.raises(InvalidInput):
        store.list_messages(UOW, limit=0)
    assert store.append_messages(UOW, 1, [], limit=5) == 0
    assert store.list_messages(UOW).items == []


def test_race_threads_appenders_never_share_a_seq(concurrent_store_uri):
    # given four writers of the same unit of work (a lost worker and its successor, say)
    stores = [open_store(concurrent_store_uri) for _ in range(4)]

    # when each appends ten messages, one at a time
    def append(i: int) -> int:
        return sum(
            stores[i].append_messages(UOW, 1, stamped(T0, f"w{i}-{n}"), limit=1000)
            for n in range(10)
        )

    results = _race_threads(4, append)
    # then every message is stored once, numbered 1..40, each writer's in its order
    assert results == [10, 10, 10, 10], results
    page = stores[0].list_messages(UOW, limit=100)
    assert [m.seq for m in page.items] == list(range(1, 41))
    for i in range(4):
        mine = [m.text for m in page.items if m.text.startswith(f"w{i}-")]
        assert mine == [f"w{i}-{n}" for n in range(10)]
    for s in stores:
        s.close()
