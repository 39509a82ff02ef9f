"""Shared fixtures: the clock, and a store per backend for the contract suite."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from db.clock import FakeClock
from tests import servers

#: Backends of the store contract suite, in the order they are reported.
STORE_BACKENDS = ["sqlite", "postgresql", "mariadb", "mongomock", "mongodb"]
#: Backends whose atomic operations hold across threads and OS processes.
CONCURRENT_BACKENDS = ["sqlite", "postgresql", "mariadb", "mongodb"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 1, 5, 13, 0, tzinfo=UTC))


@pytest.fixture(scope="session")
def nx_server():
    server = servers.NxServer()
    server.start()
    yield server
    server.stop()


def _sql_server(name: str) -> servers.SqlServer:
    return servers.POSTGRES if name == "postgresql" else servers.MARIADB


@contextlib.contextmanager
def fresh_store_uri(backend: str, tmp_path, nx_server) -> Iterator[str]:
    """A fresh, empty store URI on ``backend`` (one reachable from other OS processes); the
    database is dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'tactus.db'}"
    elif backend in ("postgresql", "mariadb"):
        server = _sql_server(backend)
        problem = server.available()
        if problem:
            servers.unavailable(problem)
        database, uri = server.create_database()
        try:
            yield uri
        finally:
            server.drop_database(database)
    elif backend == "mongodb":
        if nx_server.problem:
            servers.unavailable(nx_server.problem)
        database = servers.unique_name()
        yield f"{nx_server.uri}{database}"
        import pymongo

        client = pymongo.MongoClient(nx_server.uri)
        client.drop_database(database)
        client.close()
    else:  # pragma: no cover - a typo in a parametrize list
        raise ValueError(backend)


def _open(backend: str, uri: str | None):
    from db import open_store

    if backend == "mongomock":
        import mongomock

        from db.backends.mongo import MongoStore

        return MongoStore(client=mongomock.MongoClient(tz_aware=True), database="tactus_test")
    return open_store(uri)


@pytest.fixture(params=STORE_BACKENDS)
def store(request, tmp_path, nx_server):
    """An initialised, empty store on each backend; closed afterwards with no leaked
    connection."""
    backend = request.param
    with contextlib.ExitStack() as stack:
        uri = None
        if backend != "mongomock":
            uri = stack.enter_context(fresh_store_uri(backend, tmp_path, nx_server))
        s = _open(backend, uri)
        try:
            s.init_schema()
            yield s
            # before close(): disposing the engine replaces its pool, which would hide a leak
            engine = getattr(s, "engine", None)
            if engine is not None:
                assert engine.pool.checkedout() == 0, "a connection was not returned to the pool"
        finally:
            s.close()


@pytest.fixture(params=CONCURRENT_BACKENDS)
def concurrent_store_uri(request, tmp_path, nx_server):
    """A store URI, schema created, for backends that are atomic across threads and processes."""
    with fresh_store_uri(request.param, tmp_path, nx_server) as uri:
        s = _open(request.param, uri)
        s.init_schema()
        s.close()
        yield uri
