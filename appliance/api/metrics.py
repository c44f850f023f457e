"""Prometheus metrics of the API: requests and latency per model and device, in flight, loads."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    """One registry per app (no process globals), so tests can build many apps."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "appliance_inference_requests", "Inference requests by model, device and outcome.",
            ["model", "device", "status"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "appliance_inference_seconds", "Inference request latency (engine and API).",
            ["model", "device"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.in_flight = Gauge(
            "appliance_requests_in_flight", "Requests being served now (the queue depth).",
            registry=self.registry,
        )  # fmt: skip
        self.load_seconds = Gauge(
            "appliance_model_load_seconds", "Time to decrypt and compile the served model.",
            ["model", "device"], registry=self.registry,
        )  # fmt: skip

    def render(self) -> bytes:
        return generate_latest(self.registry)
