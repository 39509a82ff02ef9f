"""What bench/mx.py's store holds: its shape (every field part of the cache key), the instant
it runs up to, and the registration entries of its 1,000 processes.

With the default :class:`Shape` (``NOW`` is 2026-11-20 12:30 UTC):

- 150 trees ``tNNN_hourly -> tNNN_daily -> tNNN_monthly`` (every third tree's hourly process is
  continuous: three units of work per job), with 60 days of hourly jobs, a year of daily jobs
  and two years of monthly ones;
- 230 daily processes ``dNNN`` (one in three depends on a tree's daily process) with two years of
  jobs;
- 300 freerun processes ``fNNN`` with triggers from every minute to daily; ``f000`` fires every
  minute and holds a fifth of the freerun units of work, the others share the rest;
- 20 daemons ``xNNN`` (no jobs).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from db.models import ProcessRecord
from db.registration import entry_from_mapping
from db.states import ProcessSource, Qualifier
from db.timeperiod import Timeperiod

GENERATOR_VERSION = 1
#: The instant the history runs up to; mx runs on a clock fixed here.
NOW = datetime(2026, 11, 20, 12, 30, tzinfo=UTC)


@dataclass(frozen=True)
class Shape:
    """What the generator makes; every field is part of the cache key."""

    trees: int = 150
    hourly_days: int = 60
    daily_days: int = 365
    monthly_months: int = 24
    dailies: int = 230
    daily_history_days: int = 730
    freeruns: int = 300
    daemons: int = 20
    #: Units of work in all; the freerun processes get what the managed ones leave.
    uows: int = 1_000_000
    #: Share of the freerun units of work that belongs to ``f000`` (every minute).
    heavy_share: float = 0.2
    event_days: int = 30
    seed: int = 7

    @property
    def process_count(self) -> int:
        return 3 * self.trees + self.dailies + self.freeruns + self.daemons

    def key(self) -> str:
        text = json.dumps({"v": GENERATOR_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


#: A small shape for a smoke run (``bench/mx.py --quick``).
QUICK = Shape(
    trees=10,
    hourly_days=10,
    daily_days=30,
    monthly_months=3,
    dailies=10,
    daily_history_days=60,
    freeruns=10,
    daemons=2,
    uows=20_000,
)

#: Freerun triggers and their period, chosen in turn by the freerun processes after ``f000``.
FREERUN_TRIGGERS = (
    ("every 300", timedelta(minutes=5)),
    ("*/15 * * * *", timedelta(minutes=15)),
    ("0 * * * *", timedelta(hours=1)),
    ("every 2h", timedelta(hours=2)),
    ("30 2 * * *", timedelta(days=1)),
    ("at Mon-Fri 09:30", timedelta(days=1)),
)


# -- the registered processes ------------------------------------------------------------------


def _tree(i: int) -> str:
    return f"t{i:03d}"


def entries(shape: Shape) -> list[dict[str, Any]]:
    """The registration entries (file form) of every process."""
    found: list[dict[str, Any]] = []
    start_hour = Timeperiod.containing(Qualifier.HOURLY, NOW - timedelta(days=shape.hourly_days))
    start_day = Timeperiod.containing(Qualifier.DAILY, NOW - timedelta(days=shape.daily_days))
    start_month = Timeperiod.containing(Qualifier.MONTHLY, NOW).previous(shape.monthly_months)
    for i in range(shape.trees):
        tree = _tree(i)
        common = {"kind": "managed", "tree": tree, "arguments": {"site": tree}}
        found += [
            {
                **common,
                "name": f"{tree}_hourly",
                "time_qualifier": "hourly",
                "worker": "workers.examples:SiteHourlyAggregator",
                "state_machine": "continuous" if i % 3 == 0 else "discrete",
                "trigger": "every 300",
                "start_timeperiod": str(start_hour),
                "description": f"Hourly aggregation of {tree}.",
            },
            {
                **common,
                "name": f"{tree}_daily",
                "time_qualifier": "daily",
                "worker": "workers.examples:SiteDailyAggregator",
                "start_timeperiod": str(start_day),
                "lag": 600,
            },
            {
                **common,
                "name": f"{tree}_monthly",
                "time_qualifier": "monthly",
                "worker": "workers.examples:SiteMonthlyAggregator",
                "state_machine": "recomputing",
                "start_timeperiod": str(start_month),
            },
        ]
    start = Timeperiod.containing(Qualifier.DAILY, NOW - timedelta(days=shape.daily_history_days))
    for i in range(shape.dailies):
        entry = {
            "name": f"d{i:03d}",
            "kind": "managed",
            "time_qualifier": "daily",
            "command": ["echo", "{process}", "{timeperiod}"],
            "start_timeperiod": str(start),
            "retries": 2,
        }
        if i % 3 == 0 and shape.trees:
            entry.update(depends_on=[f"{_tree(i % shape.trees)}_daily"], blocking="dependencies")
        found.append(entry)
    for i in range(shape.freeruns):
        trigger = "every 60" if i == 0 else FREERUN_TRIGGERS[i % len(FREERUN_TRIGGERS)][0]
        found.append(
            {
                "name": f"f{i:03d}",
                "kind": "freerun",
                "trigger": trigger,
                "command": ["echo", "{process}", "{uow_id}"],
                "max_active": 2,
                "enabled": i % 10 != 9,
            }
        )
    found += [
        {"name": f"x{i:03d}", "kind": "daemon", "command": ["sleep", "100000"]}
        for i in range(shape.daemons)
    ]
    return found


def process_records(shape: Shape) -> list[ProcessRecord]:
    """The stored records, as ``launch.py register`` makes them."""
    made = NOW - timedelta(days=shape.daily_history_days + 1)
    return [
        ProcessRecord(
            entry=entry_from_mapping(fields),
            source=ProcessSource.FILE,
            registered=entry_from_mapping(fields).to_dict(),
            created_at=made,
            updated_at=made,
        )
        for fields in entries(shape)
    ]
