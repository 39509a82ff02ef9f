"""The embedded queue in the SQL store (``broker_uri = store``): one row per message.

A message is deliverable when ``available_at`` has come and it is unclaimed or its claim
(``claimed_until``) has expired. Claiming is the one operation that must be race-free, across
threads and OS processes:

- SQLite: write transactions begin ``IMMEDIATE`` (``engine.prepare_sqlite``), so the claim holds
  the database's write lock from its first statement; selecting the oldest deliverable rows and
  marking them claimed cannot interleave with another writer. An empty poll looks first in a
  plain read transaction, so idle consumers never queue up for the write lock.
- PostgreSQL and MariaDB/MySQL: ``SELECT ... ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED`` locks
  the rows it returns and passes over rows another claim holds locked, so concurrent consumers
  take disjoint rows without waiting for each other; the ``UPDATE`` in the same transaction marks
  them. A row claimed and committed meanwhile is re-read before it is returned (PostgreSQL
  re-checks the WHERE clause on the newest version; InnoDB locking reads see the latest commit)
  and no longer qualifies.

Ack, release and extend are compare-and-set on ``claimed_by``: only the claim holder's call
matches, and a claim that expired but was not yet taken by anyone else still counts as held.
"""

from __future__ import annotations

import dataclasses
import functools
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from db.backends.base import check_limit
from db.backends.sql import rows
from db.backends.sql.core import SqlCore
from db.backends.sql.schema import queue_messages
from db.errors import InvalidInput
from db.ids import new_ids
from db.models import QueuedMessage, QueueSettled

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from db.models import QueueSettlement

_c = queue_messages.c
#: Queue names per grouped depth read (bound parameters stay far below every driver's limit).
_DEPTHS_CHUNK = 500
_FIELDS = tuple(field.name for field in dataclasses.fields(QueuedMessage))

_INSERT = sa.insert(queue_messages)
_ACK = sa.delete(queue_messages).where(
    _c.id == sa.bindparam("k_id", type_=_c.id.type),
    _c.claimed_by == sa.bindparam("k_consumer", type_=_c.claimed_by.type),
)
_ACK_MANY = sa.delete(queue_messages).where(
    _c.id.in_(sa.bindparam("k_ids", expanding=True)),
    _c.claimed_by == sa.bindparam("k_consumer", type_=_c.claimed_by.type),
)
_EXTEND = (
    sa.update(queue_messages)
    .where(
        _c.id == sa.bindparam("k_id", type_=_c.id.type),
        _c.claimed_by == sa.bindparam("k_consumer", type_=_c.claimed_by.type),
    )
    .values(claimed_until=sa.bindparam("v_until", type_=_c.claimed_until.type))
)
_MARK_CLAIMED = (
    sa.update(queue_messages)
    .where(_c.id.in_(sa.bindparam("k_ids", expanding=True)))
    .values(
        claimed_by=sa.bindparam("v_consumer", type_=_c.claimed_by.type),
        claimed_until=sa.bindparam("v_until", type_=_c.claimed_until.type),
        deliveries=_c.deliveries + 1,
    )
)
_PURGE = sa.delete(queue_messages).where(_c.queue == sa.bindparam("k_queue", type_=_c.queue.type))


