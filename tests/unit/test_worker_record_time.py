"""Saga and card-ledger decisions are taken as of their record's Kafka timestamp.

A record replayed after a crash (its outputs acked, its table write lost) must get the
decision it got the first time; with the processing time instead, a replay a minute later
on a fast saga clock turned 'retrying' into 'exhausted' for the same event.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from paywatch.streams.batches import record_time

FALLBACK = datetime(2030, 1, 1, tzinfo=UTC)


def test_a_record_is_decided_as_of_its_timestamp() -> None:
    stamped = SimpleNamespace(timestamp=1_800_000_000.25)  # seconds, as Faust gives them
    assert record_time(stamped, FALLBACK) == datetime.fromtimestamp(1_800_000_000.25, UTC)


def test_a_record_without_a_timestamp_uses_the_processing_time() -> None:
    assert record_time(SimpleNamespace(timestamp=None), FALLBACK) == FALLBACK
    assert record_time(SimpleNamespace(timestamp=-1.0), FALLBACK) == FALLBACK
    assert record_time(SimpleNamespace(), FALLBACK) == FALLBACK
