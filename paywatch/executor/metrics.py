"""Prometheus metrics of the executor process (scraped later; no HTTP endpoint yet)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

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