class QueueMixin(SqlCore):
    """The embedded queue (:class:`~db.store.QueueStore`) on SQL."""

    def queue_put(
        self, queue: str, bodies: Sequence[bytes], *, available_at: datetime
    ) -> list[str]:
        """Insert the messages in one transaction; their ids sort in publish order."""
        if not bodies:
            return []
        ids, batch = message_rows([(queue, body) for body in bodies], available_at)
        self._write(lambda conn: conn.execute(_INSERT, batch), entity="queue message", key=queue)
        return ids

    def queue_claim(
        self,
        queue: str,
        consumer: str,
        *,
        now: datetime,
        visibility: timedelta,
        limit: int = 1,
    ) -> list[QueuedMessage]:
        """Claim up to ``limit`` deliverable messages, oldest id first (see the module doc)."""
        limit = check_limit(limit)
        _check_visibility(visibility)
        if self.backend == "sqlite":
            peek = _deliverable_ids(False)
            params = {"k_queue": queue, "k_now": rows.instant(now, "now"), "limit": 1}
            if self._read(lambda conn: conn.execute(peek, params).first()) is None:
                return []
        lock = self.backend != "sqlite"
        return self._write(
            lambda conn: _claim_in(conn, queue, consumer, now, visibility, limit, lock=lock)
        )

    def queue_ack(
        self,
        message_id: str,
        consumer: str,
        *,
        then_put: Sequence[tuple[str, bytes]] = (),
        available_at: datetime | None = None,
    ) -> bool:
        """Delete the message if ``consumer`` holds its claim; insert ``then_put`` in the same
        transaction."""
        if then_put and available_at is None:
            raise ValueError("then_put needs available_at")
        batch = message_rows(then_put, available_at)[1] if then_put else []

        def work(conn: sa.Connection) -> bool:
            put_in(conn, batch)
            return _ack_in(conn, [message_id], consumer) == 1

        return self._write(work, entity="queue message", key=message_id)

    def queue_ack_many(self, message_ids: Sequence[str], consumer: str) -> int:
        """Delete, in one transaction, the messages whose claim ``consumer`` holds."""
        ids = list(dict.fromkeys(message_ids))
        if not ids:
            return 0
        return self._write(lambda conn: _ack_in(conn, ids, consumer))

    def queue_settlement_writer(
        self, settlement: QueueSettlement
    ) -> Callable[[sa.Connection], QueueSettled]:
        """The statements of ``settlement``, for a write transaction of the caller's
        (:meth:`db.store.QueueStore.settle_uows`). Bad values are refused now, before any write."""
        claim = settlement.claim_queue is not None and settlement.claim_limit > 0
        limit = check_limit(settlement.claim_limit) if claim else 0
        _check_visibility(settlement.visibility)
        batch = message_rows(settlement.put, settlement.now)[1] if settlement.put else []
        ids = list(dict.fromkeys(settlement.ack))
        # SQLite holds the write lock already; the others lock the rows they claim.
        lock = self.backend != "sqlite"

        def write(conn: sa.Connection) -> QueueSettled:
            put_in(conn, batch)
            acked = _ack_in(conn, ids, settlement.consumer) if ids else 0
            claimed: list[QueuedMessage] = []
            if claim:
                assert settlement.claim_queue is not None
                claimed = _claim_in(
                    conn,
                    settlement.claim_queue,
                    settlement.consumer,
                    settlement.now,
                    settlement.visibility,
                    limit,
                    lock=lock,
                )
            return QueueSettled(acked=acked, claimed=tuple(claimed))

        return write

    def queue_release(
        self, message_id: str, consumer: str, *, available_at: datetime, to_queue: str | None = None
    ) -> bool:
        """Unclaim the message (into ``to_queue`` if given) if ``consumer`` holds its claim."""
        params = {
            "k_id": message_id,
            "k_consumer": consumer,
            "v_available_at": rows.instant(available_at, "available_at"),
        }
        if to_queue is not None:
            params["v_queue"] = to_queue
        stmt = _release(to_queue is not None)
        # MySQL counts matched rows (CLIENT_FOUND_ROWS), like the other backends.
        return self._write(lambda conn: conn.execute(stmt, params).rowcount == 1)

    def queue_extend(self, message_id: str, consumer: str, *, until: datetime) -> bool:
        """Move the claim's expiry to ``until`` if ``consumer`` holds it."""
        params = {
            "k_id": message_id,
            "k_consumer": consumer,
            "v_until": rows.instant(until, "until"),
        }
        return self._write(lambda conn: conn.execute(_EXTEND, params).rowcount == 1)

    def queue_next_available(self, queue: str, *, now: datetime) -> datetime | None:
        """The earliest availability of an unclaimed message of ``queue`` (one indexed read)."""
        params = {"k_queue": queue, "k_now": rows.instant(now, "now")}
        return self._read(lambda conn: conn.execute(_next_available(), params).scalar())

    def queue_depth(self, queue: str, *, now: datetime) -> dict[str, int]:
        """Ready, delayed and claimed messages of ``queue`` at ``now``, in one read."""
        params = {"k_queue": queue, "k_now": rows.instant(now, "now")}
        row = self._read(lambda conn: conn.execute(_depth(), params).one())
        return {name: int(value or 0) for name, value in row._mapping.items()}

    def queue_depths(self, queues: Iterable[str], *, now: datetime) -> dict[str, dict[str, int]]:
        """:meth:`queue_depth` of several queues, one grouped read per 500 names."""
        names = list(dict.fromkeys(queues))
        depths = {name: {"ready": 0, "delayed": 0, "claimed": 0} for name in names}
        at = rows.instant(now, "now")
        for start in range(0, len(names), _DEPTHS_CHUNK):
            params = {"k_queues": names[start : start + _DEPTHS_CHUNK], "k_now": at}
            found = self._read(lambda conn, p=params: conn.execute(_depths(), p).all())
            for row in found:
                values = row._mapping
                depths[values["queue"]] = {
                    key: int(values[key] or 0) for key in ("ready", "delayed", "claimed")
                }
        return depths

    def queue_purge(self, queue: str) -> int:
        """Delete every message of ``queue``; how many there were."""
        return self._write(lambda conn: conn.execute(_PURGE, {"k_queue": queue}).rowcount)


# -- the writes, inside a caller's transaction -------------------------------------------------------


def _check_visibility(visibility: object) -> None:
    if not isinstance(visibility, timedelta) or visibility <= timedelta(0):
        raise InvalidInput("visibility", f"must be a positive timedelta (got {visibility!r})")


def put_in(conn: sa.Connection, batch: list[dict[str, Any]]) -> None:
    if batch:
        conn.execute(_INSERT, batch)


