"""What a running worker, projector or executor counts about itself, and its Prometheus metrics.

One :data:`tracker` per OS process (a paywatch process is one OS process). The stages call
it: ``tracker.batch(stage, n)`` after a batch of ``n`` source records is done,
``tracker.dead_letter(stage, error)`` per dead-lettered record, ``tracker.watch(consumer)``
once with the aiokafka consumer whose lag to report. The heartbeat
(:mod:`paywatch.kafka.heartbeat`) writes the figures to Postgres every few seconds and sets
the lag gauges; a logging handler it installs keeps the last error.

Metrics (served on the process's metrics port, scraped by Prometheus; the scrape job tells
the process apart): ``paywatch_records_total{stage}``, ``paywatch_batch_size{stage}``,
``paywatch_dead_letters_total{stage}``, ``paywatch_consumer_lag{topic,partition}``,
``paywatch_process_restarts``, ``paywatch_last_error_timestamp_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge, Histogram

from paywatch.db.health import Thresholds, scrub
from paywatch.settings import Settings

log = logging.getLogger(__name__)

RECORDS = Counter("paywatch_records_total", "Source records processed, by stage", ["stage"])
BATCH = Histogram(
    "paywatch_batch_size",
    "Source records per batch, by stage",
    ["stage"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000),
)
DEAD_LETTERS = Counter(
    "paywatch_dead_letters_total", "Records sent to a dead-letter topic, by stage", ["stage"]
)
LAG = Gauge(
    "paywatch_consumer_lag",
    "Records not yet read by this process, per partition it owns (high watermark - position)",
    ["topic", "partition"],
)
RESTARTS = Gauge(
    "paywatch_process_restarts",
    "Starts of this process instance after the first (from its heartbeat row)",
    ["kind"],
)
LAST_ERROR = Gauge(
    "paywatch_last_error_timestamp_seconds", "When this process last logged an error or warning"
)

LagSource = Callable[[], Awaitable[dict[str, int]]]
"""Returns records behind per ``topic[partition]`` the process owns now."""
POSITION_TIMEOUT_S = 2.0


def thresholds(settings: Settings) -> Thresholds:
    """The degraded/healthy thresholds configured for this stack."""
    return Thresholds(max_lag=settings.health_max_lag, window_s=settings.health_window_s)


def partition_name(topic: str, partition: int) -> str:
    """How a partition is named in health reports: ``topic[partition]``."""
    return f"{topic}[{partition}]"


@dataclass
class Tracker:
    """Counters of this process since it started (read by the heartbeat)."""

    records_total: int = 0
    dead_letters: int = 0
    last_dead_letter_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    lag_source: LagSource | None = None
    batches: dict[str, list[int]] = field(default_factory=dict)
    """stage -> [batches, records, largest]."""

    def batch(self, stage: str, size: int) -> None:
        """A batch of `size` source records of `stage` is done."""
        if size <= 0:
            return
        self.records(stage, size)
        BATCH.labels(stage).observe(size)
        stats = self.batches.setdefault(stage, [0, 0, 0])
        stats[0] += 1
        stats[1] += size
        stats[2] = max(stats[2], size)

    def records(self, stage: str, count: int) -> None:
        """`count` source records of `stage` are done (batches unknown)."""
        self.records_total += count
        RECORDS.labels(stage).inc(count)

    def dead_letter(self, stage: str, error: BaseException | str) -> None:
        """One record of `stage` went to its dead-letter topic because of `error`."""
        self.dead_letters += 1
        self.last_dead_letter_at = datetime.now(UTC)
        DEAD_LETTERS.labels(stage).inc()
        self.error(f"dead letter ({stage}): {_text(error)}")

    def error(self, text: str) -> None:
        """The last error (scrubbed: no card-like digits, no URL passwords)."""
        self.last_error = scrub(text)
        self.last_error_at = datetime.now(UTC)
        LAST_ERROR.set(self.last_error_at.timestamp())

    def watch(self, consumer: Any) -> None:
        """Report the lag of this aiokafka consumer's partitions."""
        self.lag_source = lambda: aiokafka_lag(consumer)

    def batch_stats(self) -> dict[str, dict[str, float]]:
        """stage -> {batches, mean, max} since start."""
        return {
            stage: {"batches": n, "mean": round(total / n, 1), "max": top}
            for stage, (n, total, top) in self.batches.items()
            if n
        }


tracker = Tracker()
"""This process's tracker."""


async def aiokafka_lag(consumer: Any) -> dict[str, int]:
    """High watermark minus position for each partition assigned to an aiokafka consumer."""
    lag = {}
    for tp in sorted(consumer.assignment()):
        high = consumer.highwater(tp)
        if high is None:  # nothing fetched from it yet
            continue
        try:
            position = await asyncio.wait_for(consumer.position(tp), POSITION_TIMEOUT_S)
        except (TimeoutError, KafkaError) as exc:  # IllegalStateError: revoked meanwhile
            log.debug("no position for %s: %r", tp, exc)
            continue
        lag[partition_name(tp.topic, tp.partition)] = max(0, high - position)
    return lag


class LastErrorHandler(logging.Handler):
    """Keeps the tracker's last error: errors of any logger, warnings of paywatch's own."""

    def __init__(self, target: Tracker) -> None:
        super().__init__(logging.WARNING)
        self._target = target

    def emit(self, record: logging.LogRecord) -> None:
        """Record one log line as the last error when it is one."""
        if record.levelno < logging.ERROR and not record.name.startswith("paywatch"):
            return
        try:
            text = record.getMessage()
        except (TypeError, ValueError):
            text = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            text = f"{text}: {_text(record.exc_info[1])}"
        self._target.error(text)


def _text(error: BaseException | str) -> str:
    return error if isinstance(error, str) else f"{type(error).__name__}: {error}"
