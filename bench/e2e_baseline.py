"""The hand-written baseline pipeline of bench_e2e.py: the same I/O as paywatch, nothing else.

``python bench/e2e_baseline.py app PORT BOOTSTRAP TOPIC``: a bare FastAPI app (paywatch's own
uvicorn settings, ``paywatch.ops.runners._serve``) whose ``POST /webhooks/{provider}/{tenant}``
reads the body, appends it to TOPIC with paywatch's producer settings (acks=all, idempotent,
no linger) and answers ``{"status":"accepted","partition":P,"offset":O}`` after the ack.

``python bench/e2e_baseline.py consumer BOOTSTRAP TOPIC DSN``: a consumer-group member
(paywatch's consumer settings) that takes batches of up to 5,000 records, COPYs them into
``bench_webhooks`` and upserts its ``bench_checkpoints`` in the same transaction, then
commits the offsets. No signature check, no parsing, no state: the floor of the pipeline.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from paywatch.kafka.clients import group_consumer, reliable_producer
from paywatch.ops.runners import _serve
from paywatch.settings import Settings

TABLES = """
CREATE TABLE IF NOT EXISTS bench_webhooks (
    partition integer NOT NULL, "offset" bigint NOT NULL, body bytea NOT NULL,
    PRIMARY KEY (partition, "offset"));
CREATE TABLE IF NOT EXISTS bench_checkpoints (
    topic text NOT NULL, partition integer NOT NULL, next_offset bigint NOT NULL,
    PRIMARY KEY (topic, partition));
"""
CHECKPOINT = (
    "INSERT INTO bench_checkpoints (topic, partition, next_offset) VALUES ($1, $2, $3)"
    " ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset"
)
BATCH = 5_000


def app(bootstrap: str, topic: str) -> FastAPI:
    """The bare ingest endpoint."""

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        producer = reliable_producer(bootstrap, client_id="bench-baseline")
        await producer.start()
        api.state.producer = producer
        try:
            yield
        finally:
            await producer.stop()

    api = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @api.post("/webhooks/{provider}/{tenant}")
    async def accept(provider: str, tenant: str, request: Request) -> JSONResponse:
        meta = await request.app.state.producer.send_and_wait(topic, await request.body())
        return JSONResponse(
            {"status": "accepted", "partition": meta.partition, "offset": meta.offset})

    @api.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return api


async def consume(bootstrap: str, topic: str, dsn: str) -> None:
    """Kafka batches -> COPY + checkpoints in one transaction -> commit, until SIGTERM."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    conn = await asyncpg.connect(dsn)
    await conn.execute(TABLES)
    consumer = group_consumer(bootstrap, group_id="bench-baseline", client_id="bench-baseline")
    consumer.subscribe([topic])
    await consumer.start()
    print("baseline consumer started", flush=True)
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=BATCH)
            rows = [(m.partition, m.offset, m.value) for msgs in batches.values() for m in msgs]
            if not rows:
                continue
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "bench_webhooks", records=rows, columns=["partition", "offset", "body"])
                await conn.executemany(
                    CHECKPOINT, [(tp.topic, tp.partition, msgs[-1].offset + 1)
                                 for tp, msgs in batches.items()])
            await consumer.commit()
    finally:
        await consumer.stop()
        await conn.close()


def main(argv: list[str]) -> int:
    """`app PORT BOOTSTRAP TOPIC` or `consumer BOOTSTRAP TOPIC DSN`."""
    if len(argv) == 4 and argv[0] == "app":
        _serve(app(argv[2], argv[3]), Settings(bind_host="127.0.0.1"), int(argv[1]))
        return 0
    if len(argv) == 4 and argv[0] == "consumer":
        asyncio.run(consume(argv[1], argv[2], argv[3]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
