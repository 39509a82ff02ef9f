"""``/metrics`` writes the text ``prometheus_client.generate_latest`` would, byte for byte
(``mx.metrics.exposition`` replaces it for speed)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from db.credentials import Role
from mx.metrics import StoreCollector, exposition
from mx.runtime import runtime


class _Fixed:
    def __init__(self, families) -> None:
        self.families = families

    def collect(self):
        return self.families


def _generate_latest(families) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families))
    return generate_latest(registry)


def test_exposition_matches_generate_latest_with_escapes_counters_and_label_order():
    # given gauges and counters, labels out of name order, values needing escapes
    gauge = GaugeMetricFamily("tactus_x", 'Help with \\ and\na "quote".', labels=["zeta", "alpha"])
    gauge.add_metric(['a"b', "c\\d\ne"], 3)
    gauge.add_metric(["é", ""], 1e-7)
    gauge.add_metric(["big", "x"], 123456789.0)
    plain = GaugeMetricFamily("tactus_up", "Up.")
    plain.add_metric([], 1.0)
    counter = CounterMetricFamily("tactus_outages", "Outages.")
    counter.add_metric([], 2)
    empty = GaugeMetricFamily("tactus_none", "Nothing.", labels=["process"])
    families = [gauge, plain, counter, empty]
    # then
    assert exposition(families) == _generate_latest(families)


def test_metrics_route_writes_what_generate_latest_writes(app, client, auth, seed):
    # when
    body = client.get("/metrics", headers=auth.headers(Role.VIEWER)).get_data()
    # then
    with app.app_context():
        expected = _generate_latest(list(StoreCollector(runtime()).collect()))
    assert body == expected
    assert b'tactus_jobs{process="h",state="embryo"} 2.0' in body
