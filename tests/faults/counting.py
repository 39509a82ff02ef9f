"""Counting runs and units of work: "lost" and "ran twice" as numbers.

Every command of the fault tests is ``count_run.py`` (:func:`command`), which appends
``<uow_id> <attempt>`` to a runs file as it starts and ``<uow_id> <attempt> end:<exit code>`` as
it ends. :func:`tally` puts that file beside the units of work in the store (read over a direct connection, never through the faulted proxy) and counts:

- **lost**: a unit of work that did not end successfully: still requested, in progress or
  invalid at the end, canceled (given up), or marked processed without any run of its command;
- **twice**: a run that should not have happened: the same (unit of work, attempt) started more
  than once, or any start of a unit of work after one of its runs had ended with exit code 0;
- **retried**: a unit of work that took more than one attempt although every command of these
  tests succeeds: an attempt was spent on a fault (worker declared lost, run killed ...);
- **lost_worker_failures**: history events failing a unit of work because its worker was
  declared lost or stopped beating.

Each count lists the ids behind it, so a failing assertion names the units of work.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from db.clock import SystemClock
from db.models import UowQuery
from db.states import SUCCESSFUL_UOW_STATES, TERMINAL_UOW_STATES, JobState, UowState
from db.timeperiod import Timeperiod

if TYPE_CHECKING:
    from db.models import UnitOfWork
    from db.store import Store
    from tests.faults.drill import Verdict
    from tests.faults.installation import FaultInstallation

#: The counting command.
COUNT_RUN = Path(__file__).with_name("count_run.py")


def command(runs_file: Path, seconds: float = 0.0, exit_code: int = 0) -> list[str]:
    """The argv (SPEC section 4 placeholders) of a command that counts its runs in
    ``runs_file``, runs ``seconds`` and exits with ``exit_code``."""
    return [
        sys.executable,
        str(COUNT_RUN),
        str(runs_file),
        "{uow_id}",
        "{attempt}",
        str(seconds),
        str(exit_code),
    ]


class RunLog:
    """The runs file of one test: start lines ``<uow_id> <attempt>`` and end lines
    ``<uow_id> <attempt> end:<exit code>``, in the order they happened."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def events(self) -> list[tuple[str, str, int, int | None]]:
        """(``start`` or ``end``, uow id, attempt, exit code or None) in file order."""
        if not self.path.exists():
            return []
        # a line being appended right now may lack its newline: count complete lines only
        text = self.path.read_text()
        found: list[tuple[str, str, int, int | None]] = []
        for line in text[: text.rfind("\n") + 1].splitlines():
            parts = line.split()
            if len(parts) == 2:
                found.append(("start", parts[0], int(parts[1]), None))
            elif len(parts) == 3 and parts[2].startswith("end:"):
                found.append(("end", parts[0], int(parts[1]), int(parts[2][4:])))
        return found

    def starts(self) -> list[tuple[str, int]]:
        """(uow id, attempt) of every run started, in order."""
        return [(u, a) for kind, u, a, _ in self.events() if kind == "start"]

    def started(self, uow_id: str) -> int:
        """How many runs of ``uow_id`` started."""
        return sum(1 for u, _ in self.starts() if u == uow_id)

    def ended(self, uow_id: str) -> int:
        """How many runs of ``uow_id`` ended."""
        return sum(1 for kind, u, _, _ in self.events() if kind == "end" and u == uow_id)


@dataclass
class Tally:
    """The counts of one test (see the module docstring); ``as_numbers`` for assertions."""

    units: int = 0
    runs: int = 0
    lost: list[str] = field(default_factory=list)
    twice: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    lost_worker_failures: list[str] = field(default_factory=list)
    #: Runs of units of work the store does not have (the test's bookkeeping is wrong).
    unknown_runs: list[str] = field(default_factory=list)

    def as_numbers(self) -> dict[str, int]:
        return {
            "lost": len(self.lost),
            "twice": len(self.twice),
            "retried": len(self.retried),
            "lost_worker_failures": len(self.lost_worker_failures),
            "unknown_runs": len(self.unknown_runs),
        }

    def __str__(self) -> str:
        return (
            f"{self.units} units of work, {self.runs} runs; lost {self.lost}; "
            f"twice {self.twice}; retried {self.retried}; "
            f"failed as worker lost {self.lost_worker_failures}; unknown runs {self.unknown_runs}"
        )


#: History reasons of a failure for a silent worker (``db/liveness.py``).
LOST_WORKER_REASONS = ("lost (no heartbeat", "no heartbeat from worker")


