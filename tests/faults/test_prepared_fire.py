"""A SIGKILL of the scheduler between preparing a freerun fire and its instant (issue 16).

A fire is prepared 1.5 s ahead of its instant: recorded, its unit of work stored as
requested with ``scheduled_at`` = the instant, its message held by the scheduler (this
installation's broker is RabbitMQ; on the store queue it is published at once, with the delay to
the instant, and ``tests/workers/test_fire_published_ahead.py`` covers a restart there). The test
watches the store and SIGKILLs the scheduler as soon as such a unit of work exists while its
instant is still ahead, so the held message dies with the process. A new scheduler starts.

What is proven, by counting: the fire's unit of work runs exactly once, not before its
instant, and no later fire is lost or run twice.
"""

from __future__ import annotations

import signal
from collections import Counter
from datetime import UTC, datetime

import pytest

from db.models import UowQuery
from db.states import UowState
from tests.faults.counting import command, tally, units_of
from tests.faults.drill import Verdict

pytestmark = [pytest.mark.slow, pytest.mark.needs_server]

#: Seconds between fires: room for a kill before the instant, few fires in the test.
PERIOD = 5


def _prepared(inst):
    """A requested unit of work of ``ticker`` whose instant is still ahead, if any."""
    now = datetime.now(UTC)
    page = inst.store.find_uows(
        UowQuery(process="ticker", states=frozenset({UowState.REQUESTED})), limit=10
    )
    ahead = [u for u in page.items if u.scheduled_at is not None and u.scheduled_at > now]
    return ahead[0] if ahead else None


def test_scheduler_killed_with_a_fire_prepared_ahead_runs_it_once_at_its_instant(
    installation, runs
):
    inst = installation
    # given a freerun firing every few seconds, run by a worker
    inst.register_processes(
        {
            "name": "ticker",
            "kind": "freerun",
            "trigger": f"every {PERIOD}",
            "max_active": 5,
            "retry_delay": 1,
            "command": command(runs.path),
        }
    )
    inst.start_all()
    inst.wait_workers("ticker", 1)
    # when the scheduler is SIGKILLed while a fire is prepared and its instant is ahead
    prepared = inst.wait(lambda: _prepared(inst), PERIOD * 3, "a fire prepared ahead")
    inst.kill("scheduler", signal.SIGKILL)
    killed_ahead = datetime.now(UTC) < prepared.scheduled_at
    # and a new scheduler starts, and two more fires come
    inst.start("scheduler")
    inst.wait(
        lambda: inst.store.get_uow(prepared.id).state is UowState.PROCESSED,
        PERIOD * 4,
        "the prepared fire's unit of work to be processed",
    )

    def processed(before=None):
        units = units_of(inst.store, ["ticker"], created_before=before)
        return [u for u in units if u.state is UowState.PROCESSED], units

    inst.wait(lambda: len(processed()[0]) >= 3, PERIOD * 4, "two more fires processed")
    # (every unit of work created so far, the next prepared one included, must end processed)
    cut = datetime.now(UTC)
    inst.wait(
        lambda: len(processed(cut)[0]) == len(processed(cut)[1]),
        PERIOD * 3,
        "every unit of work created so far processed",
    )
    # then the prepared fire ran once, at or after its instant, and nothing was lost or doubled
    done = inst.store.get_uow(prepared.id)
    units = units_of(inst.store, ["ticker"], created_before=cut)
    fires_per_instant = Counter(u.scheduled_at for u in units)
    counts = tally(inst.store, runs, ["ticker"], created_before=cut)
    verdict = Verdict()
    verdict.equal("the scheduler was killed before the fire's instant", killed_ahead, True)
    verdict.equal("runs of the prepared fire", runs.started(prepared.id), 1)
    verdict.equal(
        "the prepared fire started at or after its instant",
        done.started_at is not None and done.started_at >= prepared.scheduled_at,
        True,
    )
    verdict.equal("units of work per fire instant", set(fires_per_instant.values()), {1})
    verdict.equal("units of work lost", len(counts.lost), 0)
    verdict.equal("runs that should not have happened (twice)", len(counts.twice), 0)
    verdict.check(f"{counts}\n{inst.report()}")
