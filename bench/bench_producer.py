"""CPU per acked record: ingest's aiokafka appender vs confluent-kafka (librdkafka) in the same run.

Run: ``.venv/bin/python bench/bench_producer.py [--seconds 8] [--rounds 2]``. Starts its own
embedded Kafka (free ports), creates a 12-partition topic and, for each producer in turn,
keeps 64 coroutines each appending a 2.9 KB record and awaiting its ``acks=all`` ack (ingest's
pattern: one webhook, one awaited append). Reports records/s and process CPU per record (all
threads: librdkafka's own threads count). About 2 minutes. Pin it (``taskset -c 0``) to
compare with the ingest bench's one-core server.

The confluent-kafka variant is the cheapest asyncio bridge found: delivery callbacks run in
one poll thread that hands each batch of results to the loop with one
``call_soon_threadsafe``, not one wake-up per record.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import sys
import threading
import time
from typing import Any, Protocol

import _repo  # noqa: F401  (puts tests.builders on sys.path)
from bench_ingest import own_kafka, progress
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from paywatch.kafka.appender import KafkaAppender

TOPIC = "bench.producer"
VALUE = os.urandom(1450).hex().encode()[:2900]
CONCURRENCY = 64
ACK_TIMEOUT_S = 10.0


class Appender(Protocol):
    """What the load loop needs of a producer."""

    async def append(self, topic: str, key: bytes, value: bytes) -> Any:
        """Write one record; return after the broker ack."""
        ...


class ConfluentAppender:
    """confluent-kafka behind an awaitable append; acks reach the loop in batches."""

    def __init__(self, bootstrap: str, linger_ms: int) -> None:
        self._producer = Producer({
            "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
            "linger.ms": linger_ms, "message.timeout.ms": int(ACK_TIMEOUT_S * 1000)})
        self._loop = asyncio.get_running_loop()
        # Appended by the poll thread, drained by the loop (deque: both ends thread-safe).
        self._done: collections.deque[tuple[asyncio.Future[Any], Any, Any]] = (
            collections.deque())
        self._stopping = False
        self._poller = threading.Thread(target=self._poll, daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stopping:
            self._producer.poll(0.05)
            if self._done:
                self._loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        done = self._done
        while done:
            future, err, msg = done.popleft()
            if future.done():
                continue
            if err is None:
                future.set_result((msg.partition(), msg.offset()))
            else:
                future.set_exception(KafkaException(err))

    async def append(self, topic: str, key: bytes, value: bytes) -> Any:
        """Produce one record and await its delivery report."""
        future: asyncio.Future[Any] = self._loop.create_future()
        done = self._done
        self._producer.produce(topic, value, key,
                               on_delivery=lambda err, msg: done.append((future, err, msg)))
        async with asyncio.timeout(ACK_TIMEOUT_S):
            return await future

    async def stop(self) -> None:
        """Deliver what is queued, stop the poll thread."""
        self._stopping = True
        self._poller.join()
        self._producer.flush(ACK_TIMEOUT_S)


async def load(appender: Appender, seconds: float) -> tuple[int, float, float]:
    """(records acked, CPU seconds of this process, wall seconds) for ``seconds`` of load."""
    acked = 0
    end = time.monotonic() + seconds

    async def one() -> None:
        nonlocal acked
        while time.monotonic() < end:
            await appender.append(TOPIC, f"t/stripe/in_{acked}".encode(), VALUE)
            acked += 1

    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.gather(*(one() for _ in range(CONCURRENCY)))
    return acked, time.process_time() - cpu, time.monotonic() - wall


async def measure(bootstrap: str, args: argparse.Namespace) -> list[str]:
    """Rounds of every producer, alternated; one Markdown row per producer and round."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(TOPIC, 12, 1)])[TOPIC].result()
    rows = []
    for rnd in range(1, args.rounds + 1):
        ingest = KafkaAppender(bootstrap, ACK_TIMEOUT_S)
        await ingest.start()
        rows.append(await _row(f"aiokafka (ingest's appender), round {rnd}", ingest, args))
        await ingest.stop()
        for linger in (0, 1, 5):
            other = ConfluentAppender(bootstrap, linger)
            rows.append(await _row(f"confluent-kafka linger.ms={linger}, round {rnd}", other,
                                   args))
            await other.stop()
    return rows


async def _row(name: str, appender: Appender, args: argparse.Namespace) -> str:
    progress(name)
    await load(appender, 2.0)  # warm-up: connections, metadata, producer id
    acked, cpu, wall = await load(appender, args.seconds)
    return f"| {name} | {acked / wall:,.0f} | {cpu / acked * 1e6:.1f} |"


def main(argv: list[str]) -> int:
    """Run the rounds on an own Kafka; print the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    with own_kafka() as (_, kafka):
        rows = asyncio.run(measure(kafka.bootstrap, args))
    command = " ".join([".venv/bin/python bench/bench_producer.py", *argv])
    print(f"Command: `{command}`\n")
    print(f"{CONCURRENCY} concurrent awaited appends of {len(VALUE)} B, acks=all, idempotent, "
          f"12 partitions, one broker; CPU = this process, all threads.\n")
    print("| producer | acked records/s | CPU µs per record |\n|---|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
