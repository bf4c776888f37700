"""Prometheus metrics of one collector process (its own registry, so several apps can live in one test)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
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

    def watch_rules(self, runtime: Any) -> None:
        """Expose how far the in-process rule worker has got (a `RuleRuntime`; a worker process has no stats
        here), so that a monitor or the demo can tell when what is stored has been evaluated."""
        stats = getattr(runtime, "stats", None)
        if stats is None:
            return
        Gauge("custos_rules_evaluated_seq", "Highest stored event seq the rule worker has evaluated",
              registry=self.registry).set_function(lambda: stats.last_seq)
        Gauge("custos_rules_events_evaluated", "Events the rule worker evaluated since the collector started",
              registry=self.registry).set_function(lambda: stats.evaluated)
        Gauge("custos_rules_alerts", "Alerts the rule worker stored since the collector started",
              registry=self.registry).set_function(lambda: stats.alerts)

    def render(self) -> bytes:
        return generate_latest(self.registry)
