"""Redis goes away (issue 15): a private redis-server of the test's own, killed and restarted in
the middle of a flow of units of work, and a consumer process killed holding deliveries.

What is proven, by counting (``counting.py``: every command appends its unit of work's id and
attempt to a file as it starts and as it ends):

- 500 units of work published while real worker processes run them, Redis SIGKILLed (or
  stopped with SIGTERM) in the middle and started again on its append-only file: none lost, none run twice, none run on a
  second attempt, no worker gone; the time from Redis answering again to the first ack reaching
  it is printed (the reconnect time) and bounded;
- the deliveries a SIGKILLed consumer process held come to another consumer after
  ``visibility_timeout``, not before, each once, marked redelivered.

The store is a SQLite file beside the test (not faulted); Redis keeps its append-only file
fsynced before every answer (``--appendfsync always``), so what it acknowledged survives the kill.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from db import open_store
from db.clock import SystemClock
from db.errors import BrokerUnavailable
from db.models import ProcessEntry, ProcessRecord
from db.states import TERMINAL_UOW_STATES, ProcessKind, ProcessSource, UowKind
from db.uow_factory import create_once
from mq.message import process_queue, status_queue, uow_message
from mq.redis import RedisBroker
from mq.redis._scripts import stream_key
from tests import servers
from tests.faults.counting import RunLog, tally, units_of
from tests.faults.drill import Verdict
from tests.faults.redisserver import PrivateRedis, redis_server_binary
from tests.polling import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.needs_server]

ROOT = Path(__file__).resolve().parents[2]
#: Units of work of the restart drill.
UNITS = 500
#: Published this many at a time, at most :data:`AHEAD` more than have started running, so that
#: publishing goes on across the kill.
BATCH = 20
AHEAD = 100
#: Redis is killed once this many runs have started, and stays away this long (longer than a
#: broker call's own retries: the daemons' patience is what brings them through).
KILL_AFTER_RUNS = 150
DOWN = 3.0
#: The workers: processes and slots each.
WORKERS = 2
SLOTS = 4
#: Longest acceptable time from Redis answering again to the first ack reaching it.
RECONNECT_WITHIN = 10.0
#: The visibility timeout of the consumer-killed drill (seconds).
VISIBILITY = 3.0
#: Deliveries the killed consumer holds.
HELD = 10


@pytest.fixture
def private_redis(tmp_path: Path):
    binary = redis_server_binary()
    if binary is None:
        servers.unavailable(
            "redis-server not found (apt-get install redis-server): the Redis fault drills "
            "run a private server"
        )
    server = PrivateRedis(tmp_path / "redis", binary=binary)
    server.start()
    yield server
    server.stop()


def counting_entry(runs: RunLog) -> ProcessEntry:
    """A freerun whose command appends ``<uow_id> <attempt>`` as it starts and
    ``<uow_id> <attempt> end:0`` as it ends (one ``>>`` write each: lines never interleave)."""
    who = "$TACTUS_UOW_ID $TACTUS_ATTEMPT"
    return ProcessEntry(
        name="flow",
        kind=ProcessKind.FREERUN,
        trigger="every 86400",
        command=f'echo "{who}" >> {runs.path}; echo "{who} end:0" >> {runs.path}',
        shell=True,
        max_active=UNITS,
    )


def spawn_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    out = log.open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "workers", "flow", "--concurrency", str(SLOTS)],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_redis_killed_and_restarted_mid_flow_loses_nothing_runs_nothing_twice(
    private_redis: PrivateRedis, tmp_path: Path, how: str
):
    # given 500 units of work in the store and real workers consuming through Redis
    runs = RunLog(tmp_path / "runs.txt")
    store_uri = f"sqlite:///{tmp_path / 'tactus.db'}"
    store = open_store(store_uri)
    store.init_schema()
    entry = counting_entry(runs)
    clock = SystemClock()
    now = clock.now()
    store.insert_process(
        ProcessRecord(entry=entry, source=ProcessSource.API, created_at=now, updated_at=now)
    )
    units = [
        create_once(
            store,
            entry,
            clock=clock,
            actor="test",
            reason="redis drill",
            kind=UowKind.FREERUN,
            start="20261207030000",
            end="20261207030000",
            run_key=f"r{i}",
        )[0]
        for i in range(UNITS)
    ]
    prefix = f"drill{secrets.token_hex(3)}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TACTUS_")},
        "PYTHONPATH": str(ROOT),
        "TACTUS_STORE_URI": store_uri,
        "TACTUS_BROKER_URI": private_redis.uri,
        "TACTUS_VAR_DIR": str(tmp_path / "var"),
        "TACTUS_QUEUE_PREFIX": prefix,
        "TACTUS_HEARTBEAT_INTERVAL": "1",
        "TACTUS_OUTAGE_BACKOFF_MAX": "1",
        "TACTUS_VISIBILITY_TIMEOUT": "10",
    }
    queue = process_queue(prefix, "flow")
    workers = [spawn_worker(env, tmp_path / f"worker{i}.log") for i in range(WORKERS)]
    publisher = RedisBroker(private_redis.uri)
    published = threading.Event()
    stop = threading.Event()

    def publish_all() -> None:
        # a publish that meets the outage is sent again, the same messages: they keep their
        # batch numbers, so a batch that got in before the reply was lost is not added twice
        for start in range(0, UNITS, BATCH):
            batch = [
                (queue, uow_message(u.id, u.process).encode()) for u in units[start : start + BATCH]
            ]
            while not stop.is_set() and start - len(runs.starts()) > AHEAD:
                time.sleep(0.05)
            while not stop.is_set():
                try:
                    publisher.publish_many(batch)
                    break
                except BrokerUnavailable:
                    time.sleep(0.2)
        published.set()

    feeder = threading.Thread(target=publish_all, name="publisher")
    monitor = redis.Redis.from_url(private_redis.uri, socket_timeout=2)
    status_stream = stream_key(status_queue(prefix))
    try:
        feeder.start()
        wait_until(
            lambda: len(runs.starts()) >= KILL_AFTER_RUNS,
            deadline=120,
            what=f"{KILL_AFTER_RUNS} runs before the kill",
        )
        # when Redis is killed (SIGKILL) or stopped (SIGTERM) in the middle of the flow and
        # started again after 3 s
        runs_at_kill = len(runs.starts())
        if how == "kill":
            private_redis.kill()
        else:
            private_redis.stop()
        time.sleep(DOWN)
        private_redis.start()
        back = time.monotonic()
        acks_at_start = monitor.xlen(status_stream)
        wait_until(
            lambda: monitor.xlen(status_stream) > acks_at_start,
            deadline=60,
            what="the first ack after the restart",
        )
        reconnect = round(time.monotonic() - back, 2)
        published_during = not published.is_set()
        # then every unit of work ends
        wait_until(published.is_set, deadline=120, what="every unit of work published")
        wait_until(
            lambda: all(u.state in TERMINAL_UOW_STATES for u in units_of(store, ["flow"])),
            deadline=240,
            what="every unit of work to end",
        )
        time.sleep(1.0)  # a run that should not happen would start now
        counts = tally(store, runs, ["flow"])
        starts = runs.starts()
        per_unit = {u.id: sum(1 for s, _ in starts if s == u.id) for u in units}
        depth = publisher.depth(queue)
        alive = [w.poll() is None for w in workers]
    finally:
        stop.set()
        feeder.join(30)
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(20)
            except subprocess.TimeoutExpired:
                w.kill()
        publisher.close()
        monitor.close()
        store.close()
    print(f"redis {how} drill: reconnect {reconnect} s, {counts}")  # noqa: T201
    verdict = Verdict()
    verdict.equal("units of work", counts.units, UNITS)
    verdict.at_least("runs started before the kill", runs_at_kill, KILL_AFTER_RUNS)
    verdict.equal("publishing went on across the kill", published_during, True)
    verdict.equal("units of work lost", len(counts.lost), 0)
    verdict.equal("runs that should not have happened (twice)", len(counts.twice), 0)
    verdict.equal(
        "units of work not run exactly once", sorted(u for u, n in per_unit.items() if n != 1), []
    )
    verdict.equal("units of work that spent an attempt on the outage", len(counts.retried), 0)
    verdict.equal("messages left in the queue", depth, 0)
    verdict.equal("workers alive", alive, [True] * WORKERS)
    verdict.at_most(
        "seconds from Redis back to the first ack (reconnect)", reconnect, RECONNECT_WITHIN
    )
    warnings = sum(
        (tmp_path / f"worker{i}.log").read_text(errors="replace").count("WARNING")
        for i in range(WORKERS)
    )
    print(f"worker log warnings: {warnings}")  # noqa: T201
    logs = "\n".join(
        (tmp_path / f"worker{i}.log").read_text(errors="replace")[-3000:] for i in range(WORKERS)
    )
    verdict.check(f"{counts}\n{logs}")


def _hold_and_hang(uri: str, queue: str, out: str, ready) -> None:
    """Child process: take :data:`HELD` deliveries, write their bodies to ``out``, never ack."""
    broker = RedisBroker(uri, visibility=timedelta(seconds=VISIBILITY))
    consumer = broker.consumer(queue, prefetch=HELD)
    bodies = []
    while len(bodies) < HELD:
        delivery = consumer.get(30)
        if delivery is not None:
            bodies.append(delivery.body)
    Path(out).write_bytes(b"\n".join(bodies))
    ready.set()
    time.sleep(300)


def test_a_killed_consumers_deliveries_come_to_another_after_the_visibility_timeout(
    private_redis: PrivateRedis, tmp_path: Path
):
    # given a consumer process holding 10 deliveries, and 10 more messages for another consumer
    queue = "drill.killed"
    broker = RedisBroker(private_redis.uri, visibility=timedelta(seconds=VISIBILITY))
    broker.publish_many((queue, f"held{i:02d}".encode()) for i in range(HELD))
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    out = tmp_path / "held.txt"
    child = ctx.Process(target=_hold_and_hang, args=(private_redis.uri, queue, str(out), ready))
    child.start()
    try:
        assert ready.wait(60), "the consumer process did not take its deliveries"
        taken_at = time.monotonic()
        held = set(out.read_bytes().split(b"\n"))
        broker.publish_many((queue, f"free{i:02d}".encode()) for i in range(HELD))
        got: list[tuple[bytes, bool, float]] = []
        with broker.consumer(queue, prefetch=5) as consumer:
            while len(got) < HELD:
                delivery = consumer.get(10)
                assert delivery is not None, f"only {len(got)} free messages came"
                got.append((delivery.body, delivery.redelivered, time.monotonic() - taken_at))
                consumer.ack(delivery)
            # when the holder is SIGKILLed (no ack, no goodbye)
            child.kill()
            child.join(10)
            killed_after = time.monotonic() - taken_at
            # then its deliveries come here once the visibility timeout has passed
            deadline = time.monotonic() + VISIBILITY + 20
            while len(got) < 2 * HELD and time.monotonic() < deadline:
                delivery = consumer.get(1)
                if delivery is not None:
                    got.append((delivery.body, delivery.redelivered, time.monotonic() - taken_at))
                    consumer.ack(delivery)
            time.sleep(0.5)
            late = consumer.get(0.5)
    finally:
        if child.is_alive():
            child.kill()
            child.join(10)
        broker.delete(queue)
        broker.close()
    came_back = [(b, r, t) for b, r, t in got if b in held]
    first_back = min((t for _, _, t in came_back), default=float("nan"))
    print(  # noqa: T201
        f"consumer killed {killed_after:.2f} s after taking {len(held)} deliveries: "
        f"{len(came_back)} came back, the first {first_back:.2f} s after they were taken"
    )
    verdict = Verdict()
    verdict.equal("deliveries the killed consumer held", len(held), HELD)
    verdict.equal("of those, delivered again", sorted(b for b, _, _ in came_back), sorted(held))
    verdict.equal("marked redelivered", all(r for _, r, _ in came_back), True)
    verdict.equal("free messages marked redelivered", [b for b, r, _ in got[:HELD] if r], [])
    verdict.equal("deliveries in all (each message once)", len(got), 2 * HELD)
    verdict.equal("a delivery after all had come", late is not None, False)
    verdict.at_least("seconds until the first came back", first_back, VISIBILITY - 0.1)
    verdict.at_most("seconds until the first came back", first_back, VISIBILITY + 5)
    verdict.check()
