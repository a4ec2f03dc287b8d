"""Sending records from an agent: every record queued, then every broker ack awaited.

At-least-once: an agent moves its tables and lets its source offset be committed only
after this returns, so a crash in between replays the input and re-sends the same records.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from paywatch.schemas.codec import Codec
from paywatch.schemas.models import Frozen


async def send_all(codec: Codec, records: Iterable[tuple[Any, bytes, Frozen]]) -> None:
    """Send ``(faust topic, key, model)`` records in order, then wait for all their acks."""
    futures = [
        await topic.send(key=key, value=codec.encode(model, topic=topic.get_topic_name()))
        for topic, key, model in records
    ]
    for fut in futures:
        await fut


async def send_raw(topic: Any, records: Iterable[tuple[str, bytes]]) -> None:
    """Send ``(key, value)`` records already encoded to one Faust topic, then await the acks."""
    futures = [await topic.send(key=key.encode(), value=value) for key, value in records]
    for fut in futures:
        await fut