def _ack_in(conn: sa.Connection, ids: Sequence[str], consumer: str) -> int:
    """Delete the messages of ``ids`` whose claim ``consumer`` holds; how many there were."""
    if len(ids) == 1:
        return conn.execute(_ACK, {"k_id": ids[0], "k_consumer": consumer}).rowcount
    return conn.execute(_ACK_MANY, {"k_ids": list(ids), "k_consumer": consumer}).rowcount


def _claim_in(
    conn: sa.Connection,
    queue: str,
    consumer: str,
    now: datetime,
    visibility: timedelta,
    limit: int,
    *,
    lock: bool,
) -> list[QueuedMessage]:
    """Claim up to ``limit`` deliverable messages of ``queue``, oldest first (module doc)."""
    params = {"k_queue": queue, "k_now": rows.instant(now, "now"), "limit": limit}
    until = rows.instant(now + visibility, "visibility")
    found = conn.execute(_deliverable_ids(lock), params).all()
    if not found:
        return []
    conn.execute(
        _MARK_CLAIMED,
        {"k_ids": [row.id for row in found], "v_consumer": consumer, "v_until": until},
    )
    # The rows are ours (write lock or row locks): the values we set are the stored ones.
    return [
        _message(
            row._mapping, deliveries=row.deliveries + 1, claimed_by=consumer, claimed_until=until
        )
        for row in found
    ]


# -- statement builders, one per shape ---------------------------------------------------------------


def _now() -> sa.BindParameter[Any]:
    return sa.bindparam("k_now", type_=_c.available_at.type)


def _unclaimed() -> sa.ColumnElement[bool]:
    """Never claimed, released, or the claim expired."""
    return sa.or_(_c.claimed_until.is_(None), _c.claimed_until <= _now())


@functools.cache
def _deliverable_ids(lock: bool) -> sa.Select:
    """The oldest deliverable messages of a queue; ``lock``: FOR UPDATE SKIP LOCKED."""
    stmt = (
        sa.select(queue_messages)
        .where(
            _c.queue == sa.bindparam("k_queue", type_=_c.queue.type),
            _c.available_at <= _now(),
            _unclaimed(),
        )
        .order_by(_c.id)
        .limit(sa.bindparam("limit", type_=sa.Integer()))
    )
    return stmt.with_for_update(skip_locked=True) if lock else stmt


@functools.cache
def _next_available() -> sa.Select:
    """The earliest ``available_at`` of a queue's messages that no live claim holds."""
    return sa.select(sa.func.min(_c.available_at)).where(
        _c.queue == sa.bindparam("k_queue", type_=_c.queue.type), _unclaimed()
    )


@functools.cache
def _release(move: bool) -> sa.Update:
    values: dict[str, Any] = {
        "claimed_by": None,
        "claimed_until": None,
        "available_at": sa.bindparam("v_available_at", type_=_c.available_at.type),
    }
    if move:
        values["queue"] = sa.bindparam("v_queue", type_=_c.queue.type)
    return (
        sa.update(queue_messages)
        .where(
            _c.id == sa.bindparam("k_id", type_=_c.id.type),
            _c.claimed_by == sa.bindparam("k_consumer", type_=_c.claimed_by.type),
        )
        .values(values)
    )


def _depth_columns() -> list[sa.ColumnElement[Any]]:
    def count(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
        return sa.func.sum(sa.case((condition, 1), else_=0))

    due = _c.available_at <= _now()
    return [
        count(sa.and_(_unclaimed(), due)).label("ready"),
        count(sa.and_(_unclaimed(), sa.not_(due))).label("delayed"),
        count(_c.claimed_until > _now()).label("claimed"),
    ]


@functools.cache
def _depth() -> sa.Select:
    return sa.select(*_depth_columns()).where(
        _c.queue == sa.bindparam("k_queue", type_=_c.queue.type)
    )


@functools.cache
def _depths() -> sa.Select:
    return (
        sa.select(_c.queue, *_depth_columns())
        .where(_c.queue.in_(sa.bindparam("k_queues", expanding=True)))
        .group_by(_c.queue)
    )


# -- values ------------------------------------------------------------------------------------------


def _message(row: Mapping[str, Any], **changes: Any) -> QueuedMessage:
    values = {name: row[name] for name in _FIELDS}
    values.update(changes)
    values["body"] = bytes(values["body"])
    return QueuedMessage(**values)


def _as_bytes(body: object) -> bytes:
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    raise InvalidInput("body", f"must be bytes (got {type(body).__name__})")


def message_rows(
    messages: Sequence[tuple[str, bytes]], available_at: datetime
) -> tuple[list[str], list[dict[str, Any]]]:
    """New ids (sorting in the given order) and rows of ready-to-claim messages."""
    at = rows.instant(available_at, "available_at")
    ids = new_ids(len(messages))
    created = rows.instant(datetime.now(UTC), "created_at")
    batch = [
        {
            "id": message_id,
            "queue": queue,
            "body": _as_bytes(body),
            "available_at": at,
            "deliveries": 0,
            "claimed_by": None,
            "claimed_until": None,
            "created_at": created,
        }
        for message_id, (queue, body) in zip(ids, messages, strict=True)
    ]
    return ids, batch
