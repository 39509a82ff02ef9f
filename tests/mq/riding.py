"""A drill both network brokers run: a publisher and a consumer thread across an outage."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from tests.polling import wait_until

if TYPE_CHECKING:
    from collections.abc import Callable

    from mq.broker import Broker

#: Longest wait for the first messages.
DEADLINE = 20.0


def ride_out_an_outage(
    broker: Broker, queue: str, outage: Callable[[Callable[[], None]], None]
) -> None:
    """Publish and consume ``queue`` on ``broker`` (a patient one) while ``outage(during)``
    takes the server away and brings it back; fail unless every message arrived, and arrived
    twice only as a redelivery.

    ``outage(during)`` makes the server unreachable, calls ``during``, then makes it reachable.
    """
    # given a consumer thread consuming continuously
    received: list[tuple[bytes, bool]] = []
    errors: list[BaseException] = []
    done = threading.Event()
    broker.declare(queue)

    def consume() -> None:
        try:
            with broker.consumer(queue, prefetch=10) as consumer:
                while not done.is_set():
                    delivery = consumer.get(0.2)
                    if delivery is not None:
                        received.append((delivery.body, delivery.redelivered))
                        consumer.ack(delivery)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    def bodies() -> set[bytes]:
        return {body for body, _ in received}

    consumer_thread = threading.Thread(target=consume)
    consumer_thread.start()
    before = [b"before-%02d" % i for i in range(30)]
    during = [b"during-%02d" % i for i in range(20)]
    after = [b"after-%02d" % i for i in range(10)]
    publish_errors: list[BaseException] = []

    def publish_during() -> None:
        try:
            broker.publish_many((queue, body) for body in during[:10])
            for body in during[10:]:
                broker.publish(queue, body)
        except BaseException as exc:  # reported by the test thread
            publish_errors.append(exc)

    publisher_thread = threading.Thread(target=publish_during)
    try:
        broker.publish_many((queue, body) for body in before)
        wait_until(lambda: len(received) >= 10, deadline=DEADLINE, what="first deliveries")

        # when the broker goes down while both publish and consume, and comes back
        def while_down() -> None:
            publisher_thread.start()
            time.sleep(1.0)

        outage(while_down)
        publisher_thread.join(60)
        broker.publish_many((queue, body) for body in after)
        # then nothing was lost; a message arrives twice only if it was redelivered
        expected = set(before + during + after)
        wait_until(lambda: errors or expected <= bodies(), deadline=60, what="every message")
    finally:
        done.set()
        consumer_thread.join(DEADLINE)
    assert not errors and not publish_errors, (errors, publish_errors)
    assert bodies() == expected
    seen: set[bytes] = set()
    for body, redelivered in received:
        assert body not in seen or redelivered, f"{body!r} delivered twice, not as a redelivery"
        seen.add(body)
    assert [body for body, _ in received if body.startswith(b"after")] == after
