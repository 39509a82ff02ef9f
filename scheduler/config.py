"""The scheduler's tunables, derived from the settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from db.gates import LOOK_WINDOW

if TYPE_CHECKING:
    from settings import Settings


@dataclass(frozen=True, kw_only=True, slots=True)
class SchedulerConfig:
    """How the scheduler paces itself."""

    #: Queue name prefix (``<prefix>.<process>``, ``<prefix>.uow_status``).
    queue_prefix: str = "tactus"
    #: Default zone of cron and ``at`` triggers.
    timezone: str = "UTC"
    #: Longest sleep between passes; passes also run as soon as something is due or a status
    #: message arrives.
    tick: timedelta = timedelta(seconds=1)
    #: How often retries, re-posts and lost workers are looked at.
    recovery_interval: timedelta = timedelta(seconds=5)
    #: A unit of work requested but not claimed for this long is published again.
    unclaimed_timeout: timedelta = timedelta(minutes=5)
    #: Worker heartbeat period and the misses after which a worker counts as lost.
    heartbeat_interval: timedelta = timedelta(seconds=5)
    heartbeat_misses: int = 3
    #: A lost or stopped worker's record is removed this long after its last heartbeat.
    worker_retention: timedelta = timedelta(days=1)
    #: Jobs of one process looked at per pass beyond ``max_active`` (the active window): the
    #: embryos that may start; more wait for the next look.
    window: int = LOOK_WINDOW
    #: A freerun with ``catchup: all`` fires at most this many missed fires after downtime;
    #: older ones are recorded as missed.
    catchup_limit: int = 1000
    #: A freerun fire is prepared this long before its instant (recorded, its unit of work
    #: stored) and only released at the instant (or published then with the delay to it, on a
    #: broker whose delay is exact), so that a due fire costs a publish, not a pass; longer
    #: than a pass over every freerun process takes. Not a whole number of seconds: the pass
    #: preparing the next fire of a process firing every second would fall on the instant of
    #: the fire before, when its worker claims it (on SQLite, one writer at a time).
    prepare_ahead: timedelta = timedelta(seconds=1.5)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> SchedulerConfig:
        values = {
            "queue_prefix": settings.queue_prefix,
            "timezone": settings.timezone,
            "heartbeat_interval": timedelta(seconds=settings.heartbeat_interval),
            "heartbeat_misses": settings.heartbeat_misses,
            "worker_retention": timedelta(seconds=settings.worker_retention),
        }
        values.update(overrides)
        return cls(**values)
