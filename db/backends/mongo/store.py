"""``MongoStore``: the store interface on MongoDB through plain pymongo 4.

Design (see ``schema.py``): no transactions, since a standalone mongod has none. Every entity with
a state is one document carrying its own history, so each state change is one
``find_one_and_update`` filtered on the expected state; create-once rules are unique indexes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import pymongo
from pymongo.errors import ConfigurationError

from db.backends.base import mask_uri
from db.backends.mongo.boxes import SupervisedMixin, WorkersMixin
from db.backends.mongo.credentials import CredentialsMixin
from db.backends.mongo.errors import translated
from db.backends.mongo.fires import FiresMixin
from db.backends.mongo.history import HistoryMixin
from db.backends.mongo.jobs import JobsMixin
from db.backends.mongo.messages import MessagesMixin
from db.backends.mongo.payloads import PayloadsMixin
from db.backends.mongo.processes import ProcessesMixin
from db.backends.mongo.queue import QueueMixin
from db.backends.mongo.schema import create_indexes, drop_collections
from db.backends.mongo.uows import UowsMixin
from db.errors import InvalidInput
from db.store import QueueStore, Store

if TYPE_CHECKING:
    from pymongo import MongoClient

#: Database used when neither the argument nor the URI path names one.
DEFAULT_DATABASE = "tactus"
#: How long a call waits for a reachable server before raising StoreUnavailable.
SERVER_SELECTION_TIMEOUT_MS = 5000


class MongoStore(
    ProcessesMixin,
    JobsMixin,
    UowsMixin,
    HistoryMixin,
    FiresMixin,
    SupervisedMixin,
    WorkersMixin,
    QueueMixin,
    CredentialsMixin,
    PayloadsMixin,
    MessagesMixin,
    Store,
    QueueStore,
):
    """The store on MongoDB (or any server speaking its wire protocol).

    Args:
        uri: ``mongodb://[user:password@]host[:port]/[database][?options]``; ignored for the
            connection when ``client`` is given.
        client: a ready client (a test's ``mongomock.MongoClient``); the caller closes it. It
            should be ``tz_aware``; instants are normalised to aware UTC on read regardless.
        database: database name; default the URI path, else ``tactus``.

    Raises:
        InvalidInput: neither ``uri`` nor ``client`` given, or a malformed URI (field
            ``store_uri``).
    """

    backend = "mongodb"

    def __init__(
        self,
        uri: str | None = None,
        *,
        client: MongoClient | None = None,
        database: str | None = None,
    ) -> None:
        if client is None and uri is None:
            raise InvalidInput("store_uri", "a MongoDB URI or a client is required")
        self._uri = uri
        self._owns_client = client is None
        if client is None:
            try:
                # Clients connect lazily: an unreachable server surfaces on the first call,
                # as StoreUnavailable after the selection timeout.
                client = pymongo.MongoClient(
                    uri, tz_aware=True, serverSelectionTimeoutMS=SERVER_SELECTION_TIMEOUT_MS
                )
            except (ConfigurationError, ValueError) as exc:  # ValueError: a malformed host:port
                raise InvalidInput("store_uri", f"{mask_uri(uri or '')}: {exc}") from exc
        self._client = client
        self._database = database or _database_in(uri) or DEFAULT_DATABASE
        self._db = client[self._database]

    def describe(self) -> str:
        """The store's address with any password masked."""
        if self._uri is not None:
            return mask_uri(self._uri)
        return f"mongodb (client given by the caller), database {self._database}"

    @translated
    def init_schema(self) -> None:
        """Create every collection index that is missing. Idempotent."""
        create_indexes(self._db, nx=self._server_is_nx())

    @translated
    def reset_schema(self) -> None:
        """Drop the collections Tactus owns and create them again."""
        drop_collections(self._db)
        create_indexes(self._db, nx=self._server_is_nx())

    @translated
    def server_time(self) -> datetime:
        """The server's clock (``hello``'s ``localTime``); this machine's if the server does
        not tell (nx-27017)."""
        if not isinstance(self._client, pymongo.MongoClient):
            return super().server_time()  # a test double (mongomock) has no server
        local = self._client.admin.command("hello").get("localTime")
        if not isinstance(local, datetime):
            return super().server_time()
        return (local if local.tzinfo else local.replace(tzinfo=UTC)).astimezone(UTC)

    @translated
    def ping(self) -> None:
        """Check the server answers; StoreUnavailable if it does not."""
        self._db.command("ping")

    def close(self) -> None:
        """Close the client if this store created it."""
        if self._owns_client:
            self._client.close()


def _database_in(uri: str | None) -> str | None:
    """The database named by the URI's path, if any."""
    if not uri:
        return None
    return unquote(urlsplit(uri).path.lstrip("/")) or None
