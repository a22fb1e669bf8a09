"""The notifier's Prometheus metrics, in a registry of their own (ALERTS_METRICS_PORT). Labels name the
alert's kind and the target as "webhook-1" / "telegram", never a URL or a token."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["AlertMetrics"]


class AlertMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.raised = Counter("alerts_raised", "Alerts raised from events, by kind", ["kind"], registry=r)
        self.sent = Counter(
            "alerts_sent", "Alerts delivered, by kind and target", ["kind", "target"], registry=r
        )
        self.failed = Counter(
            "alerts_failed",
            "Alerts given up on after the last attempt (or refused for good), by kind and target",
            ["kind", "target"],
            registry=r,
        )
        self.retried = Counter(
            "alerts_retried", "Attempts that failed and were tried again", ["kind", "target"], registry=r
        )
        self.suppressed = Counter(
            "alerts_suppressed",
            "Alerts held back by the rate limit of a flapping condition",
            ["kind"],
            registry=r,
        )
        self.duplicates = Counter(
            "alerts_duplicates",
            "Entries that told an event already alerted (not sent again)",
            ["kind"],
            registry=r,
        )
        self.malformed = Counter(
            "alerts_malformed_events", "Stream entries that could not be read", ["source"], registry=r
        )
        self.source_errors = Counter(
            "alerts_source_errors", "Failed reads of Redis, Temporal or the journal", ["source"], registry=r
        )
        self.queue_up = Gauge(
            "alerts_task_queue_up",
            "1 while a worker polls the task queue, 0 when down",
            ["task_queue"],
            registry=r,
        )
        self.delivery_seconds = Gauge(
            "alerts_last_delivery_seconds",
            "How long the latest alert took to deliver (retries included)",
            registry=r,
        )
        for kind in ("emergency", "ban", "liquidation", "drift", "worker_down", "worker_up", "daily_summary"):
            self.raised.labels(kind)  # every kind shows, at 0, before its first alert
