"""The rules that gate a managed job's progress and a freerun fire, written once.

The scheduler decides with them (``scheduler/managed.py``, ``scheduler/freerun.py``,
``scheduler/recovery.py``), and ``mx/services/why.py`` explains with them why a process has not
run, so an explanation can never follow other rules than the decision. Every function here is
pure: the callers read the store and pass what they read.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from db.backoff import backoff
from db.states import Blocking, StateMachineName

if TYPE_CHECKING:
    from db.models import FireRecord, ProcessEntry, UnitOfWork
    from db.relations import Readiness
    from db.timeperiod import Timeperiod


#: The trigger that paces a managed process's looks when its entry sets none.
DEFAULT_MANAGED_TRIGGER = "every 60"
#: Jobs of one process the scheduler looks at per pass beyond ``max_active`` (its active
#: window): the embryos that may start; more wait for the next look.
LOOK_WINDOW = 50


class BlockingVerdict(StrEnum):
    """What a job's ``blocking`` type makes of its relations' readiness (SPEC section 3)."""

    GO = "go"  # nothing blocks the job from running
    WAIT = "wait"  # a dependency or child is not finished (or not succeeded) yet
    SKIP = "skip"  # ``dependencies`` blocking and a dependency was skipped: skip the job too


def closes_at(entry: ProcessEntry, period: Timeperiod) -> datetime:
    """When an embryo's period counts as closed: its end, plus ``lag`` for a discrete process
    (a discrete job starts only then; continuous ones finalize only then)."""
    lag = entry.lag if entry.state_machine is StateMachineName.DISCRETE else timedelta(0)
    return period.end + lag


def blocking_verdict(blocking: Blocking, ready: Readiness) -> BlockingVerdict:
    """Whether an embryo job of a process with ``blocking`` may start, given its relations.

    ``normal`` never blocks a start (only finalization waits); ``children`` waits until every
    dependency and child is finished; ``dependencies`` waits until every dependency succeeded
    and skips the job when one was skipped.
    """
    if blocking is Blocking.DEPENDENCIES:
        if ready.dependency_skipped:
            return BlockingVerdict.SKIP
        if not ready.dependencies_succeeded:
            return BlockingVerdict.WAIT
    if blocking is Blocking.CHILDREN and not ready.finalizable:
        return BlockingVerdict.WAIT
    return BlockingVerdict.GO


def free_slots(max_active: int, in_flight: int) -> int:
    """Units of work a process may still start with ``in_flight`` ones in flight (none: 0)."""
    return max(0, max_active - in_flight)


def attempts_remain(uow: UnitOfWork) -> bool:
    """Whether a failed unit of work may be retried (its attempt is not past ``retries``)."""
    return uow.attempt <= uow.retries


def retry_time(uow: UnitOfWork, retry_delay: timedelta) -> datetime:
    """When an invalid unit of work returns to requested: its stored ``retry_at``, or (before
    recovery stored one) ``retry_delay`` doubling per attempt after it failed."""
    if uow.retry_at is not None:
        return uow.retry_at
    failed_at = uow.finished_at or uow.updated_at
    return failed_at + backoff(retry_delay, uow.attempt)


def fire_baseline(updated_at: datetime, last: FireRecord | None) -> datetime:
    """Fires after this instant are a freerun's candidates: its last recorded fire, or the
    last edit of the process (a new trigger or a re-enable does not fire what passed before)."""
    if last is not None and last.scheduled_at > updated_at:
        return last.scheduled_at
    return updated_at
