"""The embedded queue: a capability of the stores that keep :mod:`mq.store_queue`'s messages.

Not part of :class:`~db.store.Store`: only the store queue (``mq/store_queue.py``) and the worker's
settlement of an outcome with its delivery (:func:`db.state_change.settle_uows`) use it. Every
backend implements it (``db/backends/*/queue.py``).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from db.models import QueueSettled
from db.store.uows import UowStore

if TYPE_CHECKING:
    from db.errors import NotFound, StateConflict
    from db.models import QueuedMessage, QueueSettlement, UnitOfWork, UowTransition


class QueueStore(UowStore):
    """The embedded queue (:mod:`mq.store_queue`) in a store of units of work: messages, claims,
    acks, and settlements that commit queue writes with unit-of-work changes."""

    @abstractmethod
    def queue_put(
        self, queue: str, bodies: Sequence[bytes], *, available_at: datetime
    ) -> list[str]:
        """Append messages to ``queue``, deliverable from ``available_at``, in one write (atomic
        on SQL; on MongoDB an ordered insert, which a crash can cut short).

        Returns:
            Their ids, in order (ids sort in publish order).
        """

    @abstractmethod
    def queue_claim(
        self,
        queue: str,
        consumer: str,
        *,
        now: datetime,
        visibility: timedelta,
        limit: int = 1,
    ) -> list[QueuedMessage]:
        """Atomically claim up to ``limit`` deliverable messages (available, and unclaimed or
        with an expired claim), oldest id first, for ``consumer`` until ``now + visibility``.

        Of racing consumers (threads or OS processes) each message goes to exactly one;
        ``deliveries`` increments on each claim.
        """

    @abstractmethod
    def queue_ack(
        self,
        message_id: str,
        consumer: str,
        *,
        then_put: Sequence[tuple[str, bytes]] = (),
        available_at: datetime | None = None,
    ) -> bool:
        """Delete a message if ``consumer`` still holds its claim, and insert the ``then_put``
        (queue, body) messages, available from ``available_at``, in the same transaction where
        the backend has them (a worker's status messages leave with its ack: one commit). They
        are inserted whether or not the claim was still held.

        Returns:
            False if the claim was lost (expired and taken by another consumer, or gone).

        Raises:
            ValueError: ``then_put`` without ``available_at``.
        """

    def queue_ack_many(self, message_ids: Sequence[str], consumer: str) -> int:
        """Delete the messages of ``message_ids`` whose claim ``consumer`` still holds, in one
        transaction where the backend has them (a reader of status messages acks what it holds
        at once). Returns how many were deleted; the others' claims were lost.

        This default acks one message at a time.
        """
        return sum(self.queue_ack(message_id, consumer) for message_id in message_ids)

    @abstractmethod
    def queue_release(
        self, message_id: str, consumer: str, *, available_at: datetime, to_queue: str | None = None
    ) -> bool:
        """Give a claimed message back: unclaimed, deliverable from ``available_at``, moved to
        ``to_queue`` when given (dead-lettering).

        Returns:
            False if ``consumer`` no longer holds the claim.
        """

    @abstractmethod
    def queue_extend(self, message_id: str, consumer: str, *, until: datetime) -> bool:
        """Extend a claim (a long-running handler). False if the claim was lost."""

    @abstractmethod
    def queue_next_available(self, queue: str, *, now: datetime) -> datetime | None:
        """The earliest ``available_at`` among the messages of ``queue`` that no live claim
        holds at ``now`` (at or before ``now``: one is deliverable already); None when there
        are none. One read: an idle consumer sleeps until then (:mod:`mq.store_queue`)."""

    @abstractmethod
    def queue_depth(self, queue: str, *, now: datetime) -> dict[str, int]:
        """``{"ready": n, "delayed": n, "claimed": n}`` for ``queue``."""

    def queue_depths(self, queues: Iterable[str], *, now: datetime) -> dict[str, dict[str, int]]:
        """:meth:`queue_depth` of several queues (``/metrics`` reads every process queue): one
        read where the backend can group. This default asks one queue at a time."""
        return {queue: self.queue_depth(queue, now=now) for queue in dict.fromkeys(queues)}

    @abstractmethod
    def queue_purge(self, queue: str) -> int:
        """Delete every message of ``queue`` (claimed or not); returns how many."""

    def settle_uows(
        self, steps: Sequence[UowTransition], settlement: QueueSettlement
    ) -> tuple[list[UnitOfWork | NotFound | StateConflict], QueueSettled]:
        """:meth:`transition_uows` and the embedded-queue writes of ``settlement`` (acks, puts,
        a claim), together: one transaction (one durable commit) where the backend has them. A
        worker on the store queue records an outcome, claims the next unit of work, acks its
        delivery, sends the status message and claims the next messages this way. The steps
        apply or are refused on their own, as in :meth:`transition_uows`; the queue writes are
        done whatever became of the steps.

        This default does the parts one after the other (MongoDB: no multi-document
        transaction); a crash between them leaves a message unacked, which is delivered again
        and found finished (at-least-once, as with a crash before any ack).
        """
        done = self.transition_uows(steps) if steps else []
        acked = 0
        acks, put = list(settlement.ack), list(settlement.put)
        if acks:
            acked += self.queue_ack(
                acks[0], settlement.consumer, then_put=put, available_at=settlement.now
            )
            acked += self.queue_ack_many(acks[1:], settlement.consumer)
        elif put:
            for queue in dict.fromkeys(q for q, _ in put):
                self.queue_put(
                    queue, [b for q, b in put if q == queue], available_at=settlement.now
                )
        claimed: list[QueuedMessage] = []
        if settlement.claim_queue is not None and settlement.claim_limit > 0:
            claimed = self.queue_claim(
                settlement.claim_queue,
                settlement.consumer,
                now=settlement.now,
                visibility=settlement.visibility,
                limit=settlement.claim_limit,
            )
        return done, QueueSettled(acked=acked, claimed=tuple(claimed))
