"""The announcer: what mx stored while the broker was away is published when it is back, in
order, once, with its delay kept; the list is bounded; a request never waits on a known outage."""

from __future__ import annotations

from datetime import timedelta

import pytest

from db.errors import BrokerUnavailable
from db.outage import Outage
from mq.message import Message, uow_message
from mq.patient import PatientBroker
from mx.announcer import Announcer
from tests.mx.conftest import DownableBroker
from tests.polling import wait_until


@pytest.fixture
def parts():
    broker = DownableBroker()
    outage = Outage("broker", base=timedelta(milliseconds=10), backoff_max=timedelta(seconds=0.05))
    patient = PatientBroker(broker, outage, wait=False)
    announcer = Announcer(patient, outage, probe=lambda: patient.depth("tactus.uow_status"))
    yield broker, outage, announcer
    announcer.stop()


def _body(uow_id: str) -> bytes:
    return uow_message(uow_id, "p").encode()


def test_messages_kept_during_an_outage_are_published_in_order_once_it_ends(parts):
    broker, outage, announcer = parts
    # given the broker away, and two messages that could not be published
    broker.down = True
    for uow_id in ("u1", "u2"):
        with pytest.raises(BrokerUnavailable):
            announcer.publish("tactus.p", _body(uow_id), None)
        announcer.later("tactus.p", _body(uow_id), None)
    assert not outage.up and announcer.pending == 2
    # when it is back
    broker.down = False
    # then both are published, in order, once, and the outage is over
    wait_until(lambda: announcer.pending == 0, what="the list drained")
    assert broker.uow_ids() == ["u1", "u2"]
    assert outage.up and announcer.published == 2


def test_a_known_outage_is_not_tried_by_the_request_and_the_thread_ends_it(parts):
    broker, outage, announcer = parts
    broker.down = True
    with pytest.raises(BrokerUnavailable):
        announcer.publish("tactus.p", _body("u1"), None)
    # the broker is back, but mx does not know yet: the request does not try it ...
    broker.down = False
    with pytest.raises(BrokerUnavailable, match="outage is in progress"):
        announcer.publish("tactus.p", _body("u2"), None)
    assert broker.published == []
    # ... and the thread's probe ends the outage soon, so the next request publishes at once
    wait_until(lambda: outage.up, what="the probe ends the outage")
    announcer.publish("tactus.p", _body("u3"), None)
    assert broker.uow_ids() == ["u3"]


def test_a_delayed_message_keeps_its_due_time(parts):
    broker, _, announcer = parts
    broker.down = True
    announcer.later("tactus.p", _body("u1"), timedelta(seconds=30))
    broker.down = False
    wait_until(lambda: announcer.pending == 0, what="published")
    (queue, message, delay) = broker.published[0]
    assert (queue, message.uow_id) == ("tactus.p", "u1")
    assert timedelta(seconds=25) < delay <= timedelta(seconds=30)


def test_the_list_is_bounded_dropping_the_oldest(parts):
    broker, outage, _ = parts
    patient = PatientBroker(broker, outage, wait=False)
    small = Announcer(patient, outage, probe=lambda: None, capacity=2)
    broker.down = True
    for uow_id in ("u1", "u2", "u3"):
        small.later("tactus.p", _body(uow_id), None)
    assert small.dropped == 1
    broker.down = False
    wait_until(lambda: small.pending == 0, what="drained")
    small.stop()
    assert broker.uow_ids() == ["u2", "u3"]


def test_message_bodies_are_published_as_given(parts):
    broker, _, announcer = parts
    broker.down = True
    announcer.later("tactus.p", _body("u9"), None)
    broker.down = False
    wait_until(lambda: announcer.pending == 0, what="published")
    assert broker.published[0][1] == Message.decode(_body("u9"))
