"""Messages: versioned JSON carrying ids only (SPEC section 9). The store holds all state."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from db.errors import InvalidInput, MalformedMessage

if TYPE_CHECKING:
    from db.models import UnitOfWork

#: Publishes (queue, body, delay): how the scheduler and the actions reach a broker's write side.
Publish = Callable[[str, bytes, "timedelta | None"], None]

#: Version written into every message and checked on read.
MESSAGE_VERSION = 1
#: Ids and process names a message may carry: what Tactus makes (hex ids, ``[a-z0-9_]`` names),
#: with room to spare, and nothing a store could choke on (NUL, control characters, spaces).
_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:@-]{1,200}")
#: What a message announces: a unit of work to run, a unit of work whose state changed, or a
#: process whose jobs an action changed (``wake``: the scheduler looks at it at once).
KINDS = frozenset({"uow", "uow_status", "wake"})


@dataclass(frozen=True, kw_only=True, slots=True)
class Message:
    """A notification about one unit of work; the receiver reads the unit of work from the store."""

    kind: str
    uow_id: str
    process: str
    version: int = MESSAGE_VERSION

    def encode(self) -> bytes:
        return json.dumps(
            {"v": self.version, "kind": self.kind, "uow_id": self.uow_id, "process": self.process},
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Message:
        """Parse and validate a message body.

        Raises:
            MalformedMessage: not JSON, wrong version, unknown kind or missing ids (``raw`` kept);
                whatever the bytes make the parser raise (a ``RecursionError`` for JSON nested
                too deep, a ``TypeError`` for a body that is not bytes) is a malformed message,
                never an error that could end a consumer's thread.
        """
        try:
            data: Any = json.loads(raw)
        except Exception as exc:  # noqa: BLE001 - see the docstring: no input may escape
            raise MalformedMessage(_as_bytes(raw), f"not JSON ({type(exc).__name__})") from exc
        if not isinstance(data, dict):
            raise MalformedMessage(raw, "not a JSON object")
        version = data.get("v")
        if type(version) is not int or version != MESSAGE_VERSION:
            raise MalformedMessage(raw, f"unsupported version {version!r:.40}")
        kind, uow_id, process = data.get("kind"), data.get("uow_id"), data.get("process")
        # type first: a list or an object is not hashable, and `in KINDS` would raise
        if not isinstance(kind, str) or kind not in KINDS:
            raise MalformedMessage(raw, f"unknown kind {kind!r:.40}")
        for name, value in (("uow_id", uow_id), ("process", process)):
            optional = name == "uow_id" and kind == "wake"
            if not isinstance(value, str) or not (
                (optional and not value) or _ID_PATTERN.fullmatch(value)
            ):
                raise MalformedMessage(raw, f"missing or bad {name}")
        return cls(kind=kind, uow_id=uow_id, process=process)


def _as_bytes(raw: object) -> bytes:
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw)
    return repr(raw).encode(errors="replace")


def uow_message(uow_id: str, process: str) -> Message:
    """The message that asks a worker to run a unit of work."""
    return Message(kind="uow", uow_id=uow_id, process=process)


def status_message(uow_id: str, process: str) -> Message:
    """The message that tells the scheduler a unit of work changed state."""
    return Message(kind="uow_status", uow_id=uow_id, process=process)


def wake_message(process: str) -> Message:
    """The message that asks the scheduler to look at a process now (sent by actions)."""
    return Message(kind="wake", uow_id="", process=process)


def uow_delivery(
    uow: UnitOfWork, prefix: str, now: datetime
) -> tuple[str, bytes, timedelta | None]:
    """(queue, body, delay) announcing ``uow`` to its workers, held back until ``scheduled_at``."""
    delay = uow.scheduled_at - now if uow.scheduled_at and uow.scheduled_at > now else None
    return process_queue(prefix, uow.process), uow_message(uow.id, uow.process).encode(), delay


def process_queue(prefix: str, process: str) -> str:
    """The queue a process's workers consume."""
    return f"{prefix}.{process}"


def status_queue(prefix: str) -> str:
    """The queue the scheduler consumes unit-of-work status changes from."""
    return f"{prefix}.uow_status"


def dead_letter_queue(queue: str) -> str:
    """Where messages of ``queue`` that cannot be parsed or name nothing go."""
    return f"{queue}.dead"


def valid_queue_name(queue: object, limit: int) -> str:
    """``queue`` if it can name a queue of a broker whose names are at most ``limit`` long.

    Raises:
        InvalidInput: not a string of 1 to ``limit`` printable characters without spaces
            (field ``queue``).
    """
    if not isinstance(queue, str) or not queue:
        raise InvalidInput("queue", f"must be a non-empty string (got {queue!r})")
    if len(queue) > limit:
        raise InvalidInput("queue", f"is longer than {limit} characters")
    if not queue.isprintable() or any(ch.isspace() for ch in queue):
        raise InvalidInput("queue", f"must be printable and without spaces (got {queue!r})")
    return queue
