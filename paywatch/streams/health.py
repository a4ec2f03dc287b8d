"""The worker's health: a Faust sensor feeding the process tracker, and its heartbeat task.

The sensor sees every event a stream takes (the last offset read per partition, whose
distance to the high watermark is the lag) and every send to a dead-letter topic (the
letter is decoded for its stage and error); the stages count their records and batch
sizes themselves (``batches.Stage.deliver``). The
heartbeat (:class:`paywatch.kafka.heartbeat.Heartbeat`) runs as a Faust task; a worker
that crashed records its crash reason as an unclean stop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from faust.sensors import Sensor

from paywatch.errors import CodecError
from paywatch.kafka.codec import make_codec
from paywatch.kafka.health import POSITION_TIMEOUT_S, Tracker, partition_name, tracker
from paywatch.kafka.heartbeat import Heartbeat
from paywatch.schemas.codec import Codec
from paywatch.schemas.models import DeadLetter
from paywatch.schemas.topics import DLQ_SOURCES, dlq_name
from paywatch.settings import Settings

log = logging.getLogger(__name__)


def _changelog(topic: str) -> bool:
    return topic.endswith("-changelog")


class WorkerSensor(Sensor):
    """Counts stream events and dead letters of the worker into a tracker."""

    def __init__(self, codec: Codec, dlqs: frozenset[str], target: Tracker) -> None:
        super().__init__()
        self._codec, self._dlqs, self._target = codec, dlqs, target
        self.read: dict[tuple[str, int], int] = {}

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        """One record taken by an agent's stream."""
        if _changelog(tp.topic):
            return
        self.read[(tp.topic, tp.partition)] = offset

    def on_send_initiated(
        self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
    ) -> Any:
        """A send: remember the value of dead letters until their ack."""
        return (topic, message.value) if topic in self._dlqs else None

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        """A dead letter acked by the broker counts."""
        if state is None:
            return
        topic, value = state
        try:
            letter = self._codec.decode(value, DeadLetter, topic=topic)
        except CodecError as exc:
            self._target.dead_letter("unknown", exc)
            return
        self._target.dead_letter(letter.stage, f"{letter.source_topic}: {letter.error}")

    async def lag(self, consumer: Any) -> dict[str, int]:
        """High watermark minus the next offset to read, per source partition assigned."""
        lag = {}
        for tp in sorted(consumer.assignment()):
            high = consumer.highwater(tp)
            if _changelog(tp.topic) or high is None:
                continue
            read = self.read.get((tp.topic, tp.partition))
            if read is None:
                try:
                    position = await asyncio.wait_for(consumer.position(tp), POSITION_TIMEOUT_S)
                except TimeoutError:
                    continue
                if position is None:
                    continue
            else:
                position = read + 1
            lag[partition_name(tp.topic, tp.partition)] = max(0, high - position)
        return lag


def install(app: Any, settings: Settings, dsn: str, target: Tracker = tracker) -> WorkerSensor:
    """Add the sensor and the heartbeat task to the worker's Faust app."""
    dlqs = frozenset(settings.topic(dlq_name(t)) for t in DLQ_SOURCES)
    sensor = WorkerSensor(make_codec(settings), dlqs, target)
    app.sensors.add(sensor)

    async def worker_lag() -> dict[str, int]:
        return await sensor.lag(app.consumer)

    target.lag_source = worker_lag

    @app.task  # type: ignore[untyped-decorator]
    async def heartbeat() -> None:
        beat = Heartbeat(settings, dsn, "worker", target)
        await beat.__aenter__()
        try:
            await asyncio.Event().wait()  # until the worker stops and cancels its tasks
        finally:
            await beat.close(app.crash_reason)

    return sensor
