"""The `mr_webhook_*` series (docs/operations.md explains what to watch)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DELIVERIES = Counter(
    "mr_webhook_deliveries_total",
    "Webhook requests by outcome: delivered (2xx), failed (tried again later), dead (given up after the "
    "last attempt), gone (410: the endpoint was disabled).",
    ["outcome"],
)
for _outcome in ("delivered", "failed", "dead", "gone"):
    DELIVERIES.labels(_outcome)  # every series from zero, so that rate() sees the first increment
QUEUED = Counter("mr_webhook_deliveries_queued_total", "Deliveries the fan-out created (one per endpoint).")
REQUEST_SECONDS = Histogram(
    "mr_webhook_request_duration_seconds",
    "Time from sending a webhook request to its answer (or its failure).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
WAITING_GAUGE = Gauge(
    "mr_webhook_deliveries_waiting",
    "Deliveries not yet delivered nor dead (pending or retrying), database-wide, read every 15 s.",
)
OLDEST_DUE = Gauge(
    "mr_webhook_oldest_due_seconds",
    "How long the longest-waiting due delivery has been due (0: none): the sender falling behind.",
)
