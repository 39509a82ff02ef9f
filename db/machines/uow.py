"""The unit-of-work state machine (SPEC section 3).

Facts: ``attempts_remain`` (the attempt counter is below 1 + retries).

Beyond SPEC's table, ``release`` (in_progress -> requested) is how a worker stopping gracefully
hands back a unit of work it had to interrupt: it is not a failed attempt, so it costs no retry.
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
]
# fmt: on

#: The one shared unit-of-work machine.
UOW_MACHINE = TableMachine("uow", "uow", list(UowState), UOW_TRANSITIONS)
