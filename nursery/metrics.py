"""Prometheus metrics of one instance, in its own registry (several instances may share a
process in tests, and a registry per instance keeps their series apart).

Event counters and histograms are updated where things happen, through the small methods
below; the counters other parts already keep (broker reconnects, publishes, hub receipts) and
the gauges (open websockets, pool use) are read at scrape time by ``_LiveCollector``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._http_requests = Counter(
            "nursery_http_requests", "HTTP requests answered", ["route", "method", "status"], registry=r
        )
        self._http_latency = Histogram(
            "nursery_http_request_duration_seconds", "HTTP request latency", ["route", "method"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self._store_latency = Histogram(
            "nursery_store_operation_duration_seconds", "Store operation latency (one crossing)",
            ["operation", "outcome"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self._ws_sent = Counter(
            "nursery_ws_messages_sent", "Websocket frames sent to clients", ["type"], registry=r
        )
        self._ws_closed = Counter(
            "nursery_ws_closes", "Websocket connections closed by the server, by close code",
            ["code"], registry=r,
        )
        self._slow = Counter(
            "nursery_ws_slow_disconnects",
            "Clients closed as too slow (4008): queue full, write timeout or no pong", ["reason"],
            registry=r,
        )
        self._sync_lag = Histogram(
            "nursery_sync_lag_seconds", "From a change's commit to its frame being sent",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self._limited = Counter(
            "nursery_rate_limited", "Requests refused by a rate limit", ["limit"], registry=r
        )
        self._live = _LiveCollector()
        r.register(self._live)
        # Labelled children looked up once: ``labels()`` takes a lock and builds a key each
        # time, on every request and every frame.
        self._children: dict[tuple[str, ...], Any] = {}

    # -- events ---------------------------------------------------------------------------------

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (str(id(metric)), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def http(self, route: str, method: str, status: int, seconds: float) -> None:
        self._child(self._http_requests, route, method, str(status)).inc()
        self._child(self._http_latency, route, method).observe(seconds)

    def store_operation(self, name: str, ok: bool, seconds: float) -> None:
        self._store_latency.labels(name, "ok" if ok else "error").observe(seconds)

    def ws_sent(self, frame_type: str) -> None:
        self._child(self._ws_sent, frame_type).inc()

    def ws_closed(self, code: int, reason: str) -> None:
        self._ws_closed.labels(str(code)).inc()
        if code == 4008:
            self._slow.labels(_slow_reason(reason)).inc()

    def rate_limited(self, kind: str) -> None:
        self._limited.labels(kind).inc()

    def sync_lag(self, seconds: float) -> None:
        self._sync_lag.observe(max(0.0, seconds))

    # -- read at scrape time --------------------------------------------------------------------

    def count(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """Expose a counter that something else keeps (read when scraped)."""
        self._live.counters.append((name, doc, read))

    def gauge(self, name: str, doc: str, read: Callable[[], float]) -> None:
        self._live.gauges.append((name, doc, read))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _slow_reason(reason: str) -> str:
    for key in ("queue", "write", "ping"):
        if key in reason:
            return key
    return "other"


class _LiveCollector(Collector):
    def __init__(self) -> None:
        self.counters: list[tuple[str, str, Callable[[], float]]] = []
        self.gauges: list[tuple[str, str, Callable[[], float]]] = []

    def collect(self) -> Iterator[Metric]:
        for name, doc, read in self.counters:
            yield CounterMetricFamily(name, doc, value=read())
        for name, doc, read in self.gauges:
            yield GaugeMetricFamily(name, doc, value=read())

    def describe(self) -> Iterator[Any]:
        return iter(())
