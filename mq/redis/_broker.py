"""The Redis broker: publishing and queue administration on one connection pool."""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING

from redis import exceptions as redis_errors

from db.backends.base import mask_uri
from db.errors import InvalidInput
from mq.broker import Broker
from mq.message import dead_letter_queue
from mq.redis import _scripts as scripts
from mq.redis._consumer import RedisConsumer, check_queue_name, delay_millis
from mq.redis._link import FAILURES, open_client
from mq.retry import RetryPolicy

if TYPE_CHECKING:
    from db.store import Store

log = logging.getLogger(f"tactus.{__name__}")

#: How long a delivery stays with a consumer that neither settles nor extends it.
DEFAULT_VISIBILITY = timedelta(seconds=60)
#: Messages per publishing script call: one call blocks the server while it runs (about a
#: millisecond per thousand here).
BATCH = 1000
#: Failed batches remembered, so that the same batch published again is not added twice.
UNCONFIRMED_KEPT = 16

#: (queue, body, delay in ms) of one message to publish.
_Outgoing = tuple[str, bytes, int]


class RedisBroker(Broker):
    """Durable queues on Redis Streams (see :mod:`mq.redis`).

    Any thread may publish or administer (redis-py's pool is thread-safe); publishes are
    serialised so that each batch gets the next number of this publisher (see :meth:`_send`).
    Each :meth:`consumer` opens its own connection for the thread that uses it.

    Args:
        uri: ``redis://[:password@]host:6379/0`` (``rediss://`` for TLS).
        store: ignored (the embedded queue's store; Redis keeps its own messages).
        visibility: how long a delivery stays with its consumer without an ack or an extend
            before another consumer claims it (the ``visibility_timeout`` setting; every process
            of an installation uses the same).
        retry: reconnect attempts and backoff, for publishing and consuming alike.
        attempts: ``retry`` with this many attempts (mx passes 1).
    """

    backend = "redis"

    def __init__(
        self,
        uri: str,
        *,
        store: Store | None = None,
        visibility: timedelta = DEFAULT_VISIBILITY,
        retry: RetryPolicy | None = None,
        attempts: int | None = None,
    ) -> None:
        del store
        if not isinstance(visibility, timedelta) or visibility <= timedelta(0):
            raise InvalidInput("visibility", f"must be a positive timedelta (got {visibility!r})")
        self._uri = uri
        self.where = mask_uri(uri)
        self.visibility = visibility
        if retry is None:
            retry = RetryPolicy() if attempts is None else RetryPolicy(attempts=attempts)
        self._retry = retry
        self._client = open_client(uri)
        self._publish_script = self._client.register_script(scripts.PUBLISH)
        self._depths_script = self._client.register_script(scripts.DEPTHS)
        self._purge_script = self._client.register_script(scripts.PURGE)
        self._lock = threading.Lock()
        self._token = secrets.token_hex(8)
        self._seq = 0
        #: Batches whose publish failed, by content: sent again, they keep their number.
        self._unconfirmed: dict[tuple[_Outgoing, ...], list[int]] = {}

    def describe(self) -> str:
        return f"redis {self.where}"

    def declare(self, queue: str) -> None:
        names = [check_queue_name(queue)]
        if not queue.endswith(dead_letter_queue("")):
            names.append(dead_letter_queue(queue))

        def action() -> None:
            for name in names:
                try:
                    self._client.xgroup_create(
                        scripts.stream_key(name), scripts.GROUP, id="0", mkstream=True
                    )
                except redis_errors.ResponseError as exc:
                    if not str(exc).startswith("BUSYGROUP"):
                        raise

        self._retry.run(FAILURES, self.where, f"declare {queue}", action)

    def publish(self, queue: str, body: bytes, *, delay: timedelta | None = None) -> None:
        self._send([(check_queue_name(queue), body, delay_millis(delay))])

    def publish_many(self, messages: Iterable[tuple[str, bytes]]) -> None:
        self._send([(check_queue_name(queue), body, 0) for queue, body in messages])

    def consumer(self, queue: str, *, prefetch: int = 1) -> RedisConsumer:
        return RedisConsumer(
            self._uri,
            check_queue_name(queue),
            prefetch=prefetch,
            visibility=self.visibility,
            retry=self._retry,
        )

    def depth(self, queue: str) -> int:
        return self.depths([queue])[queue]

    def depths(self, queues: Iterable[str]) -> dict[str, int]:
        names = [check_queue_name(queue) for queue in dict.fromkeys(queues)]
        keys = [key for name in names for key in _queue_keys(name)]
        counts = self._retry.run(
            FAILURES,
            self.where,
            f"depth of {', '.join(names[:3])}",
            lambda: self._depths_script(keys=keys, args=[scripts.GROUP]),
        )
        return dict(zip(names, (int(c) for c in counts), strict=True))

    def purge(self, queue: str) -> int:
        keys = _queue_keys(check_queue_name(queue))
        purged = int(
            self._retry.run(
                FAILURES,
                self.where,
                f"purge {queue}",
                lambda: self._purge_script(keys=keys, args=[scripts.GROUP]),
            )
        )
        log.info("redis %s: purged %d message(s) of %s", self.where, purged, queue)
        return purged

    def delete(self, queue: str) -> None:
        keys = [*_queue_keys(queue), *_queue_keys(dead_letter_queue(queue))]
        self._retry.run(FAILURES, self.where, f"delete {queue}", lambda: self._client.delete(*keys))

    def close(self) -> None:
        with self._lock:
            if self._seq and not self._unconfirmed:
                # nothing left to send again: the record of added batches is not needed
                try:
                    self._client.delete(scripts.publisher_key(self._token))
                except (redis_errors.RedisError, OSError) as exc:
                    log.debug("redis %s: publisher record kept (%s)", self.where, exc)
            self._client.close()

    def _send(self, items: list[_Outgoing]) -> None:
        """Add ``items``, :data:`BATCH` a script call, each call this publisher's next batch.

        The reply to a call can be lost after the server ran it (the connection dropped, the
        server was killed before it answered): the call is then sent again, the same batch
        under the same number, and the script adds nothing when the publisher's record already
        holds the number. Messages whose publish raised are remembered with their numbers, so
        the caller's own retry of the same messages (the daemons' :mod:`mq.patient`) reuses
        them and skips the batches that did get in. Either way each message is added once.
        """
        if not items:
            return
        content = tuple(items)
        batches = [items[start : start + BATCH] for start in range(0, len(items), BATCH)]
        with self._lock:
            numbers = self._unconfirmed.pop(content, None)
            if numbers is None:
                numbers = list(range(self._seq + 1, self._seq + 1 + len(batches)))
                self._seq += len(batches)
            try:
                for batch, number in zip(batches, numbers, strict=True):
                    self._send_batch(batch, number)
            except Exception:
                self._unconfirmed[content] = numbers
                while len(self._unconfirmed) > UNCONFIRMED_KEPT:
                    del self._unconfirmed[next(iter(self._unconfirmed))]
                raise

    def _send_batch(self, items: list[_Outgoing], number: int) -> None:
        keys = [scripts.publisher_key(self._token)]
        args: list[object] = [number, scripts.PUBLISHER_TTL, scripts.PUBLISHED_KEPT]
        for queue, body, delay in items:
            keys.append(scripts.delayed_key(queue) if delay else scripts.stream_key(queue))
            args.extend((delay, secrets.token_hex(8) if delay else "", body))
        queues = sorted({queue for queue, _, _ in items})
        what = f"publish {len(items)} message(s) to {', '.join(queues[:3])}"
        if len(queues) > 3:
            what += f" and {len(queues) - 3} more queue(s)"
        self._retry.run(
            FAILURES, self.where, what, lambda: self._publish_script(keys=keys, args=args)
        )


def _queue_keys(queue: str) -> list[str]:
    return [scripts.stream_key(queue), scripts.delayed_key(queue)]
