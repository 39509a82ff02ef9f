"""The pieces of workers/uow_io.py on their own: the messages file and the way to the store."""

from __future__ import annotations

from datetime import UTC, datetime

from db.clock import FakeClock
from db.errors import StoreUnavailable
from db.payloads import MESSAGE_CHARS
from workers.uow_io import LINE_BYTES, MessageFile, Messages


def test_message_file_reads_each_line_once_and_the_last_one_at_the_end(tmp_path):
    path = tmp_path / "messages.txt"
    path.write_bytes(b"")
    reader = MessageFile(str(path))
    with path.open("ab") as out:
        out.write(b"one\n\ntw")
        out.flush()
        assert reader.read() == ["one"]
        out.write(b"o\nthree")
        out.flush()
        assert reader.read() == ["two"]
    assert reader.read(final=True) == ["three"]
    assert reader.read(final=True) == []


def test_message_file_cuts_long_lines_and_starts_over_when_truncated(tmp_path):
    path = tmp_path / "messages.txt"
    path.write_bytes(b"x" * (LINE_BYTES + 10))
    reader = MessageFile(str(path))
    (long,) = reader.read()
    assert len(long) == MESSAGE_CHARS and long.endswith("…")
    path.write_bytes(b"again\n")  # replaced: shorter than what was read
    assert reader.read() == ["again"]


class FlakyStore:
    """Takes messages only when ``up``; records what it took."""

    def __init__(self) -> None:
        self.up = False
        self.taken: list[tuple[str, int, list[str]]] = []

    def append_messages(self, uow_id, attempt, messages, *, limit):
        if not self.up:
            raise StoreUnavailable("down")
        self.taken.append((uow_id, attempt, [text for _, text in messages]))
        return len(messages)


class Uow:
    id = "u1"
    attempt = 2


def test_messages_wait_for_the_store_and_keep_their_order():
    store = FlakyStore()
    messages = Messages(store, Uow(), limit=10, clock=FakeClock(datetime(2026, 1, 5, tzinfo=UTC)))
    messages.add("one")
    messages.flush(force=True)  # the store is away: kept
    messages.extend(["two", "three"])
    store.up = True
    messages.flush()  # too soon after the last try: nothing
    assert store.taken == []
    messages.close()
    assert store.taken == [("u1", 2, ["one", "two", "three"])]
