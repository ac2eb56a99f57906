"""Prometheus metrics of one door (its own registry: several doors may share a process in tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class DoorMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lockgate_http_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "lockgate_http_errors", "Error replies by Lockgate error type", ["type"], registry=self.registry
        )
        self.latency = Histogram(
            "lockgate_http_request_seconds",
            "Time to the full answer (non-streamed) or the end of the stream",
            ["endpoint", "stream"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "lockgate_http_time_to_first_token_seconds",
            "Streams: time from request to the first content event written",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge("lockgate_http_in_flight", "Requests being served", registry=self.registry)
        self.disconnects = Counter(
            "lockgate_http_client_disconnects", "Streams the client left before the end", registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
