"""Which instances of which processes a box runs, and how the loop follows registration changes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from db.models import ProcessEntry
from db.placement import instance_name, place, process_of, runs_on
from db.states import ProcessKind, Qualifier
from db.states import SupervisedState as S
from tests.supervisor.conftest import BOX, register
from tests.supervisor.test_loop_edges import Rig

DAEMON = ProcessEntry(name="d", kind=ProcessKind.DAEMON, command=("sleep", "9"))


@pytest.mark.parametrize(
    ("boxes", "box_id", "expected"),
    [
        ((".*",), "anything", True),
        (("dev.*",), "dev1", True),
        (("dev",), "devops", False),  # the whole box_id must match
        (("web[0-9]+",), "web12", True),
        (("web[0-9]+",), "web12-old", False),
        (("db1", "web.*"), "web", True),
        (("Web1",), "web1", False),  # case-sensitive
    ],
)
def test_runs_on_matches_the_whole_box_id(boxes, box_id, expected):
    assert runs_on(replace(DAEMON, boxes=boxes), box_id) is expected


def test_place_names_instances_by_workers_count():
    managed = ProcessEntry(
        name="site_hourly",
        kind=ProcessKind.MANAGED,
        time_qualifier=Qualifier.HOURLY,
        worker="tests.fixtures.workers:Noop",
        workers=3,
    )
    off = replace(DAEMON, name="off", enabled=False)
    elsewhere = replace(DAEMON, name="elsewhere", boxes=("other",))
    placed = place([managed, DAEMON, off, elsewhere], BOX)
    assert sorted(placed) == ["d", "off", "site_hourly", "site_hourly.1", "site_hourly.2"]
    assert not placed["off"].runnable and placed["site_hourly.2"].runnable
    assert [process_of(n) for n in sorted(placed)][-1] == "site_hourly"
    assert instance_name("p", 0) == "p" and instance_name("p", 4) == "p.4"


@pytest.fixture
def rig(sqlite_store, clock, tmp_path) -> Rig:
    register(sqlite_store, clock, "p")
    return Rig(sqlite_store, clock, tmp_path)


def test_disabled_process_is_stopped_but_listed(rig):
    rig.running()
    register(rig.store, rig.clock, "p", enabled=False)
    rig.poll()
    rig.tick()
    assert rig.state() == S.STOPPED
    assert rig.record().desired is True


def test_unregistered_process_is_stopped_then_forgotten(rig):
    rig.running()
    rig.store.delete_process("p")
    rig.poll()
    rig.tick()
    rig.tick()
    assert rig.store.list_supervised(BOX) == []


def test_newly_registered_process_is_placed_and_started(rig):
    rig.running()
    register(rig.store, rig.clock, "q", boxes=("box.*",))
    register(rig.store, rig.clock, "r", boxes=("other",))
    rig.poll()
    assert rig.state("q") == S.STARTING
    assert [r.process for r in rig.store.list_supervised(BOX)] == ["p", "q"]


def test_more_workers_start_more_instances(rig):
    register(
        rig.store,
        rig.clock,
        "w",
        kind=ProcessKind.FREERUN,
        trigger="every 60",
        worker="tests.fixtures.workers:Noop",
        workers=2,
    )
    rig.sup.recover()
    rig.tick()
    assert {r.process: r.state for r in rig.store.list_supervised(BOX)} == {
        "p": S.STARTING,
        "w": S.STARTING,
        "w.1": S.STARTING,
    }
    envs = {c[2] for c in rig.host.calls if c[0] == "spawn"}
    assert envs == {"p", "w", "w.1"}
