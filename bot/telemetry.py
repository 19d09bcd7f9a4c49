"""Prometheus metrics of the service, on a registry of its own (one per app instance)."""

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Telemetry"]


@dataclass(frozen=True)
class Telemetry:
    """The service's counters, gauges and histograms."""

    registry: CollectorRegistry
    deliveries: Counter
    jobs: Gauge
    github_requests: Counter
    job_seconds: Histogram
    github_retries: Counter
    sticky_comments: Counter
    pending_bodies: Gauge

    @classmethod
    def create(cls) -> "Telemetry":
        """Make a fresh set of metrics on a new registry."""
        registry = CollectorRegistry()
        return cls(
            registry=registry,
            deliveries=Counter(
                "model_guard_deliveries",
                "Webhook deliveries by event and outcome",
                ["event", "outcome"],
                registry=registry,
            ),
            jobs=Gauge(
                "model_guard_jobs", "Jobs in the store by state", ["state"], registry=registry
            ),
            github_requests=Counter(
                "model_guard_github_requests",
                "GitHub API requests by status",
                ["status"],
                registry=registry,
            ),
            job_seconds=Histogram(
                "model_guard_job_seconds", "Job durations by kind", ["kind"], registry=registry
            ),
            github_retries=Counter(
                "model_guard_github_retries",
                "GitHub API requests sent again, by reason",
                ["reason"],
                registry=registry,
            ),
            sticky_comments=Counter(
                "model_guard_sticky_comments",
                "Sticky comment writes by outcome (created, updated, unchanged, locked, missing)",
                ["outcome"],
                registry=registry,
            ),
            pending_bodies=Gauge(
                "model_guard_pending_bodies",
                "Webhook bodies being read whose signature is not checked yet",
                registry=registry,
            ),
        )

    def render(self) -> bytes:
        """Return the Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
