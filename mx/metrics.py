"""``/metrics``: Prometheus text read from the store on each scrape.

A custom collector; what it reads from the store is the same on every mx instance, and a few
families come from this mx's memory (the outages it saw, the messages waiting for the broker):
jobs and units of work by state, fire lateness from the recent fire records, dispatch latency of
recent units of work, queue depth per process queue, worker liveness and supervised-process
states. Needs a viewer (Prometheus sends the token with ``authorization.credentials``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING

from flask import Blueprint, Response
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from db.errors import TactusError
from db.states import FireOutcome, ProcessKind, SupervisedState
from mq.message import process_queue, status_queue
from mx.runtime import MxRuntime, runtime

if TYPE_CHECKING:
    from collections.abc import Iterable

    from prometheus_client.metrics_core import Metric

    from db.models import ProcessRecord

log = logging.getLogger(f"tactus.{__name__}")

#: Fires per freerun process looked at for lateness.
RECENT_FIRES = 10
#: Newest units of work looked at for dispatch latency.
RECENT_UOWS = 500

bp = Blueprint("metrics", __name__)


class StoreCollector(Collector):
    """Reads the store (and the broker's queue depths) each time Prometheus scrapes."""

    def __init__(self, rt: MxRuntime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Metric]:
        """Every metric family. The scrape is itself the probe of the store (its reads) and of
        the broker (the depths of the queues, at least the status queue's): ``tactus_store_up``
        and ``tactus_broker_up`` say whether each answered this scrape. With the store down,
        only the up gauges, the outage counters and what mx keeps in memory are exported."""
        rt = self.rt
        records: list[ProcessRecord] | None = None
        try:
            # read once for the fire lateness (freeruns) and the queue depths (all but daemons)
            records = rt.store.list_processes()
            families = list(self._store_families(records))
        except TactusError as exc:
            log.debug("metrics: store: %s", exc)
            families, records = [], None
        store_up = records is not None
        broker_families = list(self._queue_families(records))
        yield _gauge("tactus_store_up", "1 when the store answered this scrape.", store_up)
        yield _gauge(
            "tactus_broker_up", "1 when the broker answered this scrape.", bool(broker_families)
        )
        for name, outage in (("store", rt.store_outage), ("broker", rt.broker_outage)):
            outages = CounterMetricFamily(
                f"tactus_{name}_outages", f"Outages of the {name} this mx saw since it started."
            )
            outages.add_metric([], outage.outages)
            yield outages
        yield _gauge(
            "tactus_unpublished_messages",
            "Units of work mx stored while the broker was away, waiting to be published.",
            rt.announcer.pending,
        )
        yield from families
        yield from broker_families

    def _store_families(self, records: list[ProcessRecord]) -> Iterator[Metric]:
        store, now = self.rt.store, self.rt.clock.now()
        jobs = GaugeMetricFamily(
            "tactus_jobs", "Jobs by process and state.", labels=["process", "state"]
        )
        for (process, state), n in sorted(store.count_jobs().items()):
            jobs.add_metric([process, str(state)], n)
        yield jobs
        uows = GaugeMetricFamily(
            "tactus_uows", "Units of work by process and state.", labels=["process", "state"]
        )
        for (process, state), n in sorted(store.count_uows().items()):
            uows.add_metric([process, str(state)], n)
        yield uows
        yield from self._lateness(records)
        yield from self._dispatch_latency()
        workers = GaugeMetricFamily(
            "tactus_worker_up",
            "1 when the worker is alive and beat recently.",
            labels=["worker_id", "process", "box_id"],
        )
        age = GaugeMetricFamily(
            "tactus_worker_heartbeat_age_seconds",
            "Seconds since the worker's last heartbeat.",
            labels=["worker_id", "process", "box_id"],
        )
        for w in store.list_workers():
            labels = [w.worker_id, w.process, w.box_id]
            silent = now - w.heartbeat_at
            workers.add_metric(labels, int(w.state == "alive" and silent <= self.rt.liveness))
            age.add_metric(labels, max(0.0, silent.total_seconds()))
        yield workers
        yield age
        supervised = GaugeMetricFamily(
            "tactus_supervised_state",
            "1 for the current state of each supervised process on each box.",
            labels=["box_id", "process", "state"],
        )
        desired = GaugeMetricFamily(
            "tactus_supervised_desired_running",
            "1 when the operator wants the process running on the box.",
            labels=["box_id", "process"],
        )
        for record in store.list_supervised():
            for state in SupervisedState:
                value = int(record.state == state)
                supervised.add_metric([record.box_id, record.process, state.value], value)
            desired.add_metric([record.box_id, record.process], int(record.desired))
        yield supervised
        yield desired

    def _lateness(self, records: list[ProcessRecord]) -> Iterator[Metric]:
        last = GaugeMetricFamily(
            "tactus_fire_lateness_seconds",
            "Seconds between the scheduled instant of the latest fire and its recording.",
            labels=["process"],
        )
        worst = GaugeMetricFamily(
            "tactus_fire_lateness_max_seconds",
            f"Largest lateness among the latest {RECENT_FIRES} fires.",
            labels=["process"],
        )
        names = [r.name for r in records if r.entry.kind is ProcessKind.FREERUN]
        # one grouped read for every freerun process, not one list_fires each
        recent = self.rt.store.recent_fires(names, limit=RECENT_FIRES)
        for name in names:
            fires = [f for f in recent.get(name, ()) if f.outcome is FireOutcome.FIRED]
            if not fires:
                continue
            late = [max(0.0, (f.recorded_at - f.scheduled_at).total_seconds()) for f in fires]
            last.add_metric([name], late[0])
            worst.add_metric([name], max(late))
        yield last
        yield worst

    def _dispatch_latency(self) -> Iterator[Metric]:
        samples: dict[str, list[float]] = defaultdict(list)
        for uow in self.rt.store.newest_uow_instants(RECENT_UOWS):
            if uow.started_at is None:
                continue
            # When it last became requested: created, due (a delayed task), or re-posted or
            # retried (submitted_at): a retry's wait for its retry delay is no dispatch latency.
            due = max(uow.created_at, uow.scheduled_at or uow.created_at)
            if uow.submitted_at is not None:
                due = max(due, uow.submitted_at)
            samples[uow.process].append(max(0.0, (uow.started_at - due).total_seconds()))
        mean = GaugeMetricFamily(
            "tactus_dispatch_latency_seconds",
            f"Mean seconds from requested (and due) to started among the newest {RECENT_UOWS} "
            "units of work.",
            labels=["process"],
        )
        worst = GaugeMetricFamily(
            "tactus_dispatch_latency_max_seconds",
            f"Largest seconds from due to started among the newest {RECENT_UOWS} units of work.",
            labels=["process"],
        )
        for process, values in sorted(samples.items()):
            mean.add_metric([process], sum(values) / len(values))
            worst.add_metric([process], max(values))
        yield mean
        yield worst

    def _queue_families(self, records: list[ProcessRecord] | None) -> Iterator[Metric]:
        """Queue depths: the status queue's, and each process queue's when the store could say
        which processes there are (``records``). Nothing when the broker does not answer."""
        prefix = self.rt.settings.queue_prefix
        depth = GaugeMetricFamily(
            "tactus_queue_depth",
            "Messages waiting in a queue (ready or delayed).",
            labels=["queue"],
        )
        names = [status_queue(prefix)]
        try:
            names += [
                process_queue(prefix, r.name)
                for r in records or ()
                if r.entry.kind is not ProcessKind.DAEMON
            ]
            for name, count in self.rt.broker.depths(names).items():
                depth.add_metric([name], count)
        except TactusError as exc:
            log.debug("metrics: queue depths: %s", exc)
            return
        yield depth


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, text)
    gauge.add_metric([], float(value))
    return gauge


