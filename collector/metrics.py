"""Prometheus metrics of one collector process (its own registry, so several apps can live in one test)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "custos_ingest_events", "Events received, by result", ["result"], registry=self.registry
        )
        self.batches = Counter(
            "custos_ingest_batches", "Batches received, by HTTP status", ["status"], registry=self.registry
        )
        self.auth_failures = Counter(
            "custos_auth_failures", "Requests refused for their credential", ["reason"], registry=self.registry
        )
        self.ingest_seconds = Histogram(
            "custos_ingest_batch_seconds", "Time to read, check and durably store one batch",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
