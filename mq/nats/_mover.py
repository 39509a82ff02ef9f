"""Delayed delivery: the mover that brings a queue's delayed messages into it when they are due.

nats-server 2.9 (the one we run) cannot hold a published message back: scheduled messages came
only with 2.12. So :meth:`NatsBroker.publish` with a delay stores the message under the queue's
delay subject with its delay in a header (``_layout.DELAY_HEADER``), and a mover, a task on the
event loop of each broker that has a consumer of the queue open, pulls from the delay subject's
durable consumer:

- a message not yet due is Nak'ed with the rest of its delay: the server holds it back and
  delivers it again, to a waiting mover, once that has passed (a ``-NAK {"delay": ns}``);
- a due one is published to the queue's ready subject, the publish ack awaited, then acked.
  The copy carries a ``Nats-Msg-Id`` made from the delayed message's stream sequence, so a mover
  that dies between the two and a second mover that moves it again make one message, not two.

Due means the server's stored time plus the delay: the publisher's clock does not matter. A
delayed message waits in the stream whether or not a mover runs, so it counts in ``depth`` and
is moved once any consumer of its queue is open; nothing but a consumer needs it moved.
The movers of several brokers share one durable consumer: each delayed message is in one
mover's hands at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from nats import errors as nats_errors

from mq.nats._layout import DELAY_HEADER, MSG_ID_HEADER
from mq.nats._link import RECONNECT_WAIT, explain

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

    from mq.nats._declared import Declared
    from mq.nats._layout import Place
    from mq.nats._link import Link

log = logging.getLogger(f"tactus.{__name__}")

#: Delayed messages one pull brings at most.
MOVE_BATCH = 100
#: Seconds one pull waits for a delayed message to be due (or a new one).
MOVE_WAIT = 5.0
#: Longest pause between two tries after a failure (the server is away).
MOVE_BACKOFF_MAX = 5.0


async def move_delayed(link: Link, declared: Declared, where: Place) -> None:
    """Move ``where``'s delayed messages into its queue as they fall due, until cancelled."""
    subscription = None
    generation = -1
    failures = 0
    try:
        while True:
            try:
                _, js = await link.connection()
                if subscription is None or generation != link.generation:
                    await declared.mover(js, where)
                    subscription = await js.pull_subscribe_bind(
                        durable=where.mover, stream=where.stream
                    )
                    generation = link.generation
                try:
                    messages = await subscription.fetch(MOVE_BATCH, timeout=MOVE_WAIT)
                except nats_errors.TimeoutError:
                    failures = 0
                    continue
                for msg in messages:
                    await _move(js, where, msg)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the server is away or busy: wait, try again
                failures += 1
                if failures == 1:
                    log.debug("nats: mover of %s: %s; trying again", where.queue, explain(exc))
                declared.forget(where)
                subscription = await _dropped(subscription)
                await asyncio.sleep(min(RECONNECT_WAIT * 2**failures, MOVE_BACKOFF_MAX))
    finally:
        await _dropped(subscription)


async def _dropped(subscription) -> None:
    """Unsubscribe (its pull requests then die with it); None."""
    if subscription is not None:
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()


async def _move(js: JetStreamContext, where: Place, msg: Msg) -> None:
    """Hold ``msg`` back for the rest of its delay, or move it into the queue when due."""
    try:
        delay = timedelta(milliseconds=int((msg.headers or {}).get(DELAY_HEADER, "0")))
    except ValueError:
        delay = timedelta(0)  # not ours to judge: deliver it, the consumer decides
    meta = msg.metadata
    remaining = (meta.timestamp + delay - datetime.now(UTC)).total_seconds()
    if remaining > 0:
        await msg.nak(delay=remaining)
        return
    moved_id = f"moved:{where.stream}:{meta.sequence.stream}"
    await js.publish(where.ready, msg.data, headers={MSG_ID_HEADER: moved_id})
    await msg.ack()
