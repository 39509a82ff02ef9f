"""Messages of units of work in the SQL store (SPEC section 12).

``uow_messages`` holds one row per stored message, keyed by (uow_id, seq). ``uow_message_tallies``
holds, per unit of work, how many messages it emitted (the last ``seq`` handed out) and how many
the cap dropped. An append increments the tally first: the row lock it takes orders concurrent
appenders (SQLite's write transactions are serial anyway), so ``seq`` numbers are never given
twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from db.backends.base import check_count, check_limit
from db.backends.sql import rows
from db.backends.sql.core import SqlCore
from db.backends.sql.schema import _MYSQL_TABLE, ID_LENGTH, UtcDateTime, _key, metadata
from db.models import MessagePage, UowMessage

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

uow_messages = sa.Table(
    "uow_messages",
    metadata,
    sa.Column("uow_id", _key(ID_LENGTH), primary_key=True),
    sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("text", sa.Text(), nullable=False),
    **_MYSQL_TABLE,
)

uow_message_tallies = sa.Table(
    "uow_message_tallies",
    metadata,
    sa.Column("uow_id", _key(ID_LENGTH), primary_key=True),
    sa.Column("emitted", sa.Integer(), nullable=False),
    sa.Column("dropped", sa.Integer(), nullable=False),
    **_MYSQL_TABLE,
)

_INSERT_MESSAGE = sa.insert(uow_messages)
_TALLY = uow_message_tallies.c


class MessagesMixin(SqlCore):
    """The message part of :class:`~db.store.Store` on SQL."""

    def append_messages(
        self, uow_id: str, attempt: int, messages: Sequence[tuple[datetime, str]], *, limit: int
    ) -> int:
        """Number the messages after those emitted before; store those within ``limit``."""
        limit = check_count(limit, "limit")
        texts = [(rows.instant(at, "at"), text) for at, text in messages]
        count = len(texts)
        if count == 0:
            return 0
        where = _TALLY.uow_id == uow_id
        create = self._insert_ignore(uow_message_tallies)
        take = sa.update(uow_message_tallies).where(where).values(emitted=_TALLY.emitted + count)
        read = sa.select(_TALLY.emitted).where(where)

        def work(conn: sa.Connection) -> int:
            conn.execute(create, {"uow_id": uow_id, "emitted": 0, "dropped": 0})
            conn.execute(take)  # locks the tally until the commit
            first = conn.execute(read).scalar_one() - count + 1
            batch = [
                {"uow_id": uow_id, "seq": first + i, "attempt": attempt, "at": at, "text": text}
                for i, (at, text) in enumerate(texts)
                if first + i <= limit
            ]
            if batch:
                conn.execute(_INSERT_MESSAGE, batch)
            dropped = count - len(batch)
            if dropped:
                conn.execute(
                    sa.update(uow_message_tallies)
                    .where(where)
                    .values(dropped=_TALLY.dropped + dropped)
                )
            return len(batch)

        return self._write(work)

    def list_messages(
        self, uow_id: str, *, after: int = 0, limit: int = 100, newest: bool = False
    ) -> MessagePage:
        """Messages above ``after`` in ``seq`` order (the last ``limit`` when ``newest``)."""
        after = check_count(after, "after", minimum=0)
        limit = check_limit(limit)
        c = uow_messages.c
        stmt = sa.select(uow_messages).where(c.uow_id == uow_id, c.seq > after)
        if newest:
            stmt = stmt.order_by(c.seq.desc()).limit(limit)
        else:
            stmt = stmt.order_by(c.seq).limit(limit + 1)
        dropped = sa.select(_TALLY.dropped).where(_TALLY.uow_id == uow_id)

        def work(conn: sa.Connection) -> tuple[list[sa.Row], int]:
            return conn.execute(stmt).all(), conn.execute(dropped).scalar() or 0

        found, lost = self._read(work)
        if newest:
            found.reverse()
        items = [_message_from(row._mapping) for row in found[:limit]]
        return MessagePage(items=items, dropped=int(lost), more=len(found) > limit)


def _message_from(row: sa.RowMapping) -> UowMessage:
    return UowMessage(
        uow_id=row["uow_id"],
        seq=row["seq"],
        attempt=row["attempt"],
        at=rows.instant(row["at"], "at"),
        text=row["text"],
    )
