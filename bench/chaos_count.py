"""The counts of bench/chaos.py, read after the drain from the store (over a direct connection)
and from the counting command's runs file (``tests/faults/counting.py``).

- **lost**: ``tally``'s lost (a unit of work created before injection ended that is not processed
  or noop: still waiting, invalid, canceled, or processed without any run), plus every closed
  managed period whose job is not processed;
- **ran twice**: ``tally``'s twice (a (unit, attempt) started twice, or a start after a run of the
  unit had ended with exit code 0), each attributed when it is docs/faults.md's at-least-once
  case 2: the run that ended with 0 was claimed by a worker this bench SIGKILLed, so its outcome
  never reached the store. The runs file tells which came first (the bench writes a line into it
  just before each worker SIGKILL): the command's end (the case as written, "after its command
  finished") or the SIGKILL (the command, in a session of its own, ran on to its end as an orphan
  before the next worker on the box could end it);
- **retried**: units of work that took more than one attempt, grouped by the reason the store
  gives for each failed attempt.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from chaos_faults import parse_kill_line

from db.errors import NotFound
from db.states import TERMINAL_UOW_STATES, JobState
from mq.message import dead_letter_queue
from tests.faults.counting import tally, units_of
from tests.faults.installation import DAEMONS, file_lines_between

if TYPE_CHECKING:
    from chaos_faults import Done
    from chaos_rig import Rig

#: The pid in a worker's actor name (``worker flow@box1:1234-ab12``).
_ACTOR_PID = re.compile(r":(\d+)-[0-9a-f]+$")


def closed_periods(rig: Rig, now: datetime) -> list[tuple[str, str]]:
    """(process, timeperiod) of every managed period of the workload closed at ``now``."""
    found = []
    for process, qualifier in (("hourly", "hourly"), ("daily", "daily")):
        period = rig.work.backlog_start.cast(qualifier)
        while period.is_closed(now):
            found.append((process, str(period)))
            period = period.next()
    return found


def unprocessed_periods(rig: Rig, now: datetime) -> list[str]:
    """Closed managed periods whose job is not processed (with its state)."""
    missing = []
    for process, timeperiod in closed_periods(rig, now):
        try:
            state = rig.inst.store.get_job(process, timeperiod).state
        except NotFound:
            state = "no job"
        if state != JobState.PROCESSED:
            missing.append(f"{process} {timeperiod}: {state}")
    return missing


def open_units(rig: Rig, cutoff: datetime) -> list[str]:
    units = units_of(rig.inst.store, rig.work.processes, created_before=cutoff)
    return [f"{u.process} {u.id} {u.state}" for u in units if u.state not in TERMINAL_UOW_STATES]


def drain(rig: Rig, cutoff: datetime, deadline: float) -> tuple[float | None, list[str]]:
    """Wait until every unit of work created before ``cutoff`` is terminal and every closed
    managed period is processed; (seconds it took or None past ``deadline``, what is left)."""
    start = time.monotonic()
    left: list[str] = []
    while time.monotonic() - start < deadline:
        try:
            left = open_units(rig, cutoff) + unprocessed_periods(rig, datetime.now(UTC))
        except Exception as exc:  # noqa: BLE001 - a read that failed is tried again
            left = [f"read failed: {exc}"]
        if not left:
            return round(time.monotonic() - start, 1), []
        time.sleep(2.0)
    return None, left


@dataclass
class Twice:
    uow: str
    process: str
    detail: str
    #: ``case 2``, ``case 2 (orphan)`` or ``unnamed``.
    case: str
    worker: str = ""
    #: Why and when the store failed the earlier attempt, and the fault just before that.
    failed: str = ""


@dataclass
class Counts:
    units: dict[str, int] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)
    retried: dict[str, int] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    lost_by_kind: Counter[str] = field(default_factory=Counter)
    twice: list[Twice] = field(default_factory=list)
    twice_by_kind: Counter[str] = field(default_factory=Counter)
    retry_reasons: Counter[str] = field(default_factory=Counter)
    periods_closed: int = 0
    periods_unprocessed: list[str] = field(default_factory=list)
    unknown_runs: list[str] = field(default_factory=list)
    dead_daemons: list[str] = field(default_factory=list)
    workers_missing: list[str] = field(default_factory=list)
    workers_expected: int = 0
    worker_exits: list[str] = field(default_factory=list)
    poison_injected: dict[str, int] = field(default_factory=dict)
    dead_lettered: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def unnamed_twice(self) -> list[Twice]:
        return [t for t in self.twice if t.case == "unnamed"]


def kind_of(rig: Rig, process: str) -> str:
    if process in rig.work.freerun:
        return "freerun"
    if process in rig.work.managed:
        return "managed"
    return "ad-hoc"


def count(rig: Rig, cutoff: datetime, done: list[Done], started: datetime) -> Counts:
    """Every number of the report (see the module docstring)."""
    store = rig.inst.store
    processes = rig.work.processes
    result = Counts()
    counted = tally(store, rig.runs, processes, created_before=cutoff)
    units = units_of(store, processes, created_before=cutoff)
    by_id = {u.id: u for u in units}
    starts = rig.runs.starts()
    for uow in units:
        kind = kind_of(rig, uow.process)
        result.units[kind] = result.units.get(kind, 0) + 1
        runs = sum(1 for u, _ in starts if u == uow.id)
        result.runs[kind] = result.runs.get(kind, 0) + runs
    for line in counted.retried:
        kind = kind_of(rig, by_id[line.split()[0]].process)
        result.retried[kind] = result.retried.get(kind, 0) + 1
    for uow in units:
        if uow.attempt > 1:
            for event in store.history("uow", uow.id):
                if event.to_state == "invalid":
                    result.retry_reasons[_reason(event.reason)] += 1
    result.lost = list(counted.lost)
    for line in counted.lost:
        result.lost_by_kind[kind_of(rig, by_id[line.split()[0]].process)] += 1
    result.unknown_runs = list(counted.unknown_runs)
    now = datetime.now(UTC)
    result.periods_closed = len(closed_periods(rig, now))
    result.periods_unprocessed = unprocessed_periods(rig, now)
    result.twice = attribute(rig, by_id, done)
    for twice in result.twice:
        result.twice_by_kind[kind_of(rig, twice.process)] += 1
    result.dead_daemons = rig.inst.dead_daemons()
    for process, workers in rig.work.workers().items():
        if rig.inst.worker_pids(process, workers) is None:
            result.workers_missing.append(process)
        result.workers_expected += workers
        result.worker_exits += rig.inst.worker_exits(process, workers, started)
    for record in done:
        for queue, n in record.poison.items():
            result.poison_injected[queue] = result.poison_injected.get(queue, 0) + n
    with rig.direct_broker() as broker:
        for queue in result.poison_injected:
            result.dead_lettered[queue] = broker.depth(dead_letter_queue(queue))
    result.details = {
        "lost": result.lost,
        "twice": [t.__dict__ for t in result.twice],
        "retried": counted.retried,
        "lost_worker_failures": counted.lost_worker_failures,
        "periods_unprocessed": result.periods_unprocessed,
    }
    return result


def _reason(text: str) -> str:
    """A failure reason without its ids and numbers, to group alike ones."""
    first = (text or "").splitlines()[0] if text else "(none)"
    first = re.sub(r"\S+@\S+:\d+-[0-9a-f]+", "<worker>", first)
    first = re.sub(r"[0-9a-f]{24}", "<uow>", first)
    first = re.sub(r"\d+(\.\d+)?", "N", first)
    return first[:90]


def attribute(rig: Rig, by_id: dict[str, Any], done: list[Done]) -> list[Twice]:
    """Every run that should not have happened, with the at-least-once case it falls in."""
    lines = rig.runs.path.read_text().splitlines() if rig.runs.path.exists() else []
    killed_at: dict[int, tuple[int, str, datetime | None]] = {}
    begun: set[tuple[str, int]] = set()
    #: uow -> (attempt, line index) of the first run that ended with exit code 0.
    succeeded: dict[str, tuple[int, int]] = {}
    found: list[Twice] = []
    for index, line in enumerate(lines):
        kill = parse_kill_line(line)
        if kill is not None:
            killed_at.setdefault(kill[0], (index, kill[1], kill[2]))
            continue
        words = line.split()
        if not words or words[0] not in by_id:
            continue
        uow_id = words[0]
        if len(words) == 3 and words[2].startswith("end:"):
            if words[2] == "end:0":
                succeeded.setdefault(uow_id, (int(words[1]), index))
            continue
        if len(words) != 2:
            continue
        attempt = int(words[1])
        earlier: tuple[int, int] | None = None
        if (uow_id, attempt) in begun:
            detail = f"attempt {attempt} started again"
            earlier = (attempt, -1)
        elif uow_id in succeeded:
            earlier = succeeded[uow_id]
            detail = f"attempt {attempt} started after attempt {earlier[0]} ended with 0"
        begun.add((uow_id, attempt))
        if earlier is None:
            continue
        twice = Twice(uow_id, by_id[uow_id].process, detail, "unnamed")
        claimed, failed = attempts(rig, uow_id)
        failed_at = None
        if earlier[0] in failed:
            failed_at, reason = failed[earlier[0]]
            twice.failed = f"attempt {earlier[0]} failed at {failed_at:%H:%M:%S.%f}"[:-3]
            twice.failed += f": {reason}{after_fault(failed_at, done)}"
        for pid in claimed.get(earlier[0], []):
            if pid not in killed_at:
                continue
            kill_index, instance, kill_at = killed_at[pid]
            # the SIGKILL is the cause only if it came before the store failed the attempt
            if kill_index > index or (failed_at and kill_at and kill_at > failed_at):
                continue
            twice.worker = f"{instance} pid {pid}"
            if 0 <= earlier[1] < kill_index:
                twice.case = "case 2"
            elif earlier[1] > kill_index:
                twice.case = "case 2 (orphan)"
        found.append(twice)
    return found


def attempts(rig: Rig, uow_id: str) -> tuple[dict[int, list[int]], dict[int, tuple[Any, str]]]:
    """From the unit's history: attempt -> pids of the workers that claimed it, and attempt ->
    (instant, reason) of its failure (the events' ``attempt`` detail; without one, attempts
    are counted as invalid ones go back to requested)."""
    attempt = 1
    claimed: dict[int, list[int]] = {}
    failed: dict[int, tuple[Any, str]] = {}
    for event in rig.inst.store.history("uow", uow_id):
        if event.from_state == "invalid" and event.to_state == "requested":
            attempt += 1
        number = int((event.details or {}).get("attempt", attempt))
        if event.to_state == "in_progress":
            match = _ACTOR_PID.search(event.actor or "")
            if match:
                claimed.setdefault(number, []).append(int(match.group(1)))
        elif event.to_state in ("invalid", "canceled") and event.from_state == "in_progress":
            failed.setdefault(number, (event.at, f"{event.actor}: {event.reason}"))
    return claimed, failed


def after_fault(at: datetime, done: list[Done]) -> str:
    """Where ``at`` lies against the faults: during one, or how long after the last one."""
    last = None
    for record in done:
        window = record.window
        begun = window.start_utc if window else record.utc
        ended = window.end_utc if window else record.utc
        if begun is None or begun > at:
            continue
        if ended is None or ended >= at:
            return f" (during {record.fault.kind}, {record.target})"
        last = (record, ended)
    if last is None:
        return ""
    record, ended = last
    return f" ({(at - ended).total_seconds():.1f} s after {record.fault.kind}, {record.target})"


def log_lines(rig: Rig, done: list[Done]) -> dict[str, Any]:
    """Per daemon, the most log lines it wrote during one outage, and that outage's length; the
    workers as one row (the most any worker wrote)."""
    inst = rig.inst
    taps: dict[str, list[Any]] = {}
    for daemon in [*inst.retired, *inst.daemons.values()]:
        taps.setdefault(daemon.name, []).append(daemon.tap)
    worst: dict[str, tuple[int, float]] = {}
    for record in done:
        window = record.window
        if window is None or not window.end:
            continue
        for name in DAEMONS:
            lines = sum(len(tap.between(window.start, window.end)) for tap in taps.get(name, []))
            if lines >= worst.get(name, (-1, 0.0))[0]:
                worst[name] = (lines, round(window.seconds, 1))
        for path in sorted((inst.var / "log").glob("*.log")):
            if path.stem in DAEMONS:
                continue
            lines = len(file_lines_between(path, window.start_local, window.end_local))
            if lines >= worst.get("workers", (-1, 0.0))[0]:
                worst["workers"] = (lines, round(window.seconds, 1))
    return worst
