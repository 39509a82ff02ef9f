"""The supervisor's knobs, as one frozen value built by ``process_starter.py`` from the settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from db.errors import InvalidInput


@dataclass(frozen=True, kw_only=True, slots=True)
class SupervisorConfig:
    """How one box's supervisor starts, watches, restarts and stops its processes."""

    box_id: str
    #: A process must stay up this long to count as started (``starting -> running``).
    startsecs: timedelta = timedelta(seconds=1)
    #: Failed starts in a row allowed; one more makes the process ``fatal``.
    startretries: int = 3
    #: Between the stop signal and SIGKILL of the group.
    stopwaitsecs: timedelta = timedelta(seconds=10)
    #: Delay after the first failed start; doubles with each further failure ...
    backoff_base: timedelta = timedelta(seconds=1)
    #: ... up to this.
    backoff_cap: timedelta = timedelta(seconds=60)
    #: Spread of each delay (a fraction), so many processes failing at once do not retry in
    #: lockstep.
    backoff_jitter: float = 0.1
    #: How often the desired state (box configuration, registrations) is read from the store.
    poll: timedelta = timedelta(seconds=1)
    #: How often psutil facts are written to the store for the page.
    stats_interval: timedelta = timedelta(seconds=5)
    #: Marks this supervisor's children in their environment (``TACTUS_SUPERVISOR``), so a
    #: restarted supervisor finds what a crashed one started; unique per (store, box).
    marker: str
    #: Working directory of the children.
    cwd: str
    #: Where each child's standard output and error go (``<log_dir>/<instance>.out``); None:
    #: discarded.
    log_dir: str | None = None

    def __post_init__(self) -> None:
        if self.startretries < 0:
            raise InvalidInput("startretries", "must be >= 0")
        for name in ("startsecs", "stopwaitsecs", "backoff_base", "backoff_cap"):
            if getattr(self, name) < timedelta(0):
                raise InvalidInput(name, "must not be negative")
        if self.poll <= timedelta(0) or self.stats_interval <= timedelta(0):
            raise InvalidInput("supervisor_poll", "must be positive")
        if not self.marker:
            raise InvalidInput("marker", "must not be empty")
