"""Brokers: how work travels between the scheduler and the workers."""

from __future__ import annotations

import importlib
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from db.errors import InvalidInput

if TYPE_CHECKING:
    from db.store import Store
    from mq.broker import Broker

#: URI scheme -> "module:Class"; modules load lazily so the embedded default never imports pika.
BROKER_BACKENDS = {
    "store": "mq.store_queue:StoreBroker",
    "amqp": "mq.rabbitmq:RabbitBroker",
    "amqps": "mq.rabbitmq:RabbitBroker",
    "redis": "mq.redis:RedisBroker",
    "rediss": "mq.redis:RedisBroker",
    "nats": "mq.nats:NatsBroker",
}


def open_broker(
    uri: str,
    store: Store,
    *,
    visibility: timedelta | None = None,
    attempts: int | None = None,
) -> Broker:
    """Open the broker named by ``uri``: ``store`` (the embedded queue in ``store``),
    ``amqp://user:pass@host:5672/vhost``, ``redis://host:6379/0`` (Redis Streams) or
    ``nats://host:4222`` (NATS JetStream).

    Args:
        uri: the ``broker_uri`` setting.
        store: the store (holds the embedded queue; RabbitMQ ignores it).
        visibility: how long the embedded queue and Redis leave a delivery with its consumer,
            and NATS's AckWait (the ``visibility_timeout`` setting); RabbitMQ tracks its
            consumers' connections instead.
        attempts: how often one call is tried before it raises ``BrokerUnavailable`` (default:
            the backend's, a few tries that ride out a blip); mx passes 1 and answers at once.

    Raises:
        InvalidInput: unknown scheme (field ``broker_uri``).
    """
    scheme = "store" if uri == "store" else urlsplit(uri).scheme.lower()
    target = BROKER_BACKENDS.get(scheme)
    if target is None:
        raise InvalidInput(
            "broker_uri", f"unknown scheme {scheme!r} (use store, amqp, redis or nats)"
        )
    module_name, class_name = target.split(":")
    module = importlib.import_module(module_name)
    broker_class = getattr(module, class_name)
    options: dict[str, object] = {} if attempts is None else {"attempts": attempts}
    if scheme in ("store", "redis", "rediss", "nats") and visibility is not None:
        options["visibility"] = visibility
    return broker_class(uri, store=store, **options)
