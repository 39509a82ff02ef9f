"""A crash window made deterministic: the proxy kills a client between two chosen writes."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Tripwire:
    """Kills a client at a chosen instant of its conversation with the server: a crash window
    made deterministic.

    It watches what clients send. Once a connection has sent ``arm`` and then ``then`` (a write
    and the commit that makes it durable: ``b"INSERT INTO uows"``, ``b"COMMIT"``) for the
    ``count``-th time, the very next bytes any client sends through the proxy are held and never
    forwarded, ``action`` runs (a SIGKILL of the daemon), and every connection is dropped. So the
    server has durably done everything up to that commit and nothing after it, whatever the
    client tried next: it is killed between two store writes.

    Only one client should talk through a proxy with a tripwire (give that daemon a proxy of its
    own), so that "the next bytes" are that daemon's.
    """

    def __init__(
        self, *, arm: bytes, then: bytes, action: Callable[[], None], count: int = 1
    ) -> None:
        self.arm = arm
        self.then = then
        self.action = action
        self.count = count
        #: Commits seen after ``arm`` so far (all connections).
        self.commits = 0
        self.tripped = False
        #: Set once ``action`` ran.
        self.done = threading.Event()
        self._armed: set[int] = set()

    def hold(self, pair: object, data: bytes) -> bool:
        """Called by the proxy loop with bytes a client sent; True to hold them back."""
        if self.tripped:
            return True
        if self.commits >= self.count:
            self.tripped = True
            return True
        key = id(pair)
        at = data.find(self.arm)
        if at >= 0:
            self._armed.add(key)
        if key in self._armed and data.find(self.then, max(at, 0)) >= 0:
            self._armed.discard(key)
            self.commits += 1
        return False

    def fire(self) -> None:
        try:
            self.action()
        finally:
            self.done.set()
