"""Poison on a queue (issue 12, item 3): hostile bodies published straight to a process's queue
and to the status queue, the way a misbehaving client would.

Every body is one the decoder must call malformed (SPEC 15: whatever it makes the decoder raise):
JSON nested deeper than the interpreter's recursion limit (RecursionError), a JSON object whose
``kind`` is a list (TypeError: unhashable), invalid UTF-8, a 4 MiB body, and a well-formed message
naming no unit of work.

What is proven:

- each poison message is dead-lettered (it is in ``<queue>.dead``, byte for byte);
- every worker of the process stays up (same pids, no exit recorded) and runs the good units of
  work published after the poison;
- the scheduler goes on consuming statuses: reprocessing the jobs after the poison needs the
  scheduler to take the wake message (status queue), start the jobs, and take the finished
  units' statuses to complete them; the process's trigger looks at it only once an hour, so
  nothing but the status listener can move these jobs on within the test.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pika
import pytest

from db.clock import SystemClock
from db.states import JobState
from db.timeperiod import Timeperiod
from tests.faults.counting import command, tally
from tests.faults.drill import Verdict
from tests.faults.installation import alive_pids

pytestmark = [pytest.mark.slow, pytest.mark.needs_server]

#: Seconds the jobs get to be processed again after the poison (a look, a run of 0.5 s, a
#: status: a couple of seconds when the scheduler listens).
AFTER_POISON = 20.0


def poison_bodies(process: str) -> dict[str, bytes]:
    """Hostile bodies by name; each must end in the dead-letter queue."""
    return {
        "nested deeper than the recursion limit": b"[" * 100_000,
        "kind of an unhashable type": json.dumps(
            {"v": 1, "kind": ["uow"], "uow_id": "x", "process": process}
        ).encode(),
        "invalid UTF-8": b'{"v": 1, "kind": "uow", "uow_id": "\xc3\x28"}',
        "4 MiB body": json.dumps(
            {"v": 1, "kind": "uow", "uow_id": "x" * (4 << 20), "process": process}
        ).encode(),
        "names no unit of work": json.dumps(
            {"v": 1, "kind": "uow", "uow_id": "01nosuchunitofwork000000", "process": process}
        ).encode(),
    }


def status_poison_bodies(process: str) -> dict[str, bytes]:
    bodies = poison_bodies(process)
    bodies["names no unit of work"] = json.dumps(
        {"v": 1, "kind": "uow_status", "uow_id": "01nosuchunitofwork000000", "process": process}
    ).encode()
    return bodies


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:16]


def dead_letters(inst, queue: str) -> list[str]:
    """Digests of the messages in ``queue``'s dead-letter queue, read over a connection of our
    own straight to RabbitMQ and given back unacknowledged when it closes."""
    name = f"{queue}.dead"
    with inst.rabbit.channel() as channel:
        try:
            count = channel.queue_declare(name, passive=True).method.message_count
        except pika.exceptions.ChannelClosedByBroker:
            return []  # never declared: nothing was dead-lettered
        found = []
        for _ in range(count):
            method, _, body = channel.basic_get(name, auto_ack=False)
            if method is None:
                break
            found.append(digest(body))
        return found


def test_poison_is_dead_lettered_and_takes_no_thread_down(installation, runs):
    inst = installation
    # given two closed hourly periods processed by two workers
    first = Timeperiod.containing("hourly", SystemClock().now()).previous(2)
    periods = [str(first), str(first.next())]
    inst.register_processes(
        {
            "name": "poisoned",
            "kind": "managed",
            "time_qualifier": "hourly",
            "start_timeperiod": str(first),
            "lag": 0,
            "trigger": "every 1h",
            "max_active": 2,
            "workers": 2,
            "retry_delay": 1,
            "command": command(runs.path, 0.5),
        }
    )
    inst.start_all()
    workers = inst.wait_workers("poisoned", 2)

    def processed_jobs() -> list:
        jobs = [inst.store.get_job("poisoned", tp) for tp in periods]
        return jobs if all(j.state is JobState.PROCESSED for j in jobs) else []

    before = inst.wait(processed_jobs, 60, "both periods processed before the poison")
    scheduler_pid = inst.daemons["scheduler"].pid
    poisoned_at = datetime.now(UTC)
    # when poison is published to the process's queue and to the status queue
    process_queue = f"{inst.queue_prefix}.poisoned"
    status_queue = f"{inst.queue_prefix}.uow_status"
    to_process = poison_bodies("poisoned")
    to_status = status_poison_bodies("poisoned")
    with inst.rabbit.channel() as channel:
        for queue, bodies in ((process_queue, to_process), (status_queue, to_status)):
            for body in bodies.values():
                channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
    # and both jobs are reprocessed afterwards
    for tp in periods:
        status, body = inst.api("POST", f"/jobs/poisoned/{tp}/reprocess")
        assert status == 200, body
    # then both are processed again, by new units of work
    old = {j.uow_id for j in before}

    def reprocessed() -> bool:
        jobs = [inst.store.get_job("poisoned", tp) for tp in periods]
        return all(j.state is JobState.PROCESSED and j.uow_id not in old for j in jobs)

    again = True
    try:
        inst.wait(reprocessed, AFTER_POISON, "both jobs processed again after the poison")
    except AssertionError:
        again = False
    expected_process = sorted(digest(b) for b in to_process.values())
    expected_status = sorted(digest(b) for b in to_status.values())

    def all_dead_lettered() -> bool:
        return (
            sorted(dead_letters(inst, process_queue)) == expected_process
            and sorted(dead_letters(inst, status_queue)) == expected_status
        )

    try:
        inst.wait(all_dead_lettered, 5, "every poison message dead-lettered")
    except AssertionError:
        pass
    dead_process = dead_letters(inst, process_queue)
    dead_status = dead_letters(inst, status_queue)
    jobs = [inst.store.get_job("poisoned", tp) for tp in periods]
    counts = tally(inst.store, runs, ["poisoned"])
    names = {digest(b): n for bodies in (to_process, to_status) for n, b in bodies.items()}
    verdict = Verdict()
    verdict.equal(
        "poison of the process queue not dead-lettered",
        sorted(names[d] for d in set(expected_process) - set(dead_process)),
        [],
    )
    verdict.equal(
        "poison of the status queue not dead-lettered",
        sorted(names[d] for d in set(expected_status) - set(dead_status)),
        [],
    )
    verdict.equal("both jobs processed again after the poison", again, True)
    verdict.equal("job states", [str(j.state) for j in jobs], ["processed", "processed"])
    verdict.equal("units of work lost", len(counts.lost), 0)
    verdict.equal("runs that should not have happened (twice)", len(counts.twice), 0)
    verdict.equal("workers gone", sorted(set(workers) - set(alive_pids(workers))), [])
    verdict.equal("worker exits recorded", inst.worker_exits("poisoned", 2, poisoned_at), [])
    verdict.equal("daemons dead", inst.dead_daemons(), [])
    verdict.equal("scheduler pid", inst.daemons["scheduler"].pid, scheduler_pid)
    verdict.check(f"{counts}\njobs {jobs}\n{inst.report()}")
