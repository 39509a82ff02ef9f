"""The unit-of-work state machine (SPEC section 3).

Facts: ``attempts_remain`` (the attempt counter is below 1 + retries).

Beyond SPEC's table, ``release`` (in_progress -> requested) is how a worker stopping gracefully
hands back a unit of work it had to interrupt: it is not a failed attempt, so it costs no retry.

Flows (SPEC section 10) add the rows below the blank line: a flow run is ``expand``-ed by the
worker that receives it (its steps created, it goes in progress without a worker of its own),
records ``step_ended`` each time one of its steps ends, and ends ``succeed`` or ``cancel`` with
its last step. A step starts ``pending``; its upstream steps' outcomes make it ``ready``
(requested), ``upstream_failed`` or ``not_needed`` (noop). ``retry_failed`` puts a canceled flow
run back in progress and ``rerun`` its failed steps back to pending.
"""

from __future__ import annotations

from db.machines.base import Row, TableMachine
from db.states import UowState

REQUESTED = UowState.REQUESTED
IN_PROGRESS = UowState.IN_PROGRESS
PROCESSED = UowState.PROCESSED
NOOP = UowState.NOOP
INVALID = UowState.INVALID
CANCELED = UowState.CANCELED
PENDING = UowState.PENDING
UPSTREAM_FAILED = UowState.UPSTREAM_FAILED

# fmt: off
UOW_TRANSITIONS = [
    #   trigger        source        dest          conditions
    Row("claim",       REQUESTED,    IN_PROGRESS),
    Row("repost",      REQUESTED,    REQUESTED),
    Row("widen",       REQUESTED,    REQUESTED),
    Row("cancel",      REQUESTED,    CANCELED),
    Row("succeed",     IN_PROGRESS,  PROCESSED),
    Row("finish_noop", IN_PROGRESS,  NOOP),
    Row("fail",        IN_PROGRESS,  INVALID),
    Row("cancel",      IN_PROGRESS,  CANCELED),
    Row("release",     IN_PROGRESS,  REQUESTED),
    Row("retry",       INVALID,      REQUESTED,    ("attempts_remain",)),
    Row("give_up",     INVALID,      CANCELED),
    Row("cancel",      INVALID,      CANCELED),

    Row("expand",      REQUESTED,    IN_PROGRESS),
    Row("step_ended",  IN_PROGRESS,  IN_PROGRESS),
    Row("retry_failed", CANCELED,    IN_PROGRESS),
    Row("ready",       PENDING,      REQUESTED),
    Row("upstream_failed", PENDING,  UPSTREAM_FAILED),
    Row("not_needed",  PENDING,      NOOP),
    Row("cancel",      PENDING,      CANCELED),
    Row("rerun",       CANCELED,     PENDING),
    Row("rerun",       UPSTREAM_FAILED, PENDING),
]
# fmt: on

#: The one shared unit-of-work machine.
UOW_MACHINE = TableMachine("uow", "uow", list(UowState), UOW_TRANSITIONS)