def exposition(families: Iterable[Metric]) -> bytes:
    """The Prometheus text format (0.0.4) of ``families``: byte for byte what
    ``prometheus_client.generate_latest`` writes for them, for the gauges and counters this
    module makes (valid metric and label names, no timestamps, no ``_created`` samples).

    A scrape has thousands of samples (a count per process and state); ``generate_latest``
    validates and escapes every label name of every sample, about a fifth of the scrape's time
    at 1,000 processes; ours are fixed, valid names (``tests/mx/test_metrics_exposition.py``
    compares the two)."""
    out: list[str] = []
    for metric in families:
        name = f"{metric.name}_total" if metric.type == "counter" else metric.name
        text = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {text}\n# TYPE {name} {metric.type}\n")
        for sample in metric.samples:
            if sample.labels:
                pairs = ",".join(
                    f'{key}="{_escape(value)}"' for key, value in sorted(sample.labels.items())
                )
                out.append(f"{sample.name}{{{pairs}}} {floatToGoString(sample.value)}\n")
            else:
                out.append(f"{sample.name} {floatToGoString(sample.value)}\n")
    return "".join(out).encode("utf-8")


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


@bp.get("/metrics")
def metrics() -> Response:
    """The Prometheus text exposition of the current state."""
    body = exposition(StoreCollector(runtime()).collect())
    return Response(body, mimetype="text/plain; version=0.0.4")
