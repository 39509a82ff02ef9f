"""The messages part of the store interface (SPEC section 12): what running units of work
emit, in order, capped per unit of work."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from db.models import MessagePage


class MessageStore(ABC):
    """Messages of units of work: a part of :class:`~db.store.Store`."""

    @abstractmethod
    def append_messages(
        self, uow_id: str, attempt: int, messages: Sequence[tuple[datetime, str]], *, limit: int
    ) -> int:
        """Append messages of one unit of work, in the order given, after every message it
        emitted before (``seq`` numbers grow by one per message emitted, also across callers).

        At most ``limit`` messages are kept per unit of work: the oldest. Later ones are not
        stored but counted (:attr:`~db.models.MessagePage.dropped`).

        Args:
            uow_id: the unit of work (not checked: its worker is the only writer).
            attempt: the attempt that emitted them.
            messages: (when, text) of each, ``when`` aware.
            limit: ``max_messages_per_uow``.

        Returns:
            How many of ``messages`` were stored.

        Raises:
            InvalidInput: an instant is naive, or ``limit`` is not positive.
        """

    @abstractmethod
    def list_messages(
        self, uow_id: str, *, after: int = 0, limit: int = 100, newest: bool = False
    ) -> MessagePage:
        """Messages of a unit of work whose ``seq`` is above ``after``, in ``seq`` order.

        Args:
            uow_id: the unit of work (an unknown one has no messages).
            after: the ``seq`` of the last message the caller has (following).
            limit: page size (at most :data:`~db.store.MAX_PAGE_SIZE`).
            newest: the last ``limit`` of them instead of the first (a page's tail).

        Returns:
            The page, with how many messages the cap dropped.

        Raises:
            InvalidInput: bad ``after`` or ``limit``.
        """
