"""NATS JetStream under faults (issue 15): a private nats-server (``natsserver.py``) is restarted
in the middle of a flow of 500 units of work run by real worker processes, and a consumer
process is killed with SIGKILL while it holds messages.

What is proven, by counting (``counting.py``: each run appends its unit of work and attempt to a
file):

- a restart of the server (a clean stop, or a crash: SIGKILL) loses no unit of work and runs none twice; the workers carry on by
  themselves (nats-py reconnects, the daemons wait out the calls that failed meanwhile), and the
  time from the server's return to the first run after it is reported;
- the messages a SIGKILLed consumer held come again after the visibility timeout (JetStream's
  AckWait), not before, marked redelivered, and each is then handled once.

The installation: a SQLite store, the private server, two workers of three slots each, the
scheduler left out (the units of work are created and published by the test, as a fire would).
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest

from db.clock import SystemClock
from db.states import UowKind, UowState
from db.uow_factory import create_once
from mq.message import uow_delivery
from mq.nats import NatsBroker
from tests.faults.counting import RunLog, command, tally, units_of
from tests.faults.drill import Verdict
from tests.faults.natsserver import PrivateNats
from tests.polling import wait_until
from tests.scheduler.test_end_to_end import Installation

pytestmark = [pytest.mark.slow, pytest.mark.needs_server]

#: Units of work of the restart drill.
UNITS = 500
#: Runs started before the server is restarted (so that the restart lands mid-flow).
RESTART_AFTER = 150
#: How long the server stays down.
DOWN = 3.0
#: The AckWait of the drills (``visibility_timeout``).
VISIBILITY = 4.0
#: How the server is stopped: a clean shutdown, or a crash.
SIGNALS = {"sigterm": signal.SIGTERM, "sigkill": signal.SIGKILL}
#: Work must go on within this long after the server is back.
RESUME_WITHIN = 20.0


@pytest.fixture
def nats_server(tmp_path: Path):
    server = PrivateNats(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def runs_started(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if len(line.split()) == 2)


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_a_server_restart_mid_flow_loses_nothing_and_runs_nothing_twice(tmp_path, nats_server, how):
    # given 500 units of work published to two workers of three slots each
    inst = Installation(tmp_path, nats_server.uri)
    inst.env.update(
        TACTUS_VISIBILITY_TIMEOUT=str(VISIBILITY),
        TACTUS_OUTAGE_BACKOFF_MAX="1",
    )
    runs_file = tmp_path / "runs.txt"
    clock = SystemClock()
    try:
        inst.register(
            clock, name="flow", kind="freerun", trigger="every 3600", command=command(runs_file)
        )
        entry = inst.store.get_process("flow").entry
        prefix = inst.env["TACTUS_QUEUE_PREFIX"]
        deliveries = []
        for i in range(UNITS):
            uow, _ = create_once(
                inst.store,
                entry,
                clock=clock,
                actor="test",
                reason="drill",
                kind=UowKind.FREERUN,
                start="20261207030000",
                end="20261207030000",
                run_key=f"r{i:04d}",
            )
            queue, body, _ = uow_delivery(uow, prefix, clock.now())
            deliveries.append((queue, body))
        inst.broker.publish_many(deliveries)
        for _ in range(2):
            inst.spawn("-m", "workers", "flow", "--concurrency", "3")
        wait_until(
            lambda: runs_started(runs_file) >= RESTART_AFTER,
            deadline=120,
            interval=0.05,
            what=f"{RESTART_AFTER} runs before the restart",
        )
        # when the server restarts in the middle of the flow
        stopped_at = time.monotonic()
        started_before = runs_started(runs_file)
        back_at = nats_server.restart(DOWN, SIGNALS[how])
        # then work goes on by itself soon after the server is back
        baseline = runs_started(runs_file)
        resumed = None
        try:
            wait_until(
                lambda: runs_started(runs_file) > baseline,
                deadline=RESUME_WITHIN + 10,
                interval=0.05,
            )
            resumed = round(time.monotonic() - back_at, 2)
        except AssertionError:
            pass
        # and every unit of work ends, each run once
        inst.wait(
            lambda: all(u.state is UowState.PROCESSED for u in units_of(inst.store, ["flow"])),
            deadline=300,
            what="all 500 units of work processed",
        )
        counts = tally(inst.store, RunLog(runs_file), ["flow"])
        verdict = Verdict()
        verdict.equal("units of work", counts.units, UNITS)
        verdict.at_least("runs started before the restart", started_before, RESTART_AFTER)
        verdict.at_most("runs started before the restart", started_before, UNITS - 100)
        verdict.equal("units of work lost", len(counts.lost), 0)
        verdict.equal("runs that should not have happened (twice)", len(counts.twice), 0)
        verdict.at_most("seconds from the server's return to the next run", resumed, RESUME_WITHIN)
        verdict.equal(
            "worker processes gone", [p.pid for p in inst.procs if p.poll() is not None], []
        )
        verdict.check(
            f"{counts}\nserver down {back_at - stopped_at:.1f}s\n{nats_server.tail()}\n"
            f"{inst.report()}"
        )
    finally:
        inst.close()


def _hold_and_hang(uri: str, queue: str, out: str, held, count: int) -> None:
    """Child process: take ``count`` messages, write each down, never ack, wait to be killed."""
    with NatsBroker(uri, visibility=timedelta(seconds=VISIBILITY)) as broker:
        consumer = broker.consumer(queue, prefetch=count)
        lines = []
        while len(lines) < count:
            delivery = consumer.get(30)
            if delivery is not None:
                lines.append(delivery.body.decode())
        Path(out).write_text("\n".join(lines) + "\n")
        held.set()
        time.sleep(300)


def test_a_killed_consumers_messages_come_back_after_the_ack_wait(tmp_path, nats_server):
    # given 20 units, 5 held by a consumer process that never acks
    queue = "drill.flow"
    units = [f"u{i:02d}" for i in range(20)]
    ctx = multiprocessing.get_context("spawn")
    held_event = ctx.Event()
    held_file = tmp_path / "held.txt"
    with NatsBroker(nats_server.uri, visibility=timedelta(seconds=VISIBILITY)) as broker:
        broker.publish_many((queue, unit.encode()) for unit in units)
        child = ctx.Process(
            target=_hold_and_hang, args=(nats_server.uri, queue, str(held_file), held_event, 5)
        )
        child.start()
        try:
            assert held_event.wait(60), "the consumer process did not take its messages"
            taken_at = time.monotonic()
            # when it is killed (no ack, no goodbye)
            child.kill()
            child.join(30)
            held = held_file.read_text().split()
            # then a surviving consumer handles the other 15 at once, and the 5 after the AckWait
            handled: list[tuple[str, bool, float]] = []
            with broker.consumer(queue, prefetch=5) as survivor:
                end = time.monotonic() + VISIBILITY + 30
                while len(handled) < len(units) and time.monotonic() < end:
                    delivery = survivor.get(1.0)
                    if delivery is not None:
                        handled.append(
                            (
                                delivery.body.decode(),
                                delivery.redelivered,
                                time.monotonic() - taken_at,
                            )
                        )
                        survivor.ack(delivery)
                extra = survivor.get(1.0)
        finally:
            if child.is_alive():
                child.kill()
                child.join(30)
        came_back = [(u, r, round(t, 2)) for u, r, t in handled if u in held]
        verdict = Verdict()
        verdict.equal("messages the killed consumer held", len(held), 5)
        verdict.equal("units handled by the survivor", sorted(u for u, _, _ in handled), units)
        verdict.equal("units lost", sorted(set(units) - {u for u, _, _ in handled}), [])
        verdict.equal("units handled twice", len(handled) - len({u for u, _, _ in handled}), 0)
        verdict.equal("a delivery after the last", extra, None)
        verdict.equal("held ones marked redelivered", all(r for _, r, _ in came_back), True)
        verdict.at_least(
            "seconds until the first held one came back",
            min((t for _, _, t in came_back), default=None),
            VISIBILITY - 1.0,
        )
        verdict.at_most(
            "seconds until the last held one came back",
            max((t for _, _, t in came_back), default=None),
            VISIBILITY + 5.0,
        )
        verdict.check(f"held {held}\nhandled {handled}")
