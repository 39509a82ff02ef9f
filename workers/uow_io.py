"""What a running unit of work reads and emits besides its output (SPEC section 12).

- **Payload.** Loaded from the store once the unit of work is claimed (:func:`with_payload`): a
  worker class reads ``uow.payload`` (bytes), a command the file ``$TACTUS_PAYLOAD``.
- **Arguments.** A command reads its unit of work's ``arguments`` as JSON from the file
  ``$TACTUS_ARGUMENTS`` (a worker class has ``uow.arguments``).
- **Messages.** A command appends lines to the file ``$TACTUS_MESSAGES``, read while it runs
  (:class:`MessageFile`); a worker class calls ``self.message(text)``. :class:`Messages` takes
  both to the store in the order they came, at most every :data:`FLUSH_INTERVAL` seconds and
  once more before the outcome is recorded, so the last message is stored before the unit of
  work ends.

Messages are best effort: while the store is away they wait in memory (at most
:data:`MAX_PENDING`), and those still waiting when the attempt ends are logged and left out. The
outcome never waits for them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from db.errors import StoreUnavailable, TactusError
from db.payloads import message_text

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    from db.clock import Clock
    from db.models import UnitOfWork
    from db.store import Store

log = logging.getLogger(f"tactus.{__name__}")

#: Seconds between two writes of a running unit of work's messages.
FLUSH_INTERVAL = 0.5
#: Messages kept in memory while the store does not take them; later ones are left out.
MAX_PENDING = 10_000
#: Bytes of ``$TACTUS_MESSAGES`` read at once (what is left is read at the next poll).
READ_BYTES = 1024 * 1024
#: Bytes of a line without its end kept waiting for it; more are taken as a message then.
LINE_BYTES = 64 * 1024
#: Names of the files a command finds in its folder.
ARGUMENTS_FILE, PAYLOAD_FILE, MESSAGES_FILE = "arguments.json", "payload", "messages.txt"


def with_payload(store: Store, uow: UnitOfWork) -> UnitOfWork:
    """``uow`` with its payload's bytes in ``uow.payload`` (as it is when it has none).

    Raises:
        NotFound: its ``payload_id`` names no stored payload.
    """
    if uow.payload_id is None or uow.payload is not None:
        return uow
    return replace(uow, payload=store.get_payload(uow.payload_id).data)


def command_files(folder: str, uow: UnitOfWork) -> dict[str, str]:
    """Write a command's input files into ``folder``; their environment variables.

    ``$TACTUS_ARGUMENTS`` holds the arguments as JSON, ``$TACTUS_MESSAGES`` is empty (the
    command appends to it), and ``$TACTUS_PAYLOAD`` holds the payload's bytes when the unit of
    work has one (loaded by :func:`with_payload`).
    """
    files = {
        "TACTUS_ARGUMENTS": os.path.join(folder, ARGUMENTS_FILE),
        "TACTUS_MESSAGES": os.path.join(folder, MESSAGES_FILE),
    }
    with open(files["TACTUS_ARGUMENTS"], "w", encoding="utf-8") as handle:
        json.dump(dict(uow.arguments), handle)
    with open(files["TACTUS_MESSAGES"], "wb"):
        pass
    if uow.payload is not None:
        files["TACTUS_PAYLOAD"] = os.path.join(folder, PAYLOAD_FILE)
        with open(files["TACTUS_PAYLOAD"], "wb") as handle:
            handle.write(uow.payload)
    return files


class MessageFile:
    """The lines a command appends to its messages file, each read once, in order.

    A line counts once its newline is written; the last one without a newline is read at the end
    (``final``). A file the command truncated or replaced is read again from its start.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def read(self, *, final: bool = False) -> list[str]:
        """The lines written since the last read (blank ones left out)."""
        try:
            size = os.stat(self.path).st_size
        except OSError:
            return []
        if size < self._offset:
            self._offset, self._partial = 0, b""
        lines: list[bytes] = []
        while size > self._offset:
            try:
                with open(self.path, "rb") as handle:
                    handle.seek(self._offset)
                    data = handle.read(min(READ_BYTES, size - self._offset))
            except OSError:
                break
            if not data:
                break
            self._offset += len(data)
            *complete, self._partial = (self._partial + data).split(b"\n")
            lines += complete
            if len(self._partial) > LINE_BYTES:
                # a line that never ends: what came so far is one message (cut), not memory
                lines.append(self._partial)
                self._partial = b""
            if not final:
                break  # the rest at the next poll: a long backlog never stalls the run
        if final and self._partial:
            lines.append(self._partial)
            self._partial = b""
        texts = (line.decode("utf-8", errors="replace") for line in lines)
        return [message_text(text) for text in texts if text.strip()]


class Messages:
    """The messages of one attempt on their way to the store, in the order they came.

    :meth:`add` may be called from any thread (a worker class's executor thread); :meth:`flush`
    and :meth:`close` from the slot's thread.
    """

    def __init__(
        self,
        store: Store,
        uow: UnitOfWork,
        *,
        limit: int,
        clock: Clock,
        interval: float = FLUSH_INTERVAL,
    ) -> None:
        self._store = store
        self._uow_id = uow.id
        self._attempt = uow.attempt
        self._limit = limit
        self._clock = clock
        self._interval = interval
        self._lock = threading.Lock()
        self._pending: list[tuple[datetime, str]] = []
        self._left_out = 0
        self._last_flush = time.monotonic()
        self._warned = False

    def add(self, text: str) -> None:
        """One message, stamped now."""
        self.extend([text])

    def extend(self, texts: Iterable[str]) -> None:
        """Messages in order, stamped now."""
        now = self._clock.now()
        with self._lock:
            for text in texts:
                if len(self._pending) >= MAX_PENDING:
                    self._left_out += 1
                    continue
                self._pending.append((now, message_text(str(text))))

    def flush(self, *, force: bool = False) -> None:
        """Write what waits, if :data:`FLUSH_INTERVAL` passed since the last write (or
        ``force``). A store that is away keeps them waiting; any other refusal drops them."""
        if not force and time.monotonic() - self._last_flush < self._interval:
            return
        self._last_flush = time.monotonic()
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            self._store.append_messages(self._uow_id, self._attempt, batch, limit=self._limit)
        except StoreUnavailable as exc:
            with self._lock:
                room = MAX_PENDING - len(self._pending)
                self._left_out += max(0, len(batch) - room)
                self._pending = batch[:room] + self._pending
            if not self._warned:
                self._warned = True
                log.warning("uow %s: messages wait for the store: %s", self._uow_id, exc)
        except TactusError as exc:
            log.warning(
                "uow %s: %d message(s) refused by the store: %s", self._uow_id, len(batch), exc
            )

    def close(self) -> None:
        """Write what waits, once more, before the outcome; say what is left out."""
        self.flush(force=True)
        with self._lock:
            lost = self._left_out + len(self._pending)
            self._pending, self._left_out = [], 0
        if lost:
            log.warning("uow %s: %d message(s) left out (the store was away)", self._uow_id, lost)
