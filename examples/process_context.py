"""Tactus registration file (SPEC section 4), Python form: the quick start's process set.

The same processes as examples/process_context.yaml; both load into equal entries. Check it, then
register it into the store (``launch.py standalone`` registers this file by default):

    launch.py register examples/process_context.py --check
    launch.py register examples/process_context.py

Tactus runs this file and reads ``process_context``: a mapping of name to entry (a list of
entries with a ``name`` each works too). Keep it free of side effects: it runs at every
registration. Registering again is idempotent; edits made at run time (enable/disable,
triggers ...) survive until this file changes the same field. Durations are seconds or
``timedelta``. Commands are argv lists (no shell) whose {placeholders} the shell driver fills in;
only ``shell: True`` runs one string through /bin/sh -c. The Python workers live in
workers/examples.py.
"""

from __future__ import annotations

from datetime import timedelta

#: Fields shared by the "site" tree.
SITE = {"kind": "managed", "tree": "site", "arguments": {"source": "examples"}}

process_context = {
    # The "site" family: an hourly -> daily -> monthly tree. Each coarser job runs once its finer
    # children are finished.
    "site_hourly": {
        **SITE,
        "time_qualifier": "hourly",
        "worker": "workers.examples:SiteHourlyAggregator",
        "state_machine": "continuous",
        "trigger": "every 300",
        "start_timeperiod": "2026112100",
        "description": "Aggregates visits per site, hour by hour.",
    },
    "site_daily": {
        **SITE,
        "time_qualifier": "daily",
        "worker": "workers.examples:SiteDailyAggregator",
        "start_timeperiod": "2026111800",
        "lag": timedelta(minutes=10),
        "description": "Rolls the hourly site figures up into days.",
    },
    "site_monthly": {
        **SITE,
        "time_qualifier": "monthly",
        "worker": "workers.examples:SiteMonthlyAggregator",
        "state_machine": "recomputing",
        "start_timeperiod": "2026110000",
        "description": "Rolls the daily site figures up into months.",
    },
    # A managed process outside the tree that waits for site_daily: nothing runs until the
    # site_daily job of the same day is processed (a skipped one skips this one too).
    "client_daily": {
        "kind": "managed",
        "time_qualifier": "daily",
        "worker": "workers.examples:ClientDailyAggregator",
        "depends_on": ["site_daily"],
        "blocking": "dependencies",
        "start_timeperiod": "2026111800",
        "retries": 2,
        "retry_delay": 120,
        "timeout": 1800,
        "description": "Per-client daily report built on the site figures.",
    },
    # Freeruns: fired by their triggers, each fire one unit of work.
    "nightly_export": {
        "kind": "freerun",
        "trigger": "30 2 * * *",
        "timezone": "Europe/Amsterdam",
        "catchup": "latest",
        "command": ["echo", "exporting for {process}, unit {uow_id}, attempt {attempt}"],
        "timeout": 600,
        "description": "Cron at 02:30 Amsterdam time (once across daylight-saving changes).",
    },
    "clock_probe": {
        "kind": "freerun",
        "trigger": "every 300",
        "catchup": "none",
        "command": ["date", "-u"],
        "retries": 0,
        "description": "Prints the time every five minutes.",
    },
    "office_report": {
        "kind": "freerun",
        "trigger": "at Mon-Fri 09:30",
        "timezone": "America/New_York",
        "command": ["echo", "{process}", "{start_timeperiod}", "{end_timeperiod}"],
        "max_active": 2,
        "description": "Weekday mornings in New York.",
    },
    "tmp_sweep": {
        "kind": "freerun",
        "trigger": "every 1h",
        "shell": True,
        "command": "echo sweeping for {process} && sleep 1 && true",
        "boxes": [".*"],
        "description": "One string run by /bin/sh -c, so it may use && and pipes.",
    },
    # A flow (docs/flows.md): each fire runs a DAG of steps. extract, then three transforms in
    # parallel (three worker processes), then load, then a cleanup that runs even when something
    # failed. transform_apac fails its first attempt on purpose: its retry shows on the page.
    "orders_etl": {
        "kind": "freerun",
        "trigger": "every 120",
        "catchup": "latest",
        "workers": 3,
        "retry_delay": 5,
        "arguments": {"seconds": 2},
        "description": "A flow of six steps; open a run to see its DAG.",
        "steps": [
            {"name": "extract", "worker": "workers.examples:ExtractOrders"},
            *(
                {
                    "name": f"transform_{region}",
                    "depends_on": ["extract"],
                    "worker": "workers.examples:TransformRegion",
                    "arguments": {"region": region, **extra},
                    **more,
                }
                for region, extra, more in (
                    ("eu", {}, {}),
                    ("us", {}, {}),
                    ("apac", {"flaky": True}, {"retries": 2}),
                )
            ),
            {
                "name": "load",
                "depends_on": ["transform_eu", "transform_us", "transform_apac"],
                "worker": "workers.examples:LoadOrders",
            },
            {
                "name": "cleanup",
                "depends_on": ["load"],
                "run_if": "all_done",
                "command": ["echo", "cleaning up after {process}, unit {uow_id}"],
            },
        ],
    },
    # A daemon: the supervisor keeps it running on every box.
    "ticker": {
        "kind": "daemon",
        "command": ["sh", "-c", "while true; do date -u; sleep 60; done"],
        "description": "A long-running process that prints the time every minute.",
    },
}
