"""Payloads, arguments and messages with real worker processes (SPEC section 12): a command
reads ``$TACTUS_PAYLOAD`` and ``$TACTUS_ARGUMENTS`` and appends to ``$TACTUS_MESSAGES``, a worker
class reads ``uow.payload`` and calls ``self.message``; the messages come back in order through
the API, while the unit of work runs and after."""

from __future__ import annotations

import hashlib
import json
import os
import sys

import pytest

from db.clock import SystemClock
from db.credentials import Role
from db.payloads import new_payload
from db.states import UowState
from mx.app import create_app
from mx.services.credentials import create_token
from tests.polling import wait_until

#: A command that copies its payload and arguments into ``record``, then emits five messages:
#: two before it waits for ``go`` to exist, three after, the last without a newline.
COMMAND = r"""
import json, os, shutil, sys, time
args = json.load(open(os.environ["TACTUS_ARGUMENTS"]))
shutil.copy(os.environ["TACTUS_PAYLOAD"], args["record"] + ".payload")
json.dump(args, open(args["record"] + ".arguments", "w"))
with open(os.environ["TACTUS_MESSAGES"], "a") as out:
    out.write("started\nloaded 1 of 3\n")
    out.flush()
    while not os.path.exists(args["go"]):
        time.sleep(0.05)
    out.write("loaded 2 of 3\n\nloaded 3 of 3\n")
    out.write("done: " + "é" * 3)
"""


@pytest.fixture
def api(harness):
    """A test client of mx on the harness's store, and a viewer's headers."""
    app = create_app(harness.settings, store=harness.store, broker=harness.broker, testing=True)
    token = create_token(harness.store, "viewer", Role.VIEWER)
    yield app.test_client(), {"Authorization": f"Bearer {token}"}
    app.extensions["tactus"].close()


def _stored_payload(harness, data: bytes) -> str:
    payload, _ = harness.store.save_payload(new_payload(data, None, SystemClock().now()))
    return payload.id


def _texts(client, headers, uow_id: str) -> list[str]:
    page = client.get(f"/api/v1/uows/{uow_id}/messages", headers=headers).json
    return [m["text"] for m in page["items"]]


def test_command_reads_payload_and_arguments_and_its_messages_come_in_order(harness, api, tmp_path):
    # given a command's process and a unit of work with a payload and arguments
    client, headers = api
    data = os.urandom(256 * 1024)
    harness.register("etl", command=[sys.executable, "-c", COMMAND], timeout=30)
    record, go = tmp_path / "record", tmp_path / "go"
    arguments = {"record": str(record), "go": str(go), "table": "visits"}
    uow = harness.submit("etl", arguments=arguments, payload_id=_stored_payload(harness, data))
    # when a worker runs it
    harness.start_worker("etl")
    # then the first messages are there while it still runs
    wait_until(
        lambda: _texts(client, headers, uow.id) == ["started", "loaded 1 of 3"],
        15,
        what="the messages written before the command waits",
    )
    assert harness.uow(uow.id).state is UowState.IN_PROGRESS
    go.touch()
    done = harness.wait_uow(uow.id, UowState.PROCESSED)
    # and all of them after, in order, blank lines left out
    page = client.get(f"/api/v1/uows/{uow.id}/messages", headers=headers).json
    assert [m["text"] for m in page["items"]] == [
        "started",
        "loaded 1 of 3",
        "loaded 2 of 3",
        "loaded 3 of 3",
        "done: ééé",
    ]
    assert [m["seq"] for m in page["items"]] == [1, 2, 3, 4, 5]
    assert {m["attempt"] for m in page["items"]} == {1}
    assert (page["dropped"], page["finished"]) == (0, True)
    # and the command read its payload and its arguments
    assert (tmp_path / "record.payload").read_bytes() == data
    assert json.loads((tmp_path / "record.arguments").read_text()) == arguments
    assert done.payload_id == uow.payload_id


def test_worker_class_reads_uow_payload_and_its_messages_come_in_order(harness, api, tmp_path):
    client, headers = api
    data = b"rows,to,load\n" * 1000
    payload_id = _stored_payload(harness, data)
    harness.register("msgs", worker="tests.fixtures.workers:Messaging")
    record = tmp_path / "record"
    texts = [f"step {n}" for n in range(1, 8)]
    uow = harness.submit(
        "msgs", arguments={"record": str(record), "messages": texts}, payload_id=payload_id
    )
    harness.start_worker("msgs")
    harness.wait_uow(uow.id, UowState.PROCESSED)
    assert record.read_text().split() == [
        payload_id,
        str(len(data)),
        hashlib.sha256(data).hexdigest(),
    ]
    assert _texts(client, headers, uow.id) == texts


def test_messages_past_the_cap_are_dropped_and_counted(harness, api):
    client, headers = api
    script = 'for i in 1 2 3 4 5 6; do echo "line $i" >> "$TACTUS_MESSAGES"; done'
    harness.register("chatty", command=["sh", "-c", script])
    uow = harness.submit("chatty")
    harness.start_worker("chatty", TACTUS_MAX_MESSAGES_PER_UOW="4")
    harness.wait_uow(uow.id, UowState.PROCESSED)
    page = client.get(f"/api/v1/uows/{uow.id}/messages", headers=headers).json
    assert [m["text"] for m in page["items"]] == ["line 1", "line 2", "line 3", "line 4"]
    assert page["dropped"] == 2


def test_a_payload_missing_from_the_store_fails_the_attempt(harness):
    harness.register("lost", command=["true"])
    uow = harness.submit("lost", payload_id="0123456789abcdef01234567")
    harness.start_worker("lost")
    failed = harness.wait_uow(uow.id, UowState.INVALID, UowState.CANCELED)
    assert failed.error == "payload 0123456789abcdef01234567 is not in the store"
