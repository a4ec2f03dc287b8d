"""The executor's dead letters: queued during a step, sent and acknowledged together.

A dead-lettered record keeps its partition's watermark until its letter is acked, so
a crash before that re-reads it and dead-letters it again (at least once, never lost).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition

from paywatch.executor import effects
from paywatch.executor.decide import Coords, Output
from paywatch.executor.failures import Failed, dead_letter
from paywatch.executor.metrics import DEAD_LETTERS
from paywatch.schemas.codec import Codec
from paywatch.schemas.models import DeadLetter, dead_letter_reason

log = logging.getLogger(__name__)

Retrying = Callable[[Callable[[], Awaitable[Failed[DeadLetter]]]], Awaitable[Failed[DeadLetter]]]
"""Runs a send until it is not transiently failing (the executor's backoff)."""


class DeadLetters:
    """Dead letters of recovery.commands records, flushed once per step."""

    def __init__(
        self, producer: AIOKafkaProducer, codec: Codec, topic: str, clock: Callable[[], Any]
    ) -> None:
        self._producer, self._codec, self._topic, self._clock = producer, codec, topic, clock
        self._queued: list[tuple[TopicPartition, DeadLetter]] = []

    def add(self, tp: TopicPartition, rec: Any, stage: str, exc: BaseException) -> None:
        """Queue the letter of `rec`, which failed at `stage`."""
        log.warning("dead letter %s[%s]@%s (%s): %s", rec.topic, rec.partition, rec.offset,
                    stage, dead_letter_reason(exc))  # fmt: skip
        where = Coords(rec.topic, rec.partition, rec.offset)
        self._queued.append((tp, dead_letter(where, rec.key, rec.value, stage, exc, self._clock())))

    async def flush(self, retrying: Retrying) -> list[tuple[TopicPartition, int]]:
        """Send the queued letters and wait for the acks; the (partition, offset) released."""
        queued, self._queued = self._queued, []
        if not queued:
            return []
        refused = await retrying(lambda: self._send([x for _, x in queued]))
        if refused:  # cannot happen to a letter cut to fit; keep its coordinates anyway
            bare = [x.model_copy(update={"payload": b"", "key": None}) for x, _ in refused]
            await retrying(lambda: self._send(bare))
        for _, letter in queued:
            DEAD_LETTERS.labels(letter.stage).inc()
        return [(tp, letter.source_offset) for tp, letter in queued]

    async def _send(self, letters: list[DeadLetter]) -> Failed[DeadLetter]:
        outputs = [
            (x, Output(self._topic, x.key, self._codec.encode(x, self._topic))) for x in letters
        ]
        return await effects.send_all(self._producer, outputs)
