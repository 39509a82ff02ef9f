"""The example Python workers named by ``examples/process_context.py`` (and ``.yaml``).

They stand in for real aggregations (Synergy's site and client aggregators read a source
collection and upserted a sink) without any external data: each logs the window it covers and
what it would read and write, and returns. Copy one as the start of your own worker.

``arguments`` they understand (set on the process entry, copied into each unit of work):

- ``noop`` (bool): report "nothing to do" (the unit of work becomes ``noop``).
- ``skip_timeperiods`` (list of timeperiod strings): report "nothing to do" for those.
- ``fail`` (str): raise with this message (the attempt becomes ``invalid`` and is retried),
  to try out retries from the page.
- ``source`` (str): the name of the data source to log (``examples`` in the shipped file).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from workers.base import Outcome, UowWorker

if TYPE_CHECKING:
    from db.models import UnitOfWork


class _Aggregator(UowWorker):
    """Shared shape of the examples: check the arguments, then aggregate one window."""

    #: What the worker aggregates from, and into (for the log lines).
    reads = "events"
    writes = "figures"

    def process_uow(self, uow: UnitOfWork) -> Outcome | None:
        arguments = uow.arguments
        window = f"[{uow.start_timeperiod}, {uow.end_timeperiod})"
        if arguments.get("fail"):
            raise RuntimeError(f"asked to fail by the process arguments: {arguments['fail']}")
        if arguments.get("noop") or uow.timeperiod in arguments.get("skip_timeperiods", ()):
            self.log.info("uow %s: nothing to aggregate in %s", uow.id, window)
            return Outcome.NOOP
        source = arguments.get("source", "the source")
        self.log.info(
            "uow %s: aggregating %s from %s into %s for %s (attempt %d)",
            uow.id,
            self.reads,
            source,
            self.writes,
            window,
            uow.attempt,
        )
        return Outcome.PROCESSED


class SiteHourlyAggregator(_Aggregator):
    """Visits per site for one hour, from the raw visit events."""

    reads = "visit events"
    writes = "site hourly figures"


class SiteDailyAggregator(_Aggregator):
    """Visits per site for one day, rolled up from the 24 hourly figures."""

    reads = "site hourly figures"
    writes = "site daily figures"


class SiteMonthlyAggregator(_Aggregator):
    """Visits per site for one month, rolled up from the daily figures."""

    reads = "site daily figures"
    writes = "site monthly figures"


class ClientDailyAggregator(_Aggregator):
    """A per-client daily report, built on the site daily figures."""

    reads = "site daily figures"
    writes = "client daily reports"


# -- the steps of the orders_etl flow (docs/flows.md) ---------------------------------------------


class _Step(UowWorker):
    """Shared shape of the flow's steps: take a little while (``arguments["seconds"]``) so the
    DAG on the page can be watched, fail the first attempt when ``arguments["flaky"]`` is set
    (a retry then shows on the page), and hand a small result on."""

    def process_uow(self, uow: UnitOfWork) -> dict:
        arguments = uow.arguments
        if arguments.get("flaky") and uow.attempt == 1:
            raise RuntimeError(f"step {uow.step}: flaky on purpose, the retry will succeed")
        time.sleep(float(arguments.get("seconds", 1)))
        upstream = arguments.get("upstream") or {}
        self.log.info("uow %s: step %s of %s, upstream %s", uow.id, uow.step, uow.parent, upstream)
        return self.result(uow, upstream)

    def result(self, uow: UnitOfWork, upstream: dict) -> dict:
        return {}


class ExtractOrders(_Step):
    """Reads the hour's orders (here: counts some)."""

    def result(self, uow: UnitOfWork, upstream: dict) -> dict:
        return {"orders": 120, "batch": uow.parent}


class TransformRegion(_Step):
    """Transforms one region's share of the extracted orders."""

    def result(self, uow: UnitOfWork, upstream: dict) -> dict:
        orders = int(upstream.get("extract", {}).get("orders", 0))
        return {"region": uow.arguments.get("region"), "orders": orders // 3}


class LoadOrders(_Step):
    """Loads what the transforms made."""

    def result(self, uow: UnitOfWork, upstream: dict) -> dict:
        return {"loaded": sum(int(part.get("orders", 0)) for part in upstream.values())}
