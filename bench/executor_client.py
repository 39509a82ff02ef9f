"""One executor of bench/executor.py: ``launch.py executor`` as it runs, with each claim that
brought a unit of work timed (the round trip of ``POST /executor/claim``), written to a JSON
file when it stops.

    python bench/executor_client.py URL TOKEN_FILE NAME SLOTS OUT_JSON
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mx.client import ApiClient  # noqa: E402
from process_starter import EXECUTOR_REQUEST_MARGIN, HttpExecutorApi  # noqa: E402
from settings import load_settings  # noqa: E402
from workers.executor.batch import OutcomeBatcher  # noqa: E402
from workers.executor.loop import Executor, ExecutorConfig  # noqa: E402
from workers.executor.retry import BackoffPolicy  # noqa: E402

#: Seconds of a claim's long poll.
WAIT = 5.0


class TimedApi(HttpExecutorApi):
    """Records the seconds of every claim that brought a unit of work (with
    :class:`TimedOutcomes`, an outcome that came back with the next claim counts as one)."""

    def __init__(self, client: ApiClient) -> None:
        super().__init__(client)
        #: (wall-clock start, seconds) of each claim that brought a unit of work.
        self.latencies: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def claim(self, body):
        at, started = time.time(), time.perf_counter()
        data = super().claim(body)
        if data is not None:
            self.record(at, started)
        return data

    def record(self, at: float, started: float) -> None:
        with self._lock:
            self.latencies.append((at, time.perf_counter() - started))


class TimedOutcomes(OutcomeBatcher):
    """The executor's outcomes, each that came back with the slot's next claim timed as a
    claim: from the slot's call to its answer (a wait for the request on the way included,
    when its outcome went in a batch)."""

    def __init__(self, api: TimedApi) -> None:
        super().__init__(api)
        self.timed = api

    def outcome(self, uow_id, body):
        at, started = time.time(), time.perf_counter()
        answer = super().outcome(uow_id, body)
        if answer.get("next") is not None:  # a claim made with the outcome
            self.timed.record(at, started)
        return answer


def main() -> int:
    url, token_file, name, slots, out = sys.argv[1:6]
    token = Path(token_file).read_text().strip()
    client = ApiClient(url, token=token, timeout=WAIT + EXECUTOR_REQUEST_MARGIN)
    api = TimedApi(client)
    config = ExecutorConfig(
        name=name, box_id="bench", slots=int(slots), wait=WAIT, backoff=BackoffPolicy()
    )
    executor = Executor(api, config, load_settings())
    executor.outcomes = TimedOutcomes(api)
    code = executor.run()
    Path(out).write_text(json.dumps({"pid": os.getpid(), "claims": api.latencies}))
    return code


if __name__ == "__main__":
    sys.exit(main())
