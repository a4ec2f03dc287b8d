"""Prometheus metrics of the executor process (scraped later; no HTTP endpoint yet)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

COMMANDS = Counter(
    "paywatch_executor_commands_total",
    "Recovery commands handled, by command type and outcome"
    " (succeeded, failed, recorded, duplicate)",
    ["type", "outcome"],
)
DEAD_LETTERS = Counter(
    "paywatch_executor_dead_letters_total",
    "recovery.commands records sent to the DLQ, by stage",
    ["stage"],
)
PENDING = Gauge(
    "paywatch_executor_pending_commands", "Commands fetched and waiting for their due time"
)
BATCH = Histogram(
    "paywatch_executor_batch_size",
    "Due commands decided and made durable together",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
RETRIES = Counter(
    "paywatch_executor_transient_retries_total",
    "Batches retried because Kafka or Postgres was unavailable (never dead-lettered)",
)
