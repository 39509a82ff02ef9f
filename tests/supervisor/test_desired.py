"""The desired-state verbs of ``mx.services.boxes`` (``launch.py super``, the API), followed by the
supervisor's loop on a fake host."""

from __future__ import annotations

import pytest

from db.errors import NotFound
from db.states import ProcessKind
from db.states import SupervisedState as S
from mx.services import boxes
from tests.supervisor.conftest import BOX, register
from tests.supervisor.test_loop_edges import Rig


@pytest.fixture
def rig(sqlite_store, clock, tmp_path) -> Rig:
    register(sqlite_store, clock, "p")
    return Rig(sqlite_store, clock, tmp_path)


def test_stop_then_start_verbs_take_effect(rig):
    # given
    rig.running()
    # when the operator stops it
    rows = boxes.stop_process(rig.store, BOX, "p", clock=rig.clock, actor="cli")
    # then the record says so at once, and the supervisor acts on its next poll
    assert [(r["process"], r["desired"], r["state"]) for r in rows] == [("p", "stopped", "running")]
    rig.poll()
    rig.tick()
    assert rig.state() == S.STOPPED
    # when started again
    boxes.start_process(rig.store, BOX, "p", clock=rig.clock, actor="cli")
    rig.poll()
    assert rig.state() == S.STARTING
    desires = [e for e in rig.store.history("supervised", f"{BOX}/p") if e.trigger == "desire"]
    assert [(e.actor, e.reason) for e in desires] == [
        ("cli", "desired stopped"),
        ("cli", "desired running"),
    ]


def test_start_verb_resets_fatal(rig):
    rig.fatal()
    rows = boxes.start_process(rig.store, BOX, "p", clock=rig.clock, actor="cli")
    assert (rows[0]["state"], rows[0]["start_attempts"]) == ("stopped", 0)
    rig.poll()
    assert rig.state() == S.STARTING


def test_verbs_name_a_process_or_one_instance(rig, clock):
    register(
        rig.store, clock, "w", kind=ProcessKind.FREERUN, trigger="every 60", worker="m:C", workers=3
    )
    rig.sup.recover()
    rows = boxes.stop_process(rig.store, BOX, "w", clock=clock, actor="cli")
    assert [r["process"] for r in rows] == ["w", "w.1", "w.2"]
    rows = boxes.start_process(rig.store, BOX, "w.2", clock=clock, actor="cli")
    assert [r["process"] for r in rows] == ["w.2"]


def test_verbs_unknown_process_is_not_found(rig):
    rig.sup.recover()
    with pytest.raises(NotFound, match="box1/nope"):
        boxes.stop_process(rig.store, BOX, "nope", clock=rig.clock, actor="cli")
    with pytest.raises(NotFound):
        boxes.start_process(rig.store, "other-box", "p", clock=rig.clock, actor="cli")
