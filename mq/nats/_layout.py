"""Where a queue lives on JetStream: its stream, subjects and durable consumers.

A queue name is ``<queue_prefix>.<rest>`` (``mq.message.process_queue``), and the prefix names
an installation. Every queue whose name starts with the same first token shares one stream,
``tactus_<installation>``, which owns the subjects ``tactus.<installation>.>``. In it, queue
``q`` is two subjects and two durable pull consumers:

- ``tactus.<installation>.q.<token>``: the messages ready for delivery, consumed through the
  durable ``q_<token>`` (AckWait = the visibility timeout);
- ``tactus.<installation>.d.<token>``: delayed messages, each with its delay in a header,
  consumed through the durable ``d_<token>`` by the queue's consumers' mover
  (``_mover.py``), which moves each into the first subject once it is due.

``<token>`` is the whole queue name in one subject token: NATS subjects, stream and consumer
names treat ``.`` as a separator or refuse it, and our queue names contain dots
(``tactus.etl.dead``). :func:`token` keeps ``[A-Za-z0-9_]``, writes ``.`` as ``-`` and any
other character as ``~`` and two hex digits: one queue, one token, and no two queues alike.
Each consumer filters one exact subject, so no two overlap, as a WorkQueue stream requires.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from nats.js import api

#: The first token of every subject and stream this backend makes.
ROOT = "tactus"
#: Header of a message in a delay subject: the delay in milliseconds, counted from the moment
#: the server stored it (its stream timestamp), so that the publisher's clock does not matter.
DELAY_HEADER = "Tactus-Delay-Ms"
#: JetStream's de-duplication header: a publish tried again carries the same id, and the
#: server keeps one copy within the stream's duplicate window.
MSG_ID_HEADER = "Nats-Msg-Id"
#: The stream's de-duplication window: longer than any retry of one publish.
DUPLICATE_WINDOW = timedelta(minutes=2)
#: How long a mover may hold a delayed message before the server gives it to another mover.
MOVER_ACK_WAIT = timedelta(seconds=30)

_KEPT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def token(name: str) -> str:
    """``name`` as one subject token that is also a valid stream or consumer name."""
    out = []
    for char in name:
        if char in _KEPT:
            out.append(char)
        elif char == ".":
            out.append("-")
        else:
            out.extend(f"~{byte:02X}" for byte in char.encode())
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Place:
    """Stream, subjects and consumer names of one queue."""

    queue: str
    stream: str
    #: Subject of the messages ready for delivery.
    ready: str
    #: Subject of the delayed messages.
    delayed: str
    #: Durable pull consumer of :attr:`ready`.
    consumer: str
    #: Durable pull consumer of :attr:`delayed` (the mover's).
    mover: str
    #: Subjects of this stream (the stream's ``subjects``).
    subjects: str
    #: Matches :attr:`ready` and :attr:`delayed` only (for the per-subject counts).
    both: str


def place(queue: str) -> Place:
    """Where ``queue`` lives (see the module docstring)."""
    installation = token(queue.split(".", 1)[0])
    tok = token(queue)
    base = f"{ROOT}.{installation}"
    return Place(
        queue=queue,
        stream=f"{ROOT}_{installation}",
        ready=f"{base}.q.{tok}",
        delayed=f"{base}.d.{tok}",
        consumer=f"q_{tok}",
        mover=f"d_{tok}",
        subjects=f"{base}.>",
        both=f"{base}.*.{tok}",
    )


def stream_config(where: Place) -> api.StreamConfig:
    """The installation's stream: on disk, WorkQueue retention (a message is gone once its
    consumer acks it), no limits, publishes de-duplicated by :data:`MSG_ID_HEADER`."""
    return api.StreamConfig(
        name=where.stream,
        subjects=[where.subjects],
        retention=api.RetentionPolicy.WORK_QUEUE,
        storage=api.StorageType.FILE,
        discard=api.DiscardPolicy.OLD,
        duplicate_window=DUPLICATE_WINDOW.total_seconds(),
        num_replicas=1,
    )


def consumer_config(where: Place, visibility: timedelta) -> api.ConsumerConfig:
    """The queue's durable pull consumer: explicit acks, redelivered ``visibility`` after a
    delivery that was neither acked nor extended; no limit on deliveries (``reject``
    dead-letters) nor on messages in flight (each of our consumers keeps its ``prefetch``)."""
    return _durable(where.consumer, where.ready, visibility)


def mover_config(where: Place) -> api.ConsumerConfig:
    """The durable consumer of the queue's delayed messages."""
    return _durable(where.mover, where.delayed, MOVER_ACK_WAIT)


def _durable(name: str, subject: str, ack_wait: timedelta) -> api.ConsumerConfig:
    return api.ConsumerConfig(
        name=name,
        durable_name=name,
        filter_subject=subject,
        deliver_policy=api.DeliverPolicy.ALL,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=ack_wait.total_seconds(),
        max_deliver=-1,
        max_ack_pending=-1,
        replay_policy=api.ReplayPolicy.INSTANT,
    )
