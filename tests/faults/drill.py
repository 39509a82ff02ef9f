"""The pieces every drill shares: the outage window, its length, and a verdict that names every
number measured, so that one failing run shows all that was wrong, not only the first."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: "At most a handful of log lines a minute during an outage" (issue 12): a daemon logs one
#: warning when an outage starts, one a minute while it lasts and one when it ends (SPEC 15);
#: a handful leaves room for a few lines about the work in hand.
HANDFUL_PER_MINUTE = 5


@dataclass
class Window:
    """When a fault started and ended, on the monotonic clock (for log taps), the UTC clock (for
    the store's instants) and the local clock (for log files)."""

    start: float = 0.0
    end: float = 0.0
    start_utc: datetime | None = None
    end_utc: datetime | None = None
    start_local: datetime | None = None
    end_local: datetime | None = None

    def open(self) -> None:
        self.start, self.start_utc, self.start_local = (
            time.monotonic(),
            datetime.now(UTC),
            datetime.now(),
        )

    def close(self) -> None:
        self.end, self.end_utc, self.end_local = time.monotonic(), datetime.now(UTC), datetime.now()

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def handful(self) -> int:
        """The most log lines a daemon may write in this window."""
        return HANDFUL_PER_MINUTE * max(1, math.ceil(self.seconds / 60.0))


def hold(seconds: float) -> None:
    """Keep a fault in place for ``seconds``. This is the fault's length, a parameter of the
    drill, not a wait for something to happen (those poll under a deadline)."""
    time.sleep(seconds)


@dataclass
class Verdict:
    """Measured numbers and what each should be; :meth:`check` fails listing every row."""

    rows: list[tuple[str, Any, str, bool]] = field(default_factory=list)

    def equal(self, what: str, value: Any, expected: Any) -> None:
        self.rows.append((what, value, f"== {expected!r}", value == expected))

    def at_most(self, what: str, value: float | None, limit: float) -> None:
        ok = value is not None and value <= limit
        self.rows.append((what, value, f"<= {limit}", ok))

    def at_least(self, what: str, value: float | None, limit: float) -> None:
        ok = value is not None and value >= limit
        self.rows.append((what, value, f">= {limit}", ok))

    def table(self) -> str:
        return "\n".join(
            f"  {'ok  ' if ok else 'FAIL'} {what}: {value!r} (expected {rule})"
            for what, value, rule, ok in self.rows
        )

    def check(self, details: str = "") -> None:
        """Fail listing every row if one fails; print the rows either way, so that a passing
        drill's numbers are read with ``pytest -rP`` (the figures of docs/reliability.md)."""
        print(f"drill verdict:\n{self.table()}")  # noqa: T201
        failed = [row for row in self.rows if not row[3]]
        if failed:
            raise AssertionError(
                f"{len(failed)} of {len(self.rows)} checks failed:\n{self.table()}\n{details}"
            )
