"""NATS JetStream through nats-py: durable pull consumers, AckWait as the visibility timeout,
publishes confirmed by JetStream's publish acks, dead letters, delays, and reconnects that lose
nothing.

Layout (``_layout.py``): one stream per installation (``tactus_<prefix>``, WorkQueue retention:
a message lives until its consumer acks it), and per queue a subject of ready messages and one
of delayed messages, each with its durable pull consumer. The dead-letter queue ``q.dead`` is a
queue like any other in the same stream.

- ``publish`` waits for the publish ack, which JetStream sends once the message is stored in the
  stream (on disk); ``publish_many`` sends a batch pipelined and then waits for all the acks. Every
  message carries a ``Nats-Msg-Id``, so a batch tried again after a failure is stored once.
- Consumers pull at most ``prefetch`` messages in hand (``_consumer.py``); a delivery neither
  acked nor extended (``+WPI``) is delivered again after the AckWait, the broker's
  ``visibility`` (the ``visibility_timeout`` setting): a consumer that died gives its messages
  back that way; one that closes gives them back at once (``-NAK``).
- ``requeue(delay)`` is a ``-NAK`` with that delay; ``publish(delay)`` goes through the delay
  subject and the consumers' movers (``_mover.py``: nats-server 2.9 cannot schedule a message).
- The bridge (``_link.py``): one event loop thread per broker runs the connection; callers wait
  on it with timeouts; ``close`` stops the loop and joins its thread.

A call that fails because the server is away is tried again with backoff (:class:`RetryPolicy`),
then raises :class:`~db.errors.BrokerUnavailable`; nats-py reconnects by itself meanwhile. Only
the masked URI reaches logs and messages.
"""

from __future__ import annotations

from mq.nats._broker import NatsBroker
from mq.nats._consumer import NatsConsumer
from mq.retry import RetryPolicy

__all__ = ["NatsBroker", "NatsConsumer", "RetryPolicy"]
