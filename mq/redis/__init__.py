"""Redis Streams through redis-py: one stream and one consumer group per queue, delayed delivery
through a sorted set, dead-letter streams, reclaim of a dead consumer's entries after the
visibility timeout, and reconnects that lose nothing and add nothing twice.

Layout (``_scripts.py``): queue ``q`` is the stream ``tactus:{q}`` read by the group ``tactus``
(created at id 0, so nothing published before the first consumer is missed); its delayed messages
wait in the sorted set ``tactus:{q}:delayed``; ``reject`` moves a message to the stream of
``q.dead`` (``mq.message.dead_letter_queue``). Every operation that writes more than one thing is
one Lua script, so it happens whole or not at all:

- ``publish``/``publish_many``: one script call adds a batch (up to 1,000 messages, any queues)
  and records the batch's number for its publisher; sent again after a lost reply, it adds
  nothing. It returns once Redis has answered, which is once the messages are in memory and,
  per the server's ``appendfsync``, on disk (``always``: before the answer; ``everysec``: within
  a second; persistence off: never).
- a consumer's upkeep (every half second while it reads): due delayed messages move into the
  stream (ZRANGEBYSCORE, XADD, ZREM), and entries idle past the visibility timeout, a dead
  consumer's, are claimed (XAUTOCLAIM), delivered again marked ``redelivered``.
- ack (XACK, XDEL: the stream keeps only what is waiting or being handled; notices added before),
  reject, requeue now (a copy at the end of the stream) or later (a copy in the delayed set),
  hand back and close (copies at the end), extend (XCLAIM ... JUSTID resets the idle time): each
  touches only entries still pending for the calling consumer.

Reading is ``XREADGROUP ... COUNT <prefetch room> BLOCK <at most 0.5 s>``: a message published
while a consumer waits is delivered at once.

Every failure of a connection is retried with exponential backoff (:class:`RetryPolicy`); what
still fails raises :class:`~db.errors.BrokerUnavailable`. Only the masked URI
(``redis://:***@host``) reaches logs and messages.
"""

from __future__ import annotations

from mq.redis._broker import RedisBroker
from mq.redis._consumer import RedisConsumer
from mq.redis._scripts import queue_key_pattern
from mq.retry import RetryPolicy

__all__ = ["RedisBroker", "RedisConsumer", "RetryPolicy", "queue_key_pattern"]
