"""The fault proxy itself, against a small echo server: a proxy that forwarded nothing, dropped
nothing or refused nothing would let every fault test pass without a fault, so each control is
proven here on raw sockets before the fault tests rely on it."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from tests.faults.proxy import TcpProxy
from tests.faults.tripwire import Tripwire
from tests.polling import wait_until


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: EchoServer = self.server  # type: ignore[assignment]
        with server.lock:
            server.accepted += 1
        try:
            while data := self.request.recv(65536):
                with server.lock:
                    server.received += data
                self.request.sendall(data)
        except OSError:
            pass
        finally:
            with server.lock:
                server.closed += 1


class EchoServer(socketserver.ThreadingTCPServer):
    """Echoes every byte back; counts the connections it accepted and saw closed."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.lock = threading.Lock()
        self.accepted = 0
        self.closed = 0
        self.received = b""


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[TcpProxy]:
    with TcpProxy(*echo.server_address, name="echo-proxy") as p:
        yield p


def connect(proxy: TcpProxy) -> socket.socket:
    sock = socket.create_connection(proxy.address, timeout=5)
    sock.settimeout(5)
    return sock


def round_trip(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def is_closed(sock: socket.socket) -> bool:
    """True once the peer closed or reset the connection."""
    sock.settimeout(0.05)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_proxy_forwards_both_ways_and_counts(proxy, echo):
    # given a client through the proxy
    with connect(proxy) as sock:
        # when it sends a megabyte in one go (more than the socket buffers hold)
        payload = bytes(range(256)) * 4096
        # then every byte comes back in order, and the counters saw one connection
        assert round_trip(sock, payload) == payload
        assert proxy.connections_seen == 1 and proxy.connections_open == 1
        assert proxy.bytes_up == len(payload) and proxy.bytes_down == len(payload)
    # a client's close reaches the server and the proxy forgets the pair
    wait_until(lambda: echo.closed == 1, 5, what="the echo server to see the close")
    wait_until(lambda: proxy.connections_open == 0, 5, what="the proxy to forget the pair")


def test_proxy_drop_closes_both_sides_of_every_connection(proxy, echo):
    # given two open connections
    socks = [connect(proxy), connect(proxy)]
    for sock in socks:
        assert round_trip(sock, b"ping") == b"ping"
    # when
    dropped = proxy.drop()
    # then both clients see the connection end, and so does the server, at once
    assert dropped == 2 and proxy.connections_open == 0
    wait_until(lambda: all(is_closed(s) for s in socks), 5, what="the clients to see the drop")
    wait_until(lambda: echo.closed == 2, 5, what="the server to see the drop")
    # and a new connection works, since drop alone does not refuse
    with connect(proxy) as sock:
        assert round_trip(sock, b"again") == b"again"
    for sock in socks:
        sock.close()


def test_proxy_refuse_and_accept_on_the_same_port(proxy, echo):
    # given an open connection (accepted: one still in the listen backlog would be reset)
    port = proxy.port
    with connect(proxy) as old:
        assert round_trip(old, b"first") == b"first"
        # when the proxy refuses
        proxy.refuse()
        # then a new connection is refused by the kernel, the open one still works
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(proxy.address, timeout=2)
        assert round_trip(old, b"still") == b"still"
        # when it accepts again: the same port, a working connection
        proxy.accept()
        assert proxy.port == port
        with connect(proxy) as new:
            assert round_trip(new, b"back") == b"back"


def test_proxy_outage_drops_refuses_then_comes_back(proxy, echo):
    # given an open connection
    sock = connect(proxy)
    assert round_trip(sock, b"x") == b"x"
    seen = proxy.connections_seen
    # when an outage happens
    with proxy.outage():
        # then the open connection is gone and new ones are refused; the server saw nothing new
        wait_until(lambda: is_closed(sock), 5, what="the open connection to be dropped")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(proxy.address, timeout=2)
        assert not proxy.listening and proxy.connections_seen == seen
    # and afterwards connections work again
    with connect(proxy) as again:
        assert round_trip(again, b"y") == b"y"
    sock.close()


def test_proxy_refuses_a_client_when_its_target_is_gone(echo):
    # given a proxy whose target port has nothing listening (bound, so that no one, the proxy
    # included, is handed that port meanwhile)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
        with TcpProxy("127.0.0.1", dead_port) as proxy:
            # then the accepted client is reset at once, as the server's refusal would be
            # (so fast that the connect itself may already see the reset)
            try:
                sock = connect(proxy)
            except ConnectionResetError:
                return
            with sock:
                wait_until(lambda: is_closed(sock), 5, what="the client to be closed")


def test_proxy_latency_delays_each_direction(proxy):
    with connect(proxy) as sock:
        assert round_trip(sock, b"warm") == b"warm"
        # when 0.3 s are added to every forwarded chunk
        proxy.latency(0.3)
        started = time.monotonic()
        assert round_trip(sock, b"slow") == b"slow"
        elapsed = time.monotonic() - started
        # then the round trip takes both delays, and no more than a little besides
        assert 0.6 <= elapsed < 1.5, elapsed
        proxy.latency(0)
        started = time.monotonic()
        assert round_trip(sock, b"fast") == b"fast"
        assert time.monotonic() - started < 0.3


def test_proxy_blackhole_holds_data_until_healed(proxy, echo):
    # given an open connection
    with connect(proxy) as sock:
        assert round_trip(sock, b"before") == b"before"
        # when the proxy partitions
        proxy.blackhole()
        sock.sendall(b"held")
        # then nothing comes back, and a new connection is accepted but not forwarded
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(10)
        late = connect(proxy)
        assert echo.accepted == 1
        # when it heals, what waited arrives and the held client reaches the server
        proxy.blackhole(False)
        sock.settimeout(5)
        assert sock.recv(10) == b"held"
        assert round_trip(late, b"late") == b"late"
        wait_until(lambda: echo.accepted == 2, 5, what="the held client to be connected")
        late.close()


def test_proxy_close_leaves_nothing_listening(echo):
    proxy = TcpProxy(*echo.server_address).start()
    sock = connect(proxy)
    # when
    proxy.close()
    # then the port refuses, the client is closed, and the loop thread ended
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(proxy.address, timeout=2)
    wait_until(lambda: is_closed(sock), 5, what="the client to be closed")
    assert not any(t.name == "proxy-loop" for t in threading.enumerate())
    with contextlib.suppress(OSError):
        sock.close()


def test_proxy_tripwire_holds_what_follows_the_chosen_commit(proxy, echo):
    # given a tripwire on the second "write then commit" of any connection
    fired = []
    wire = Tripwire(arm=b"INSERT", then=b"COMMIT", count=2, action=lambda: fired.append(1))
    proxy.tripwire(wire)
    with connect(proxy) as one, connect(proxy) as two:
        assert round_trip(one, b"BEGIN; INSERT x") == b"BEGIN; INSERT x"
        assert round_trip(one, b"COMMIT") == b"COMMIT"
        assert round_trip(two, b"SELECT; COMMIT") == b"SELECT; COMMIT"  # no write: not counted
        assert round_trip(two, b"INSERT y; COMMIT") == b"INSERT y; COMMIT"
        assert not fired and wire.commits == 2
        # when anything is sent next, on either connection
        one.sendall(b"UPDATE link")
        # then it is held, the action runs once, and every connection is dropped
        assert wire.done.wait(5) and fired == [1]
        wait_until(lambda: is_closed(one) and is_closed(two), 5, what="both dropped")
        assert echo.accepted == 2 and proxy.connections_open == 0
        assert b"UPDATE" not in echo.received
