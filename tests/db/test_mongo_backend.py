"""Behaviour only the MongoDB store has (the shared rules are in tests/contract/test_store_*.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import mongomock
import pymongo
import pytest

from db import open_store
from db.backends.mongo import MongoStore
from db.backends.mongo.documents import HISTORY_LIMIT
from db.errors import InvalidInput, NotFound, StoreUnavailable
from db.models import FireRecord
from db.states import FireOutcome
from tests.contract.store_helpers import T0, event, make_job, make_record


@pytest.fixture
def client() -> mongomock.MongoClient:
    return mongomock.MongoClient(tz_aware=True)


@pytest.fixture
def store(client) -> MongoStore:
    s = MongoStore(client=client, database="tactus_test")
    s.init_schema()
    return s


def test_mongo_store_opened_by_uri_names_database_and_masks_password():
    store = open_store("mongodb://alice:s3cret@127.0.0.1:1/jobs_db?authSource=admin")
    try:
        assert isinstance(store, MongoStore) and store.backend == "mongodb"
        assert store.describe() == "mongodb://alice:***@127.0.0.1:1/jobs_db?authSource=admin"
        assert store._db.name == "jobs_db"
    finally:
        store.close()


@pytest.mark.parametrize(
    ("uri", "database", "expected"),
    [
        ("mongodb://127.0.0.1:1/", None, "tactus"),
        ("mongodb://127.0.0.1:1", None, "tactus"),
        ("mongodb://127.0.0.1:1/from_uri", None, "from_uri"),
        ("mongodb://127.0.0.1:1/from_uri", "from_argument", "from_argument"),
    ],
)
def test_mongo_store_database_name(uri, database, expected):
    with MongoStore(uri, database=database) as store:
        assert store._db.name == expected


def test_mongo_store_refuses_bad_uri_without_leaking_password():
    with pytest.raises(InvalidInput) as err:
        MongoStore("mongodb://alice:s3cret@host:notaport/")
    assert err.value.field == "store_uri" and "s3cret" not in str(err.value)


def test_mongo_store_unreachable_server_is_store_unavailable():
    # given a client that gives up quickly, and a URI (for messages) carrying a password
    unreachable = pymongo.MongoClient("mongodb://127.0.0.1:1/", serverSelectionTimeoutMS=100)
    store = MongoStore("mongodb://alice:s3cret@127.0.0.1:1/db", client=unreachable)
    # when / then
    with pytest.raises(StoreUnavailable) as err:
        store.get_job("p", "2026010513")
    assert "s3cret" not in str(err.value) and "***" in str(err.value)
    assert isinstance(err.value.__cause__, pymongo.errors.ConnectionFailure)
    unreachable.close()


def test_mongo_store_closes_only_its_own_client(client, store):
    store.close()
    # the caller's client still works
    assert client["tactus_test"]["jobs"].count_documents({}) == 0


def test_mongo_history_is_capped(store):
    # given
    store.insert_process(make_record("p"))
    # when
    for i in range(HISTORY_LIMIT + 5):
        store.append_event(event("process", "p", f"e{i}", None, None, at=T0))
    # then the oldest events were dropped
    kept = store.history("process", "p", limit=1000)
    assert len(kept) == HISTORY_LIMIT
    assert kept[0].trigger == "e5" and kept[-1].trigger == f"e{HISTORY_LIMIT + 4}"


def test_mongo_append_event_needs_the_entity(store):
    with pytest.raises(NotFound):
        store.append_event(event("job", "nope/2026010513", "edit", None, None))
    with pytest.raises(InvalidInput) as err:
        store.history("box", "b1")
    assert err.value.field == "entity"


def test_mongo_ordinary_reads_leave_history_out(client, store):
    job = store.create_job(make_job())
    store.append_event(event("job", job.key, "edit", None, None))
    # the raw document holds the history; get_job did not need it
    assert len(client["tactus_test"]["jobs"].find_one({"_id": job.id})["history"]) == 1
    assert store.get_job(job.process, job.timeperiod) == job


def test_mongo_instants_stored_as_utc_milliseconds(store):
    # given an instant in another zone, with microseconds
    at = datetime(2026, 1, 5, 16, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    store.record_fire(
        FireRecord(process="cron", scheduled_at=at, outcome=FireOutcome.FIRED, recorded_at=at)
    )
    # when
    got = store.last_fire("cron").scheduled_at
    # then it comes back aware, in UTC, truncated to the millisecond
    assert got == datetime(2026, 1, 5, 14, 0, 0, 123000, tzinfo=UTC) and got.tzinfo is UTC


def test_mongo_naive_instant_refused(store):
    with pytest.raises(InvalidInput) as err:
        store.update_supervised_stats("b1", "p", {}, datetime(2026, 1, 5, 13, 0))
    assert err.value.field == "at"
