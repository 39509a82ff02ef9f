"""State names and state groups (SPEC section 3). Standard library only: every layer imports it."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """State of a job, one (managed process, timeperiod) pair.

    - ``embryo``: the slot exists; no unit of work yet.
    - ``in_progress``: processing (a continuous job may run many units of work while open).
    - ``final_run``: the period is closed and finalizable; the last unit of work is in flight.
    - ``processed``: done (terminal until reprocessed).
    - ``skipped``: given up: retries exhausted, skipped by hand or a dependency skipped
      (terminal until reprocessed).
    - ``noop``: nothing to do (terminal).
    """

    EMBRYO = "embryo"
    IN_PROGRESS = "in_progress"
    FINAL_RUN = "final_run"
    PROCESSED = "processed"
    SKIPPED = "skipped"
    NOOP = "noop"


class UowState(StrEnum):
    """State of a unit of work.

    - ``requested``: created or re-posted; waiting for a worker.
    - ``in_progress``: claimed by exactly one worker.
    - ``processed``: succeeded.
    - ``noop``: succeeded with nothing to do.
    - ``invalid``: this attempt failed; returns to requested after the retry delay while
      attempts remain.
    - ``canceled``: given up for good; the job then becomes skipped.

    Two more states belong to the steps of a flow run (SPEC section 10):

    - ``pending``: a step waiting for its upstream steps;
    - ``upstream_failed``: a step whose ``run_if`` can no longer be met (terminal).
    """

    PENDING = "pending"
    REQUESTED = "requested"
    IN_PROGRESS = "in_progress"
    PROCESSED = "processed"
    NOOP = "noop"
    INVALID = "invalid"
    CANCELED = "canceled"
    UPSTREAM_FAILED = "upstream_failed"


class RunIf(StrEnum):
    """When a step of a flow runs, judged once all its upstream steps have ended.

    - ``all_succeeded``: every upstream step processed or noop (else ``upstream_failed``);
    - ``all_done``: whatever the upstream steps ended as;
    - ``any_failed``: at least one upstream step canceled or upstream_failed (else ``noop``).
    """

    ALL_SUCCEEDED = "all_succeeded"
    ALL_DONE = "all_done"
    ANY_FAILED = "any_failed"


class SupervisedState(StrEnum):
    """State of a supervised OS process on a box, as supervisord users know it.

    - ``stopped``: not running and not wanted, or never started.
    - ``starting``: started; must stay up ``startsecs`` to count as running.
    - ``running``: up and past ``startsecs``.
    - ``backoff``: exited while starting; restarts after a growing delay.
    - ``stopping``: asked to stop; waiting for it to exit.
    - ``exited``: exited after it was running; restarted per policy.
    - ``fatal``: too many failed starts; not restarted until asked.
    """

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    EXITED = "exited"
    FATAL = "fatal"


class WorkerState(StrEnum):
    """State of a worker's registration (and of a scheduler's presence record).

    - ``alive``: registered and beating (judged by its last heartbeat, see ``db.liveness``);
    - ``lost``: silent for longer than ``heartbeat_interval * heartbeat_misses``; its units of
      work were failed and retried. A lost worker that beats again is alive again;
    - ``stopped``: it stopped as asked.
    """

    ALIVE = "alive"
    LOST = "lost"
    STOPPED = "stopped"


class ProcessKind(StrEnum):
    """Kind of a registered process."""

    MANAGED = "managed"
    FREERUN = "freerun"
    DAEMON = "daemon"


class UowKind(StrEnum):
    """What created a unit of work."""

    MANAGED = "managed"
    FREERUN = "freerun"
    ADHOC = "adhoc"


class FireOutcome(StrEnum):
    """What happened to one scheduled fire of a freerun trigger."""

    FIRED = "fired"
    SKIPPED = "skipped"
    MISSED = "missed"


#: Job states from which nothing more happens until someone reprocesses.
FINISHED_JOB_STATES = frozenset({JobState.PROCESSED, JobState.SKIPPED, JobState.NOOP})
#: Job states the scheduler still drives.
ACTIVE_JOB_STATES = frozenset({JobState.EMBRYO, JobState.IN_PROGRESS, JobState.FINAL_RUN})
#: Job states that satisfy a ``dependencies`` blocking (skipped does not).
SUCCESSFUL_JOB_STATES = frozenset({JobState.PROCESSED, JobState.NOOP})

#: Unit-of-work states that never change again (until a flow run's ``retry-failed``).
TERMINAL_UOW_STATES = frozenset(
    {UowState.PROCESSED, UowState.NOOP, UowState.CANCELED, UowState.UPSTREAM_FAILED}
)
#: Unit-of-work states that count as in flight (occupying a ``max_active`` slot).
ACTIVE_UOW_STATES = frozenset(
    {UowState.PENDING, UowState.REQUESTED, UowState.IN_PROGRESS, UowState.INVALID}
)
#: Unit-of-work states that report success.
SUCCESSFUL_UOW_STATES = frozenset({UowState.PROCESSED, UowState.NOOP})
#: Unit-of-work states of a failed attempt or run (a task's ``failed_at``).
FAILED_UOW_STATES = frozenset({UowState.INVALID, UowState.CANCELED})
#: Step states that count as a failure for ``run_if`` (and that ``retry-failed`` re-runs).
FAILED_STEP_STATES = frozenset({UowState.CANCELED, UowState.UPSTREAM_FAILED})

#: Supervised states in which an OS process exists and may be signalled.
SIGNALLABLE_STATES = frozenset(
    {SupervisedState.STARTING, SupervisedState.RUNNING, SupervisedState.STOPPING}
)
#: Supervised states in which no OS process exists.
STOPPED_STATES = frozenset(
    {
        SupervisedState.STOPPED,
        SupervisedState.EXITED,
        SupervisedState.FATAL,
        SupervisedState.BACKOFF,
    }
)


class Qualifier(StrEnum):
    """Calendar grid of a managed process, finest first."""

    HOURLY = "hourly"
    DAILY = "daily"
    MONTHLY = "monthly"
    YEARLY = "yearly"

    @property
    def rank(self) -> int:
        """0 for hourly up to 3 for yearly: coarser qualifiers rank higher."""
        return _QUALIFIER_RANK[self]


_QUALIFIER_RANK = {
    Qualifier.HOURLY: 0,
    Qualifier.DAILY: 1,
    Qualifier.MONTHLY: 2,
    Qualifier.YEARLY: 3,
}


class StateMachineName(StrEnum):
    """How a managed process drives its jobs (SPEC section 3)."""

    DISCRETE = "discrete"
    CONTINUOUS = "continuous"
    RECOMPUTING = "recomputing"


class Blocking(StrEnum):
    """What a managed job waits for before it runs (SPEC section 3)."""

    NORMAL = "normal"
    CHILDREN = "children"
    DEPENDENCIES = "dependencies"


class Catchup(StrEnum):
    """What a freerun does with the fires it missed while the scheduler was down."""

    ALL = "all"
    LATEST = "latest"
    NONE = "none"


class ProcessSource(StrEnum):
    """Where a registered process came from: a registration file, or the API at run time."""

    FILE = "file"
    API = "api"
