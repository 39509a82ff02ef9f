"""Waiting for a quiet machine before a measurement (other people run tests on it)."""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime

#: A 1-minute load average under this counts as quiet (2 cores).
QUIET_LOAD = 1.5


def log(text: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {text}", file=sys.stderr, flush=True)


class Quiet:
    """Waits for a quiet machine (1-minute load average below QUIET_LOAD, checked every 30 s)
    before each part, within one budget for the whole run; notes what it found."""

    def __init__(self, budget_s: float, enabled: bool) -> None:
        self.budget_s = budget_s
        self.enabled = enabled
        self.notes: list[str] = []

    def wait(self, part: str, every_s: float = 30) -> None:
        waited = 0.0
        load = os.getloadavg()[0]
        while self.enabled and load >= QUIET_LOAD and self.budget_s > 0:
            log(f"load {load:.2f} >= {QUIET_LOAD}: waiting before {part}")
            time.sleep(every_s)
            waited += every_s
            self.budget_s -= every_s
            load = os.getloadavg()[0]
        state = "quiet" if load < QUIET_LOAD else "NOT quiet (budget spent)"
        if not self.enabled:
            state = "no wait (--quick or --no-wait)"
        self.notes.append(f"{part}: load {load:.2f} after waiting {waited:.0f} s, {state}")
        log(self.notes[-1])
