"""Shared parts of bench/scheduler.py: a no-op broker, registration, simulated workers, stats.

Imported by the bench/scheduler_*.py parts (bench/ is on ``sys.path`` when the script runs).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402

from db.models import ProcessRecord  # noqa: E402
from db.registration import entry_from_mapping  # noqa: E402
from db.state_change import change_uow  # noqa: E402
from db.states import ProcessSource  # noqa: E402
from mq.broker import Broker, Consumer  # noqa: E402
from mq.message import Message  # noqa: E402

T = TypeVar("T")


class _IdleConsumer(Consumer):
    """A status queue nobody writes to: ``get`` waits out its timeout and returns None."""

    def __init__(self) -> None:
        self._closed = threading.Event()

    def get(self, timeout: float):
        self._closed.wait(timeout)
        return None

    def ack(self, delivery) -> None:
        pass

    def reject(self, delivery, reason: str) -> None:
        pass

    def requeue(self, delivery, delay: timedelta | None = None) -> None:
        pass

    def extend(self, delivery, visibility: timedelta) -> None:
        pass

    def close(self) -> None:
        self._closed.set()


class NullBroker(Broker):
    """Publishes nowhere; keeps each published unit of work id with the wall time of publish.

    Stands in for RabbitMQ or the embedded queue so that the benchmarks time the scheduler and
    its store, not a broker.
    """

    backend = "null"

    def __init__(self) -> None:
        self.published: list[tuple[str, datetime]] = []
        self._lock = threading.Lock()

    def declare(self, queue: str) -> None:
        pass

    def publish(self, queue: str, body: bytes, *, delay: timedelta | None = None) -> None:
        at = datetime.now(UTC)
        uow_id = Message.decode(body).uow_id
        with self._lock:
            self.published.append((uow_id, at))

    def publish_many(self, messages) -> None:
        for queue, body in messages:
            self.publish(queue, body)

    def consumer(self, queue: str, *, prefetch: int = 1) -> Consumer:
        return _IdleConsumer()

    def depth(self, queue: str) -> int:
        return 0

    def purge(self, queue: str) -> int:
        return 0

    def delete(self, queue: str) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> list[str]:
        """The ids published since the last call."""
        with self._lock:
            ids = [uow_id for uow_id, _ in self.published]
            self.published.clear()
        return ids


def register(store, now: datetime, **fields: Any) -> ProcessRecord:
    """Store one process as ``launch.py register`` would (validated by the real rules)."""
    entry = entry_from_mapping(fields)
    record = ProcessRecord(
        entry=entry,
        source=ProcessSource.FILE,
        registered=entry.to_dict(),
        created_at=now,
        updated_at=now,
    )
    return store.insert_process(record)


def work(store, clock, uow_ids: list[str], outcome: str = "succeed") -> None:
    """Play the workers: claim each unit of work and finish it at once (as a worker does, through
    :func:`db.state_change.change_uow`: two compare-and-set writes each)."""
    for uow_id in uow_ids:
        uow = store.get_uow(uow_id)
        now = clock.now()
        claimed = change_uow(
            store,
            uow,
            "claim",
            clock=clock,
            actor="worker bench",
            changes={"worker_id": "bench", "started_at": now},
        )
        change_uow(
            store,
            claimed,
            outcome,
            clock=clock,
            actor="worker bench",
            changes={"finished_at": clock.now()},
        )


def rss_mib() -> float:
    return psutil.Process(os.getpid()).memory_info().rss / 2**20


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary_ms(seconds: list[float]) -> dict[str, float]:
    """p50, p99 and max of a list of durations in seconds, as milliseconds."""
    if not seconds:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    return {
        "n": len(seconds),
        "p50": percentile(seconds, 50) * 1e3,
        "p99": percentile(seconds, 99) * 1e3,
        "max": max(seconds) * 1e3,
    }


def _call(fn: Callable[..., T], args: tuple) -> T:
    try:
        return fn(*args)
    except Exception as exc:
        # our exceptions do not all survive pickling: send the text back instead
        traceback.print_exc()
        raise RuntimeError(f"{type(exc).__name__}: {exc}") from None


def isolated(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in a fresh interpreter (spawned), so RSS figures start clean.

    Raises:
        RuntimeError: ``fn`` raised; the message names the exception.
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_call, fn, args).result()


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """The scheduler logs one line per state change: keep them out of the timings."""
    import logging

    logger = logging.getLogger("tactus")
    level, logger.level = logger.level, logging.WARNING
    try:
        yield
    finally:
        logger.setLevel(level)


def stopwatch() -> Callable[[], float]:
    start = time.perf_counter()
    return lambda: time.perf_counter() - start
