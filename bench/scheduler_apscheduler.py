"""The APScheduler 3 side of bench/scheduler.py's freerun lateness (run in its own venv).

    bench/.venv-apscheduler/bin/python bench/scheduler_apscheduler.py --jobs 1000 --seconds 20

A BackgroundScheduler with its defaults (MemoryJobStore, ThreadPoolExecutor of 10 threads,
misfire_grace_time 1 s, coalesce off, max_instances 1) runs ``--jobs`` interval jobs every
second doing nothing, all starting on the same whole second (as Tactus's ``every 1`` triggers,
aligned to the epoch, do). The first ``--seconds`` instants count; the scheduler runs
``--drain`` seconds longer so that late runs of the last ones are seen. Lateness of a run =
when the function started (it returns ``time.time()``) - the event's ``scheduled_run_time``.
Prints one JSON line. Imports nothing from Tactus.
"""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
from collections import Counter
from datetime import UTC, datetime

import apscheduler
from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
from apscheduler.schedulers.background import BackgroundScheduler

WATCHED = EVENT_JOB_EXECUTED | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES


def noop() -> float:
    return time.time()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--drain", type=float, default=5.0)
    args = parser.parse_args()
    events: list[tuple[int, float, float]] = []  # (code, scheduled, lateness)
    lock = threading.Lock()

    def listener(event) -> None:
        scheduled = event.scheduled_run_time.timestamp()
        late = event.retval - scheduled if event.code == EVENT_JOB_EXECUTED else 0.0
        with lock:
            events.append((event.code, scheduled, late))

    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.add_listener(listener, WATCHED)
    first = math.ceil(time.time()) + 2  # every job's first run, on a whole second
    start = datetime.fromtimestamp(first, UTC)
    for i in range(args.jobs):
        scheduler.add_job(noop, "interval", seconds=1, start_date=start, id=f"job{i}")
    scheduler.start()
    last = first + args.seconds - 1
    time.sleep(max(0.0, last + args.drain - time.time()))
    scheduler.shutdown(wait=True)
    with lock:
        counted = [(code, late) for code, scheduled, late in events if scheduled <= last]
    codes = Counter(code for code, _ in counted)
    result = {
        "version": apscheduler.__version__,
        "expected": args.seconds * args.jobs,
        "missed": codes[EVENT_JOB_MISSED],
        "max_instances": codes[EVENT_JOB_MAX_INSTANCES],
        "lateness_s": [late for code, late in counted if code == EVENT_JOB_EXECUTED],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
