"""A Redis consumer: one connection, one consumer name in the queue's group, one thread."""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar

from redis import exceptions as redis_errors

from db.backends.base import mask_uri
from db.errors import BrokerUnavailable, InvalidInput
from mq.broker import Consumer, Delivery
from mq.message import dead_letter_queue, valid_queue_name
from mq.redis import _scripts as scripts
from mq.redis._link import FAILURES, REPLY_TIMEOUT, explain, open_client
from mq.retry import RetryPolicy

if TYPE_CHECKING:
    from redis.commands.core import Script

log = logging.getLogger(f"tactus.{__name__}")

T = TypeVar("T")

#: Longest queue name.
MAX_QUEUE_NAME = 200
#: Longest single blocking read (seconds): between two, the consumer does its upkeep.
BLOCK_CAP = 0.5
#: Seconds between two rounds of upkeep while the consumer reads (moving due delayed messages,
#: claiming a dead consumer's entries): how late a delayed message published elsewhere, or a
#: reclaimable entry, can be seen.
UPKEEP_EVERY = 0.5
#: Delayed messages moved into the stream by one round of upkeep at most.
MOVE_LIMIT = 1000
#: Seconds between two looks for consumers of the group gone for good.
SWEEP_EVERY = 300.0
#: A consumer idle this long and holding nothing is removed from the group.
STALE_CONSUMER = timedelta(hours=1)
#: Own pending entries read back after a reconnect, at most.
RECOVER_LIMIT = 1000


def check_queue_name(queue: object) -> str:
    """:func:`mq.message.valid_queue_name` with this broker's ``MAX_QUEUE_NAME``."""
    return valid_queue_name(queue, MAX_QUEUE_NAME)


@dataclass(frozen=True, slots=True)
class _Entry:
    """A stream entry this consumer holds but has not handed out yet."""

    id: bytes
    body: bytes
    redelivered: bool
    #: ``time.monotonic()`` when it was read or last kept.
    since: float


def _entry(raw_id: bytes, fields: dict[bytes, bytes], *, redelivered: bool, since: float) -> _Entry:
    """An entry read from the stream: redelivered if it was claimed from another consumer or
    read back, or if it is a copy of a message delivered before (field ``n``)."""
    prior = fields.get(b"n")
    redelivered = redelivered or bool(prior and int(prior))
    return _Entry(raw_id, fields.get(b"b", b""), redelivered, since)


def delay_millis(delay: timedelta | None) -> int:
    """``delay`` in whole milliseconds, rounded up (never early); 0 for none.

    Raises:
        InvalidInput: not a timedelta, or negative (field ``delay``).
    """
    if delay is None:
        return 0
    if not isinstance(delay, timedelta) or delay < timedelta(0):
        raise InvalidInput("delay", f"must be a timedelta of zero or more (got {delay!r})")
    return math.ceil(delay / timedelta(milliseconds=1))