def units_of(
    store: Store, processes: list[str], *, created_before: datetime | None = None
) -> list[UnitOfWork]:
    """Every unit of work of ``processes`` (created before ``created_before``, if given)."""
    found: list[UnitOfWork] = []
    for process in processes:
        cursor: str | None = None
        while True:
            page = store.find_uows(
                UowQuery(process=process, newest_first=False), limit=500, cursor=cursor
            )
            found.extend(page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
    if created_before is not None:
        found = [u for u in found if u.created_at < created_before]
    return found


def tally(
    store: Store,
    runs: RunLog,
    processes: list[str],
    *,
    created_before: datetime | None = None,
) -> Tally:
    """Count lost, doubled and retried units of work of ``processes`` (see the module
    docstring); only those created before ``created_before`` when it is given (later ones may
    still be running when the test ends, and their runs are left out too)."""
    units = units_of(store, processes, created_before=created_before)
    by_id = {u.id: u for u in units}
    all_ids = {u.id for u in units_of(store, processes)}
    events = runs.events()
    starts = [(u, a) for kind, u, a, _ in events if kind == "start"]
    result = Tally(units=len(units), runs=sum(1 for u, _ in starts if u in by_id))
    result.unknown_runs = sorted({u for u, _ in starts if u not in all_ids})
    # each start that should not have happened counts once: its (unit of work, attempt) had
    # started before, or an earlier run of the unit of work had succeeded
    begun: set[tuple[str, int]] = set()
    succeeded: dict[str, int] = {}
    for kind, uow_id, attempt, code in events:
        if uow_id not in by_id:
            continue
        if kind == "end":
            if code == 0:
                succeeded.setdefault(uow_id, attempt)
            continue
        if (uow_id, attempt) in begun:
            result.twice.append(f"{uow_id} attempt {attempt} started again")
        elif uow_id in succeeded:
            result.twice.append(
                f"{uow_id} attempt {attempt} started after attempt {succeeded[uow_id]} succeeded"
            )
        begun.add((uow_id, attempt))
    ran = {u for u, _ in starts}
    for uow in units:
        if uow.state not in SUCCESSFUL_UOW_STATES:
            result.lost.append(f"{uow.id} {uow.state} (attempt {uow.attempt}): {uow.error}")
        elif uow.id not in ran:
            result.lost.append(f"{uow.id} {uow.state} without any run of its command")
        if uow.attempt > 1 or len({a for u, a in starts if u == uow.id}) > 1:
            result.retried.append(f"{uow.id} attempt {uow.attempt} ({uow.state})")
        for event in store.history("uow", uow.id):
            if event.trigger == "fail" and any(r in event.reason for r in LOST_WORKER_REASONS):
                result.lost_worker_failures.append(f"{uow.id}: {event.reason}")
    return result


def unit_state(store: Store, uow_id: str) -> UowState | None:
    try:
        return store.get_uow(uow_id).state
    except Exception:  # noqa: BLE001 - not stored (yet), or the store hiccuped: not an answer
        return None


def processed_after(store: Store, processes: list[str], instant: datetime) -> int:
    """Units of work of ``processes`` created after ``instant`` and processed: work flows."""
    return sum(
        u.state is UowState.PROCESSED and u.created_at > instant for u in units_of(store, processes)
    )


def settled(store: Store, processes: list[str], cutoff: datetime) -> bool:
    """Every unit of work of ``processes`` created before ``cutoff`` has ended (retries
    included): what a drill counts is final."""
    return all(
        u.state in TERMINAL_UOW_STATES for u in units_of(store, processes, created_before=cutoff)
    )


def job_state(store: Store, process: str, timeperiod: str) -> JobState | None:
    """The job's state; None while it is not materialized (or the store cannot say)."""
    try:
        return store.get_job(process, timeperiod).state
    except Exception:  # noqa: BLE001 - not materialized yet, or the store away for a moment
        return None


def each_period_once(
    verdict: Verdict, store: Store, runs: RunLog, process: str, periods: list[str]
) -> Tally:
    """The rows of a managed drill: every period processed, each run once, with one unit of
    work each, none lost, none run twice; returns the tally for the report."""
    units = units_of(store, [process])
    period_of = {u.id: u.timeperiod for u in units}
    runs_per_period = Counter(period_of.get(u) for u, _ in runs.starts())
    counts = tally(store, runs, [process])
    verdict.equal(
        "job states",
        [str(job_state(store, process, tp)) for tp in periods],
        ["processed"] * len(periods),
    )
    verdict.equal("runs per period", [runs_per_period[tp] for tp in periods], [1] * len(periods))
    verdict.equal(
        "units of work per period",
        [sum(u.timeperiod == tp for u in units) for tp in periods],
        [1] * len(periods),
    )
    verdict.equal("units of work lost", len(counts.lost), 0)
    verdict.equal("runs that should not have happened (twice)", len(counts.twice), 0)
    return counts


def hourly_backlog(inst: FaultInstallation, runs: RunLog, periods: int) -> list[str]:
    """Register ``ticker``: the ``periods`` closed hours before this one to catch up, one at a
    time (``max_active`` 1, no lag), each run counted; returns their timeperiods."""
    first = Timeperiod.containing("hourly", SystemClock().now()).previous(periods)
    inst.register_processes(
        {
            "name": "ticker",
            "kind": "managed",
            "time_qualifier": "hourly",
            "start_timeperiod": str(first),
            "lag": 0,
            "max_active": 1,
            "retry_delay": 1,
            "command": command(runs.path, 0.2),
        }
    )
    return [str(first.next(i)) for i in range(periods)]
