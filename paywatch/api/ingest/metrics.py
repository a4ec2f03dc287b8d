"""Prometheus metrics of the ingest process."""

from __future__ import annotations

from functools import lru_cache

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "paywatch_ingest_requests_total",
    "Webhook requests by provider and outcome",
    ["provider", "outcome"],
)
PAN_REJECTED = Counter(
    "paywatch_ingest_pan_rejected_total", "Webhooks rejected because they carried a card number"
)
RATE_LIMITED = Counter(
    "paywatch_ingest_rate_limited_total",
    "Webhooks refused with 429 because their tenant was over its rate limit",
)
LATENCY = Histogram(
    "paywatch_ingest_seconds",
    "Time from request start to answer, by outcome",
    ["outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


@lru_cache(maxsize=1024)  # providers x outcomes: a handful; bounded all the same
def _children(provider: str, outcome: str) -> tuple[Counter, Histogram]:
    return REQUESTS.labels(provider, outcome), LATENCY.labels(outcome)


def count(provider: str, outcome: str, seconds: float) -> None:
    """One answered webhook request (label children looked up once per pair, not per call)."""
    requests, latency = _children(provider, outcome)
    requests.inc()
    latency.observe(seconds)