class RedisConsumer(Consumer):
    """Reads one queue's stream as one consumer of its group, ``prefetch`` entries at most in
    hand (handed out by :meth:`get` or read ahead). See :mod:`mq.redis` for the layout.

    A delivery's tag is its entry id. Settling (ack, reject, requeue, extend, hand back) is one
    script call that touches only entries still pending for this consumer, so settling a
    delivery that the visibility timeout gave to another consumer changes nothing and is
    logged, and a call sent again after a lost reply does nothing twice.

    After a lost connection the next call reconnects with the broker's retry policy; entries in
    hand stay this consumer's (the server keeps them pending under its name) and can still be
    settled. An entry whose read reached the server but whose reply was lost is read back from
    the consumer's own pending list after the reconnect.
    """

    def __init__(
        self,
        uri: str,
        queue: str,
        *,
        prefetch: int = 1,
        visibility: timedelta,
        retry: RetryPolicy | None = None,
    ) -> None:
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
            raise InvalidInput("prefetch", f"must be a positive integer (got {prefetch!r})")
        self.queue = check_queue_name(queue)
        self.prefetch = prefetch
        #: This consumer's name in the group: unique, readable in ``XINFO CONSUMERS``.
        self.name = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"
        self.visibility = visibility
        self.where = mask_uri(uri)
        self._retry = retry or RetryPolicy()
        self._client = open_client(uri, reply_timeout=BLOCK_CAP + REPLY_TIMEOUT, single=True)
        self._maintain: Script = self._client.register_script(scripts.MAINTAIN)
        self._settle_script: Script = self._client.register_script(scripts.SETTLE)
        self._stream = scripts.stream_key(queue)
        self._keys = [self._stream, scripts.delayed_key(queue)]
        self._keys.append(scripts.stream_key(dead_letter_queue(queue)))
        self._visibility_ms = max(int(visibility / timedelta(milliseconds=1)), 1)
        #: Read and not handed out yet, oldest first.
        self._buffer: deque[_Entry] = deque()
        #: Handed out by :meth:`get` and not settled yet.
        self._held: set[bytes] = set()
        self._cursor = "0-0"
        self._next_upkeep = 0.0
        self._next_sweep = time.monotonic() + SWEEP_EVERY * secrets.randbelow(1000) / 1000
        #: Set by a failure: read back own pending entries once connected again.
        self._recover = False
        #: False from a failure until a read succeeds: :meth:`get_ready` does not try meanwhile.
        self._healthy = True
        self._closed = False
        try:
            self._call(f"consume {queue}", self._ensure_group)
        except BrokerUnavailable:
            self._client.close()
            raise

    # -- receiving -------------------------------------------------------------------------------

    def get(self, timeout: float) -> Delivery | None:
        if self._closed:
            raise BrokerUnavailable(f"consumer of {self.queue} is closed", transient=False)
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            delivery = self._hand_out(patient=True)
            if delivery is not None:
                return delivery
            remaining = max(deadline - time.monotonic(), 0.0)
            self._call(f"consume {self.queue}", lambda w=remaining: self._fill(w))
            if not self._buffer and time.monotonic() >= deadline:
                return None

    def get_ready(self) -> Delivery | None:
        """An entry read ahead, or one read now without waiting; None after a failure until
        the next :meth:`get` has reconnected."""
        delivery = self._hand_out(patient=False)
        if delivery is not None or self._closed or not self._healthy:
            return delivery
        try:
            self._read(self._room(), block_ms=None)
        except (redis_errors.RedisError, OSError) as exc:
            self._failed(exc)
            return None
        return self._hand_out(patient=False)

    def hand_back(self) -> int:
        ids = [entry.id for entry in self._buffer]
        self._buffer.clear()
        if not ids:
            return 0
        return len(self._settle("hand back", "back", ids, refill=False))

    # -- settling --------------------------------------------------------------------------------

    def ack(self, delivery: Delivery, *, notices: Sequence[tuple[str, bytes]] = ()) -> None:
        # The notices are added by the same script, before the ack, and only if the entry is
        # still ours: a repeated ack adds none twice.
        notices = [(check_queue_name(queue), body) for queue, body in notices]
        entry_id = self._entry_id(delivery)
        if not self._settle("ack", "ack", [entry_id], notices=notices):
            self._claim_lost("ack", [entry_id])

    def ack_many(self, deliveries: Sequence[Delivery], *, defer: bool = False) -> None:
        # ``defer`` may wait; here one call acks them all at once anyway.
        ids = [self._entry_id(delivery) for delivery in deliveries]
        if ids:
            done = self._settle(f"ack {len(ids)}", "ack", ids)
            if len(done) < len(ids):
                self._claim_lost("ack", sorted(set(ids) - set(done)))

    def reject(self, delivery: Delivery, reason: str) -> None:
        entry_id = self._entry_id(delivery)
        log.warning(
            "queue %s: dead-lettering message %s to %s (%s): %r",
            self.queue,
            entry_id.decode(),
            dead_letter_queue(self.queue),
            reason,
            delivery.body[:80],
        )
        if not self._settle("reject", "dead", [entry_id]):
            self._claim_lost("reject", [entry_id])

    def requeue(self, delivery: Delivery, delay: timedelta | None = None) -> None:
        millis = delay_millis(delay)
        entry_id = self._entry_id(delivery)
        mode = "later" if millis > 0 else "back"
        if not self._settle("requeue", mode, [entry_id], delay_ms=millis):
            self._claim_lost("requeue", [entry_id])

    def extend(self, delivery: Delivery, visibility: timedelta) -> None:
        """Reset the delivery's idle time: no other consumer claims it before the broker's
        visibility timeout has passed again (Redis holds an entry for the claimer's visibility,
        so ``visibility`` cannot make it longer)."""
        del visibility
        entry_id = delivery.tag
        if not isinstance(entry_id, bytes) or entry_id not in self._held:
            return
        if not self._settle("extend", "keep", [entry_id], refill=False):
            self._held.discard(entry_id)  # another consumer has it now
            self._claim_lost("extend", [entry_id])

    def close(self) -> None:
        """Give every entry not acked back to the queue (read ahead or handed out) and leave
        the group; what cannot be given back now is claimed by others after the visibility."""
        if self._closed:
            return
        self._closed = True
        ids = [entry.id for entry in self._buffer] + sorted(self._held)
        self._buffer.clear()
        self._held.clear()
        try:
            self._run_settle("leave", ids)
        except (redis_errors.RedisError, OSError) as exc:
            log.warning(
                "redis %s: queue %s: consumer %s kept %d entries on close (%s); they are "
                "claimed by other consumers after the visibility timeout",
                self.where,
                self.queue,
                self.name,
                len(ids),
                explain(exc),
            )
        finally:
            self._client.close()

    # -- inside ----------------------------------------------------------------------------------

    def _room(self) -> int:
        return self.prefetch - len(self._held) - len(self._buffer)

    def _hand_out(self, *, patient: bool) -> Delivery | None:
        """The oldest entry read ahead and still ours, as a delivery. One read more than half a
        visibility timeout ago is kept first (its idle time reset), or dropped if it is no
        longer ours."""
        while self._buffer:
            entry = self._buffer.popleft()
            if time.monotonic() - entry.since >= self.visibility.total_seconds() / 2:
                try:
                    if patient:
                        kept = self._settle("keep", "keep", [entry.id], refill=False)
                    else:
                        kept = self._run_settle("keep", [entry.id])
                except (BrokerUnavailable, redis_errors.RedisError, OSError):
                    self._buffer.appendleft(entry)
                    if patient:
                        raise
                    return None
                if not kept:
                    self._claim_lost("read ahead", [entry.id])
                    continue
            self._held.add(entry.id)
            return Delivery(
                queue=self.queue, body=entry.body, tag=entry.id, redelivered=entry.redelivered
            )
        return None

    def _fill(self, wait: float) -> None:
        """Read what there is room for, waiting up to ``wait`` seconds (at most
        :data:`BLOCK_CAP`); read back own pending entries after a reconnect, and do the upkeep
        when it is due."""
        room = self._room()
        if room <= 0:
            # the prefetch is full of deliveries handed out: nothing may be read
            time.sleep(min(wait, BLOCK_CAP))
            return
        if self._recover:
            self._read_back_own()
            self._recover = False
            if self._buffer:
                return
        now = time.monotonic()
        if now >= self._next_upkeep:
            self._upkeep(room)
            if self._buffer:
                return
        block = min(wait, BLOCK_CAP, max(self._next_upkeep - now, 0.0))
        self._read(room, block_ms=int(block * 1000) or None)

    def _read(self, room: int, *, block_ms: int | None) -> None:
        """Read new entries (``XREADGROUP ... >``), blocking up to ``block_ms`` (None: not)."""
        if room <= 0:
            return
        try:
            reply = self._client.xreadgroup(
                scripts.GROUP, self.name, {self._stream: ">"}, count=room, block=block_ms
            )
        except redis_errors.ResponseError as exc:
            # the queue was deleted (or never declared): create it and read again next time
            if not str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                raise
            self._ensure_group()
            return
        self._healthy = True
        now = time.monotonic()
        for _, entries in reply or ():
            for raw_id, fields in entries:
                self._buffer.append(_entry(raw_id, fields, redelivered=False, since=now))

    def _upkeep(self, room: int) -> None:
        now = time.monotonic()
        sweep = 0
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_EVERY
            sweep = int(max(STALE_CONSUMER, 2 * self.visibility) / timedelta(milliseconds=1))
        moved, wait_ms, cursor, claimed = self._maintain(
            keys=self._keys[:2],
            args=[
                scripts.GROUP,
                self.name,
                self._visibility_ms,
                self._cursor,
                room,
                MOVE_LIMIT,
                sweep,
            ],
        )
        self._cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        wait = UPKEEP_EVERY if moved >= MOVE_LIMIT else min(UPKEEP_EVERY, wait_ms / 1000)
        self._next_upkeep = time.monotonic() + (UPKEEP_EVERY if wait_ms < 0 else wait)
        have = self._held | {entry.id for entry in self._buffer}
        taken = []
        for raw_id, flat in claimed:
            if raw_id in have:
                continue  # ours already, idle too long: claiming it just reset its idle time
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            self._buffer.append(_entry(raw_id, fields, redelivered=True, since=now))
            taken.append(raw_id.decode())
        if taken:
            log.info(
                "queue %s: consumer %s claimed %d entries idle past the visibility timeout "
                "(their consumer died or hung): %s",
                self.queue,
                self.name,
                len(taken),
                ", ".join(taken[:5]),
            )

    def _read_back_own(self) -> None:
        """After a reconnect: entries pending under this consumer's name that it does not hold
        were read on the server while the reply was lost; take them now instead of leaving them
        to another consumer after the visibility timeout."""
        reply = self._client.xreadgroup(
            scripts.GROUP, self.name, {self._stream: "0"}, count=RECOVER_LIMIT
        )
        have = self._held | {entry.id for entry in self._buffer}
        now = time.monotonic()
        for _, entries in reply or ():
            for raw_id, fields in entries:
                if raw_id not in have and fields:
                    self._buffer.append(_entry(raw_id, fields, redelivered=True, since=now))

    def _ensure_group(self) -> None:
        try:
            self._client.xgroup_create(self._stream, scripts.GROUP, id="0", mkstream=True)
        except redis_errors.ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise

    def _entry_id(self, delivery: Delivery) -> bytes:
        entry_id = delivery.tag
        if not isinstance(entry_id, bytes):
            raise InvalidInput("delivery", f"not a delivery of a Redis consumer ({entry_id!r})")
        return entry_id

    def _settle(
        self,
        what: str,
        mode: str,
        ids: list[bytes],
        *,
        delay_ms: int = 0,
        notices: Sequence[tuple[str, bytes]] = (),
        refill: bool = True,
    ) -> list[bytes]:
        """Run the settling script in ``mode`` on ``ids`` (retried: it is safe to send again);
        the ids it found still held. With ``refill`` the same call reads new entries into the
        room the settling leaves."""
        return self._call(
            f"{what} on {self.queue}",
            lambda: self._run_settle(mode, ids, delay_ms, notices, refill=refill),
        )

    def _run_settle(
        self,
        mode: str,
        ids: list[bytes],
        delay_ms: int = 0,
        notices: Sequence[tuple[str, bytes]] = (),
        *,
        refill: bool = False,
    ) -> list[bytes]:
        # what is settled leaves room (it stays held until the call succeeds: a failed ack
        # leaves it held, so a reconnect does not read it back as if it were lost)
        still_held = len(self._held.difference(ids)) if mode != "keep" else len(self._held)
        room = max(self.prefetch - still_held - len(self._buffer), 0) if refill else 0
        done, read = self._settle_script(
            keys=[*self._keys, *(scripts.stream_key(queue) for queue, _ in notices)],
            args=[
                scripts.GROUP,
                self.name,
                mode,
                delay_ms,
                secrets.token_hex(6),
                room,
                len(ids),
                *ids,
                *(body for _, body in notices),
            ],
        )
        if mode != "keep":
            self._held.difference_update(ids)
        now = time.monotonic()
        for raw_id, flat in read or ():
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            self._buffer.append(_entry(raw_id, fields, redelivered=False, since=now))
        return list(done)

    def _call(self, what: str, action: Callable[[], T]) -> T:
        return self._retry.run(FAILURES, self.where, what, action, self._failed)

    def _failed(self, exc: BaseException) -> None:
        self._healthy = False
        self._recover = True
        log.debug("redis %s: queue %s: %s", self.where, self.queue, explain(exc))

    def _claim_lost(self, what: str, ids: Sequence[bytes]) -> None:
        log.warning(
            "queue %s: %s of %s by %s did nothing: not held any more (the visibility timeout "
            "passed and another consumer has it, the queue was purged, or a try whose reply "
            "was lost did it already)",
            self.queue,
            what,
            ", ".join(i.decode() for i in ids[:5]),
            self.name,
        )
