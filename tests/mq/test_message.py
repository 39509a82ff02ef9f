"""Message bodies: whatever bytes arrive, decoding ends in a message or a MalformedMessage."""

from __future__ import annotations

import json

import pytest

from db.errors import MalformedMessage
from mq.message import Message, status_message, uow_message

POISON = [
    pytest.param(b"[" * 100_000, id="nested too deep (RecursionError)"),
    pytest.param(b'{"v": 1, "kind": "uow", "uow_id": ' + b"[" * 50_000, id="deep in an object"),
    pytest.param(b"\xff\xfe\x00garbage", id="not UTF-8"),
    pytest.param(b"", id="empty"),
    pytest.param(b"null", id="null"),
    pytest.param(b"[1, 2]", id="a list"),
    pytest.param(b'{"v": 1, "kind": "uow", "uow_id": 7, "process": "p"}', id="id not a string"),
    pytest.param(b'{"v": 1, "kind": "uow", "uow_id": "u", "process": ["p"]}', id="list name"),
    pytest.param(b'{"v": 2, "kind": "uow", "uow_id": "u", "process": "p"}', id="version 2"),
    pytest.param(b'{"v": 1, "kind": "rm -rf", "uow_id": "u", "process": "p"}', id="kind"),
    pytest.param(
        b'{"v": 1, "kind": "uow", "uow_id": "' + b"u" * 500 + b'", "process": "p"}', id="long"
    ),
    pytest.param(b'{"v": 1e999, "kind": "uow"}', id="infinite version"),
    pytest.param(b'{"v": true, "kind": "uow", "uow_id": "u", "process": "p"}', id="true version"),
    pytest.param(b'{"v": 1, "kind": ["uow"], "uow_id": "u", "process": "p"}', id="unhashable kind"),
    pytest.param(b'{"v": 1, "kind": {"a": 1}, "uow_id": "u", "process": "p"}', id="object kind"),
    pytest.param(b'{"v": [1], "kind": "uow", "uow_id": "u", "process": "p"}', id="list version"),
    pytest.param(b'{"v": 1, "kind": "uow", "uow_id": "a\\u0000b", "process": "p"}', id="NUL id"),
    pytest.param(b'{"v": 1, "kind": "uow", "uow_id": "u", "process": "a b"}', id="space"),
    pytest.param(b'{"v": 1, "kind": "uow", "uow_id": "", "process": "p"}', id="empty id"),
    pytest.param(b"1" * 100_000, id="a huge number"),
    pytest.param("a str, not bytes", id="not bytes"),
    pytest.param(None, id="None"),
]


@pytest.mark.parametrize("body", POISON)
def test_poison_is_a_malformed_message_never_another_error(body):
    with pytest.raises(MalformedMessage) as raised:
        Message.decode(body)
    assert isinstance(raised.value.raw, bytes)
    assert len(raised.value.message) < 300  # the log line stays readable


@pytest.mark.parametrize("message", [uow_message("u1", "p"), status_message("u2", "site_daily")])
def test_messages_round_trip(message):
    assert Message.decode(message.encode()) == message
    assert json.loads(message.encode())["v"] == 1
