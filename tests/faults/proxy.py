"""A TCP proxy the fault tests own: put it between a daemon and a server, then break the link.

One :class:`TcpProxy` listens on ``127.0.0.1`` (a free port) and forwards every connection to one
target. Its controls act at once and return when done, from any thread:

- :meth:`TcpProxy.drop`: close every open connection, both sides, with a reset (as when the
  server's machine vanishes);
- :meth:`TcpProxy.refuse` / :meth:`TcpProxy.accept`: stop listening (a new connection is refused
  by the kernel) and listen again on the same port;
- :meth:`TcpProxy.down` / :meth:`TcpProxy.up`, or ``with proxy.outage():``: drop + refuse, then
  accept again; the server itself never notices anything but closed connections;
- :meth:`TcpProxy.latency`: hold every forwarded chunk that many seconds;
- :meth:`TcpProxy.blackhole`: a partition: connections are accepted but nothing is forwarded
  either way (data waits, as in the kernel's buffers) until it heals;
- :meth:`TcpProxy.tripwire`: a ``Tripwire`` (``tripwire.py``) kills the client between two
  chosen writes;
- counters: :attr:`TcpProxy.connections_seen`, :attr:`TcpProxy.connections_open`, bytes each way.

All sockets are served by one selector loop in one thread, so a control is one command run by
that thread between two rounds of I/O: no lock is held while bytes move, and no control can
interleave with half a forward. Upstream connects are blocking with a short timeout: the targets
are local servers that answer or refuse at once.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import queue
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.faults.tripwire import Tripwire

log = logging.getLogger("tests.faults.proxy")

#: Bytes read from a socket in one go.
CHUNK = 65536
#: Bytes queued towards one side before the proxy stops reading from the other (back pressure).
HIGH_WATER = 4 * 1024 * 1024
#: Longest sleep of the loop between two looks at its command queue (seconds).
TICK = 0.05
#: Seconds a connect to the target may take.
CONNECT_TIMEOUT = 2.0
#: Seconds a control waits for the loop to run it.
CONTROL_TIMEOUT = 10.0


@dataclass(eq=False)
class _Side:
    """One socket of a connection pair and what waits to be written to it."""

    sock: socket.socket
    #: (due monotonic time, bytes) chunks to write to this socket, oldest first.
    outbox: deque[tuple[float, bytes]] = field(default_factory=deque)
    #: The peer sent EOF: nothing more will be read from this socket.
    read_closed: bool = False
    #: We shut down writing to this socket (after the peer's EOF and an empty outbox).
    write_closed: bool = False
    #: The selector events this socket is registered for (0: not registered).
    watching: int = 0

    def queued(self) -> int:
        return sum(len(data) for _, data in self.outbox)


@dataclass(eq=False)
class _Pair:
    """A client connection and its upstream connection (None while blackholed before connect)."""

    client: _Side
    upstream: _Side | None

    def other(self, side: _Side) -> _Side | None:
        return self.upstream if side is self.client else self.client


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target``; see the module docstring for the controls."""

    def __init__(self, target_host: str, target_port: int, *, name: str = "proxy") -> None:
        self.target = (target_host, target_port)
        self.name = name
        self.port = 0
        #: Connections accepted since start.
        self.connections_seen = 0
        #: Connections dropped by :meth:`drop` since start.
        self.connections_dropped = 0
        #: Bytes forwarded client -> target and target -> client.
        self.bytes_up = 0
        self.bytes_down = 0
        self._latency = 0.0
        self._blackholed = False
        self._tripwire: Tripwire | None = None
        self._listener: socket.socket | None = None
        self._pairs: list[_Pair] = []
        self._owner: dict[socket.socket, tuple[_Pair, _Side]] = {}
        self._selector = selectors.DefaultSelector()
        self._commands: queue.Queue[tuple[Callable[[], Any], threading.Event, list[Any]]] = (
            queue.Queue()
        )
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> TcpProxy:
        """Listen on a free port and start forwarding; returns self."""
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._listen()
        self._thread = threading.Thread(target=self._loop, name=f"{self.name}-loop", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Close every connection and the listener, and end the loop thread."""
        if self._thread is None:
            return
        self._run(self._shutdown)
        self._thread.join(CONTROL_TIMEOUT)
        self._thread = None
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    # -- controls ---------------------------------------------------------------------------------

    def drop(self) -> int:
        """Close every open connection now, both sides, with a reset; returns how many."""
        return self._run(self._drop_all)

    def refuse(self) -> None:
        """Stop listening: a new connection is refused until :meth:`accept`."""
        self._run(self._close_listener)

    def accept(self) -> None:
        """Listen again, on the same port."""
        self._run(self._listen)

    def down(self) -> int:
        """The target is gone: drop every connection and refuse new ones; returns how many
        were dropped."""

        def both() -> int:
            self._close_listener()
            return self._drop_all()

        return self._run(both)

    def up(self) -> None:
        """The target is back: accept connections again."""
        self.accept()

    @contextlib.contextmanager
    def outage(self) -> Iterator[TcpProxy]:
        """``with proxy.outage(): ...``: down for the block, up afterwards (also on error)."""
        self.down()
        try:
            yield self
        finally:
            self.up()

    def latency(self, seconds: float) -> float:
        """Hold every chunk read from now on ``seconds`` before writing it on; 0 ends it.
        Returns the previous latency."""
        if seconds < 0:
            raise ValueError(f"latency must not be negative, got {seconds}")

        def set_latency() -> float:
            previous, self._latency = self._latency, seconds
            return previous

        return self._run(set_latency)

    def blackhole(self, on: bool = True) -> None:
        """Partition (``on``) or heal: while partitioned, connections are accepted, nothing is
        read or forwarded, and new ones are not connected upstream; after healing, what waited
        flows on and held clients are connected."""

        def set_blackhole() -> None:
            self._blackholed = on
            if not on:
                for pair in list(self._pairs):
                    if pair.upstream is None:
                        self._connect_upstream(pair)
            self._update_interest()

        self._run(set_blackhole)

    def tripwire(self, wire: Tripwire | None) -> None:
        """Watch what clients send with ``wire`` (None removes it); see :class:`Tripwire`."""

        def set_wire() -> None:
            self._tripwire = wire

        self._run(set_wire)

    @property
    def connections_open(self) -> int:
        return self._run(lambda: len(self._pairs))

    @property
    def listening(self) -> bool:
        return self._run(lambda: self._listener is not None)

    # -- the loop ---------------------------------------------------------------------------------

    def _run(self, command: Callable[[], Any]) -> Any:
        """Run ``command`` in the loop thread and return its result (or raise its error)."""
        if self._thread is None or threading.current_thread() is self._thread:
            return command()
        done = threading.Event()
        result: list[Any] = []
        self._commands.put((command, done, result))
        self._wake_w.send(b"x")
        if not done.wait(CONTROL_TIMEOUT):
            raise RuntimeError(f"{self.name}: the proxy loop did not answer")
        if result and isinstance(result[0], BaseException):
            raise result[0]
        return result[0] if result else None

    def _loop(self) -> None:
        while not self._stopping:
            self._run_commands()
            if self._stopping:
                break
            timeout = self._next_due_in()
            for key, events in self._selector.select(timeout):
                try:
                    self._on_event(key, events)
                except OSError as exc:
                    log.debug("%s: socket error: %s", self.name, exc)
            self._flush_due()
            self._update_interest()
        self._run_commands()

    def _run_commands(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        while True:
            try:
                command, done, result = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                result.append(command())
            except BaseException as exc:  # handed back to the caller's thread
                result.append(exc)
            finally:
                done.set()

    def _next_due_in(self) -> float:
        now = time.monotonic()
        due = [
            side.outbox[0][0]
            for pair in self._pairs
            for side in (pair.client, pair.upstream)
            if side is not None and side.outbox
        ]
        if not due:
            return TICK
        return max(0.0, min(TICK, min(due) - now))

    def _on_event(self, key: selectors.SelectorKey, events: int) -> None:
        if key.data == "wake":
            return
        if key.data == "listener":
            self._accept_one()
            return
        pair, side = self._owner.get(key.fileobj, (None, None))  # type: ignore[arg-type]
        if pair is None or side is None:
            return
        if events & selectors.EVENT_READ:
            self._read(pair, side)
        if pair in self._pairs and events & selectors.EVENT_WRITE:
            self._write(pair, side)

    def _accept_one(self) -> None:
        assert self._listener is not None
        try:
            sock, _ = self._listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connections_seen += 1
        pair = _Pair(client=_Side(sock), upstream=None)
        self._pairs.append(pair)
        self._register(pair, pair.client)
        if not self._blackholed:
            self._connect_upstream(pair)

    def _connect_upstream(self, pair: _Pair) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            log.debug("%s: target %s:%s: %s", self.name, *self.target, exc)
            self._close_pair(pair, reset=True)
            return
        upstream.setblocking(False)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair.upstream = _Side(upstream)
        self._register(pair, pair.upstream)

    def _register(self, pair: _Pair, side: _Side) -> None:
        self._owner[side.sock] = (pair, side)
        self._watch(side, 0 if self._blackholed else selectors.EVENT_READ)

    def _read(self, pair: _Pair, side: _Side) -> None:
        other = pair.other(side)
        if other is None or self._blackholed or side.read_closed:
            return
        try:
            data = side.sock.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close_pair(pair, reset=True)
            return
        if not data:
            side.read_closed = True
            self._maybe_finish(pair)
            return
        if side is pair.client:
            self.bytes_up += len(data)
            wire = self._tripwire
            if wire is not None and wire.hold(pair, data):
                if wire.tripped and not wire.done.is_set():
                    wire.fire()
                    self._drop_all()
                return
        else:
            self.bytes_down += len(data)
        other.outbox.append((time.monotonic() + self._latency, data))
        self._write(pair, other)

    def _write(self, pair: _Pair, side: _Side) -> None:
        now = time.monotonic()
        while side.outbox and side.outbox[0][0] <= now and not self._blackholed:
            due, data = side.outbox[0]
            try:
                sent = side.sock.send(data)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._close_pair(pair, reset=True)
                return
            if sent < len(data):
                side.outbox[0] = (due, data[sent:])
                return
            side.outbox.popleft()
        self._maybe_finish(pair)

    def _maybe_finish(self, pair: _Pair) -> None:
        """Pass an EOF on once everything before it was written; close a pair done both ways."""
        if pair not in self._pairs:
            return
        sides = [pair.client, pair.upstream]
        if pair.upstream is None:
            if pair.client.read_closed:
                self._close_pair(pair, reset=False)
            return
        for side in sides:
            assert side is not None
            peer = pair.other(side)
            assert peer is not None
            if side.read_closed and not peer.outbox and not peer.write_closed:
                with contextlib.suppress(OSError):
                    peer.sock.shutdown(socket.SHUT_WR)
                peer.write_closed = True
        if all(s is not None and s.read_closed and s.write_closed for s in sides):
            self._close_pair(pair, reset=False)

    def _flush_due(self) -> None:
        for pair in list(self._pairs):
            for side in (pair.client, pair.upstream):
                if side is not None and side.outbox and pair in self._pairs:
                    self._write(pair, side)

    def _update_interest(self) -> None:
        """Read only where the other side's outbox has room; write only where data is due."""
        now = time.monotonic()
        for pair in self._pairs:
            for side in (pair.client, pair.upstream):
                if side is None:
                    continue
                other = pair.other(side)
                events = 0
                if (
                    not side.read_closed
                    and not self._blackholed
                    and other is not None
                    and other.queued() < HIGH_WATER
                ):
                    events |= selectors.EVENT_READ
                if side.outbox and side.outbox[0][0] <= now and not self._blackholed:
                    events |= selectors.EVENT_WRITE
                self._watch(side, events)

    def _watch(self, side: _Side, events: int) -> None:
        """Watch ``side`` for ``events``; a selector cannot watch for nothing, so a socket with
        no interest (back pressure, a partition, data not due yet) is unregistered meanwhile."""
        if events == side.watching:
            return
        if side.watching == 0:
            self._selector.register(side.sock, events, "conn")
        elif events == 0:
            self._selector.unregister(side.sock)
        else:
            self._selector.modify(side.sock, events, "conn")
        side.watching = events

    def _close_pair(self, pair: _Pair, *, reset: bool) -> None:
        if pair not in self._pairs:
            return
        self._pairs.remove(pair)
        for side in (pair.client, pair.upstream):
            if side is None:
                continue
            self._owner.pop(side.sock, None)
            if side.watching:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._selector.unregister(side.sock)
                side.watching = 0
            if reset:
                # SO_LINGER 0: close sends a reset, as a vanished server's kernel would
                with contextlib.suppress(OSError):
                    side.sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
            with contextlib.suppress(OSError):
                side.sock.close()

    def _drop_all(self) -> int:
        pairs = list(self._pairs)
        for pair in pairs:
            self._close_pair(pair, reset=True)
        self.connections_dropped += len(pairs)
        return len(pairs)

    def _listen(self) -> None:
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("127.0.0.1", self.port))
        except OSError as exc:
            listener.close()
            if exc.errno == errno.EADDRINUSE:
                raise RuntimeError(f"{self.name}: port {self.port} was taken meanwhile") from exc
            raise
        listener.listen(128)
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ, "listener")

    def _close_listener(self) -> None:
        if self._listener is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(self._listener)
        self._listener.close()
        self._listener = None

    def _shutdown(self) -> None:
        self._close_listener()
        self._drop_all()
        self._stopping = True
