"""The supervised-process state machine (SPEC section 3, the way supervisord users know it).

Facts: ``startsecs_elapsed`` (the process stayed up ``startsecs``).
"""

from __future__ import annotations

from db.machines.base import Row, TableMachine
from db.states import SupervisedState

STOPPED = SupervisedState.STOPPED
STARTING = SupervisedState.STARTING
RUNNING = SupervisedState.RUNNING
BACKOFF = SupervisedState.BACKOFF
STOPPING = SupervisedState.STOPPING
EXITED = SupervisedState.EXITED
FATAL = SupervisedState.FATAL

# fmt: off
SUPERVISED_TRANSITIONS = [
    #   trigger      source     dest       conditions
    Row("start",     STOPPED,   STARTING),
    Row("started",   STARTING,  RUNNING,   ("startsecs_elapsed",)),
    Row("exit",      STARTING,  BACKOFF),
    Row("stop",      STARTING,  STOPPING),
    Row("exit",      RUNNING,   EXITED),
    Row("stop",      RUNNING,   STOPPING),
    Row("start",     BACKOFF,   STARTING),
    Row("give_up",   BACKOFF,   FATAL),
    Row("stop",      BACKOFF,   STOPPED),
    Row("stopped",   STOPPING,  STOPPED),
    Row("start",     EXITED,    STARTING),
    Row("stop",      EXITED,    STOPPED),
    Row("start",     FATAL,     STARTING),
    Row("stop",      FATAL,     STOPPED),
]
# fmt: on

#: The one shared supervised-process machine.
SUPERVISED_MACHINE = TableMachine(
    "supervised", "supervised", list(SupervisedState), SUPERVISED_TRANSITIONS
)
