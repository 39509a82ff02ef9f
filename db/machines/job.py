"""Job state machines (SPEC section 3): one table per ``state_machine`` a process can choose.

Facts the scheduler establishes before asking:

- ``finalizable``: every dependency counterpart and every child job is finished;
- ``closed``: the period has ended (plus ``lag`` for discrete).

``retry_failed`` (skipped -> in_progress) follows a flow run put back in progress by
``retry-failed`` (SPEC section 10): the job waits for the same unit of work again.
"""

from __future__ import annotations

from db.machines.base import Row, TableMachine
from db.states import JobState, StateMachineName

EMBRYO = JobState.EMBRYO
IN_PROGRESS = JobState.IN_PROGRESS
FINAL_RUN = JobState.FINAL_RUN
PROCESSED = JobState.PROCESSED
SKIPPED = JobState.SKIPPED
NOOP = JobState.NOOP

# fmt: off
#: discrete: one unit of work once the period has closed; no final_run.
DISCRETE_JOB_TRANSITIONS = [
    #   trigger          source        dest          conditions
    Row("start",         EMBRYO,       IN_PROGRESS,  ("closed",)),
    Row("skip",          EMBRYO,       SKIPPED),
    Row("complete",      IN_PROGRESS,  PROCESSED,    ("finalizable",)),
    Row("complete_noop", IN_PROGRESS,  NOOP,         ("finalizable",)),
    Row("skip",          IN_PROGRESS,  SKIPPED),
    Row("reprocess",     IN_PROGRESS,  EMBRYO),
    Row("reprocess",     PROCESSED,    EMBRYO),
    Row("reprocess",     SKIPPED,      EMBRYO),
    Row("retry_failed",  SKIPPED,      IN_PROGRESS),
]

#: continuous: units of work repeatedly while the period is open, then one final run.
CONTINUOUS_JOB_TRANSITIONS = [
    #   trigger          source        dest          conditions
    Row("start",         EMBRYO,       IN_PROGRESS),
    Row("finalize",      EMBRYO,       FINAL_RUN,    ("closed", "finalizable")),
    Row("skip",          EMBRYO,       SKIPPED),
    Row("run_again",     IN_PROGRESS,  IN_PROGRESS),
    Row("finalize",      IN_PROGRESS,  FINAL_RUN,    ("closed", "finalizable")),
    Row("skip",          IN_PROGRESS,  SKIPPED),
    Row("reprocess",     IN_PROGRESS,  EMBRYO),
    Row("complete",      FINAL_RUN,    PROCESSED),
    Row("complete_noop", FINAL_RUN,    NOOP),
    Row("skip",          FINAL_RUN,    SKIPPED),
    Row("reprocess",     FINAL_RUN,    EMBRYO),
    Row("reprocess",     PROCESSED,    EMBRYO),
    Row("reprocess",     SKIPPED,      EMBRYO),
    Row("retry_failed",  SKIPPED,      IN_PROGRESS),
]

#: recomputing: like continuous, but a unit of work not yet started is widened in place
#: (``widen``) instead of queueing another.
RECOMPUTING_JOB_TRANSITIONS = [
    #   trigger          source        dest          conditions
    Row("start",         EMBRYO,       IN_PROGRESS),
    Row("finalize",      EMBRYO,       FINAL_RUN,    ("closed", "finalizable")),
    Row("skip",          EMBRYO,       SKIPPED),
    Row("run_again",     IN_PROGRESS,  IN_PROGRESS),
    Row("widen",         IN_PROGRESS,  IN_PROGRESS),
    Row("finalize",      IN_PROGRESS,  FINAL_RUN,    ("closed", "finalizable")),
    Row("skip",          IN_PROGRESS,  SKIPPED),
    Row("reprocess",     IN_PROGRESS,  EMBRYO),
    Row("complete",      FINAL_RUN,    PROCESSED),
    Row("complete_noop", FINAL_RUN,    NOOP),
    Row("skip",          FINAL_RUN,    SKIPPED),
    Row("reprocess",     FINAL_RUN,    EMBRYO),
    Row("reprocess",     PROCESSED,    EMBRYO),
    Row("reprocess",     SKIPPED,      EMBRYO),
    Row("retry_failed",  SKIPPED,      IN_PROGRESS),
]
# fmt: on

JOB_TABLES = {
    StateMachineName.DISCRETE: DISCRETE_JOB_TRANSITIONS,
    StateMachineName.CONTINUOUS: CONTINUOUS_JOB_TRANSITIONS,
    StateMachineName.RECOMPUTING: RECOMPUTING_JOB_TRANSITIONS,
}

#: One shared machine per table, built at import (three constructions in all).
JOB_MACHINES = {
    name: TableMachine(f"job_{name.value}", "job", list(JobState), rows)
    for name, rows in JOB_TABLES.items()
}


def job_machine(state_machine: StateMachineName) -> TableMachine:
    """The shared machine for a process's ``state_machine``."""
    return JOB_MACHINES[StateMachineName(state_machine)]
