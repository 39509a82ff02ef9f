"""The store's clock (db/clock.py StoreClock): this machine's clock plus its offset from the
store server's, measured now and then, kept through an outage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from db.clock import FakeClock, StoreClock
from db.errors import StoreUnavailable

LOCAL = datetime(2026, 1, 5, 13, 0, tzinfo=UTC)


class Server:
    def __init__(self, local: FakeClock, skew: timedelta) -> None:
        self.local = local
        self.skew = skew
        self.down = False
        self.asked = 0

    def server_time(self) -> datetime:
        self.asked += 1
        if self.down:
            raise StoreUnavailable("down")
        return self.local.now() + self.skew


def test_the_store_clock_follows_the_servers_time():
    local = FakeClock(LOCAL)
    server = Server(local, timedelta(seconds=-42))
    clock = StoreClock(server, base=local, refresh=timedelta(hours=1))
    assert clock.now() == LOCAL - timedelta(seconds=42)
    local.advance(10)
    assert clock.now() == LOCAL + timedelta(seconds=10 - 42)
    assert server.asked == 1  # measured once, not on every reading


def test_the_offset_is_kept_while_the_store_is_away():
    local = FakeClock(LOCAL)
    server = Server(local, timedelta(seconds=5))
    clock = StoreClock(server, base=local, refresh=timedelta(0))
    assert clock.now() == LOCAL + timedelta(seconds=5)
    server.down = True
    local.advance(1)
    assert clock.now() == LOCAL + timedelta(seconds=6)
    assert clock.offset == timedelta(seconds=5)
