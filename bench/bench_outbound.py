"""Outbound webhooks: deliveries/s of one Dispatcher, and decision-to-receipt latency.

Run: ``.venv/bin/python bench/bench_outbound.py [--deliveries 2000] [--rounds 2]
[--commands 300] [--rate 50]``. Starts its own Kafka and Postgres (``.paywatch/bench-<pid>``,
free ports) and a receiver process (aiohttp on 127.0.0.1, answers 204 and notes when each
``webhook-id`` arrived), then, alternating in the same run:

1. Throughput. ``--deliveries`` events are enqueued for one webhook endpoint, then one
   ``paywatch.outbound.sender.Dispatcher`` (as the executor process runs it: 4 in flight per
   endpoint, a fresh connection per attempt, Standard Webhooks signatures, every attempt
   recorded in Postgres) is timed from its start until the last delivery is recorded
   succeeded. Baseline: a bare httpx POST loop sending the same bodies to the same receiver,
   4 at a time (the Dispatcher's per-endpoint limit), keep-alive on, no signing, no database.
2. Latency. The outbound producer and a Dispatcher run together as in ``paywatch run
   executor`` (the producer wakes the Dispatcher after each enqueue); ``--commands``
   RETRY_PAYMENT commands are appended to recovery.commands at ``--rate`` per second, and the
   latency of each is receipt time at the receiver minus the command record's Kafka
   timestamp (the saga's decision, appended). Baseline: the same number of bare httpx POSTs,
   one at a time, send time to receipt time.

Prints a Markdown report; stops what it started by pid. About 1-2 minutes by default.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import _repo  # noqa: F401  (puts tests on sys.path)
import asyncpg
import httpx
from aiohttp import web
from bench_ingest import cpu_model, free_port, own_stack, progress

from paywatch.db import create_pool
from paywatch.kafka.admin import ensure_topics
from paywatch.kafka.clients import reliable_producer
from paywatch.kafka.codec import make_codec
from paywatch.ops.infra import Endpoints
from paywatch.outbound.deliveries import body_bytes, enqueue
from paywatch.outbound.endpoints import TargetPolicy, add_endpoint
from paywatch.outbound.events import OutboundEvent, event_id
from paywatch.outbound.producer import OutboundProducer
from paywatch.outbound.sender import Dispatcher
from paywatch.schemas.models import CommandType, RecoveryCommand, RuleRef
from paywatch.schemas.topics import RECOVERY_COMMANDS, invoice_key, topic_specs
from paywatch.settings import Settings
from paywatch.tenants.crypto import SecretBox
from paywatch.tenants.store import create_tenant

RULE = RuleRef(id="bench", edition="2026-01", source="bench")
PER_ENDPOINT = 4
OPEN = TargetPolicy(require_https=False, refuse_private=False)

# -- the receiver (its own process, so it does not share the measured event loop) ----------


def serve(port: int) -> None:
    """The tenant's endpoint: 204 to every POST; GET /seen gives webhook-id -> arrival."""
    seen: dict[str, float] = {}

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        seen[request.headers.get("webhook-id", "")] = time.time()
        return web.Response(status=204)

    async def report(request: web.Request) -> web.Response:
        return web.json_response(seen)

    async def reset(request: web.Request) -> web.Response:
        seen.clear()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_get("/seen", report)
    app.router.add_post("/reset", reset)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


@dataclass
class Receiver:
    """The receiver process and how to ask it what arrived."""

    proc: subprocess.Popen[bytes]
    base: str

    async def seen(self) -> dict[str, float]:
        async with httpx.AsyncClient() as client:
            found: dict[str, float] = (await client.get(f"{self.base}/seen")).json()
            return found

    async def reset(self) -> None:
        async with httpx.AsyncClient() as client:
            await client.post(f"{self.base}/reset")


def start_receiver() -> Receiver:
    """The receiver process on a free port (stopped by ``measure`` by its pid)."""
    port = free_port(set())
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    return Receiver(proc, f"http://127.0.0.1:{port}")


def _answers(receiver: Receiver) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        try:
            await receiver.seen()
        except httpx.TransportError:
            return False
        return True

    return probe


async def until(probe: Callable[[], Awaitable[bool]], what: str, within_s: float = 300) -> None:
    deadline = time.monotonic() + within_s
    while not await probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)  # poll interval of a deadline-bound wait


# -- 1. throughput ---------------------------------------------------------------------------


@dataclass
class Rate:
    """One throughput run."""

    name: str
    count: int
    seconds: float
    cpu_s: float

    @property
    def per_s(self) -> float:
        return self.count / self.seconds


def events(tenant: str, tag: str, count: int) -> list[OutboundEvent]:
    now = datetime.now(UTC)
    data = {"invoice_ref": "in_1", "amount_minor": 4900, "currency": "USD", "attempt": 1}
    return [
        OutboundEvent(event_id(f"bench:{tag}:{i}"), "recovery.retry_due", tenant, now, data)
        for i in range(count)
    ]


async def tenant_endpoint(pool: asyncpg.Pool, tenant: str, url: str) -> None:
    box = SecretBox(Settings().secret_key.get_secret_value())
    async with pool.acquire() as conn:
        await create_tenant(conn, tenant)
        await add_endpoint(conn, box, tenant, url, ["recovery.retry_due"], policy=OPEN)


async def dispatcher_rate(
    pool: asyncpg.Pool, settings: Settings, url: str, tag: str, n: int
) -> Rate:
    tenant = f"b{tag}"
    await tenant_endpoint(pool, tenant, url)
    async with pool.acquire() as conn, conn.transaction():
        for event in events(tenant, tag, n):
            await enqueue(conn, event)
    dispatcher = Dispatcher(settings, pool, per_endpoint=PER_ENDPOINT)
    cpu, started = time.process_time(), time.monotonic()
    task = asyncio.create_task(dispatcher.run())

    async def done() -> bool:
        count = await pool.fetchval(
            "SELECT count(*) FROM deliveries WHERE tenant = $1 AND status = 'succeeded'", tenant
        )
        return int(count) >= n

    await until(done, f"{n} deliveries succeeded")
    seconds = time.monotonic() - started
    dispatcher.stop()
    await task
    return Rate("Dispatcher (1 endpoint)", n, seconds, time.process_time() - cpu)


async def bare_rate(url: str, tag: str, n: int) -> Rate:
    bodies = [(e.id, body_bytes(e.envelope())) for e in events("bare", tag, n)]
    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)
    cpu, started = time.process_time(), time.monotonic()
    async with httpx.AsyncClient(timeout=10) as client:

        async def worker() -> None:
            while not queue.empty():
                eid, body = queue.get_nowait()
                answer = await client.post(url, content=body, headers={"webhook-id": eid})
                answer.raise_for_status()

        await asyncio.gather(*(worker() for _ in range(PER_ENDPOINT)))
    return Rate("bare httpx loop", n, time.monotonic() - started, time.process_time() - cpu)


# -- 2. latency ------------------------------------------------------------------------------


def command(tenant: str, i: int) -> RecoveryCommand:
    now = datetime.now(UTC)
    return RecoveryCommand(
        command_id=f"{tenant}-c{i}", type=CommandType.RETRY_PAYMENT, tenant=tenant,
        invoice_ref=f"in_{i}", due_at=now, attempt=1, reason="bench", rule=RULE,
        provider="stripe", customer_ref="cus_1", amount_minor=4900, currency="USD",
        issued_at=now,
    )  # fmt: skip


async def paywatch_latency(
    ends: Endpoints, pool: asyncpg.Pool, base: Settings, receiver: Receiver, tag: str, n: int,
    rate: float,
) -> list[float]:  # fmt: skip
    """ms from each command record's timestamp to its event's receipt."""
    settings = base.model_copy(update={"topic_prefix": f"{tag}.", "app_id": f"bench-{tag}"})
    await asyncio.to_thread(ensure_topics, ends.bootstrap, topic_specs(settings), 60.0)
    tenant = f"l{tag}"
    await tenant_endpoint(pool, tenant, f"{receiver.base}/hook")
    codec = make_codec(settings)
    dispatcher = Dispatcher(settings, pool, per_endpoint=PER_ENDPOINT)
    producer = OutboundProducer(settings, ends.bootstrap, pool, codec, on_enqueued=dispatcher.wake)
    tasks = [asyncio.create_task(dispatcher.run()), asyncio.create_task(producer.run())]
    sent: dict[str, float] = {}
    kafka = reliable_producer(ends.bootstrap, client_id="bench-outbound")
    await kafka.start()
    try:
        await _warm_up(producer, tenant, settings, kafka, codec, receiver)
        topic = settings.topic(RECOVERY_COMMANDS)
        for i in range(n):
            c = command(tenant, i)
            meta = await kafka.send_and_wait(
                topic, codec.encode(c, topic), invoice_key(c.tenant, c.invoice_ref).encode()
            )
            sent[event_id(f"command:{c.command_id}")] = meta.timestamp / 1000
            await asyncio.sleep(1 / rate)  # the workload's pace, not a wait for a result

        async def arrived() -> bool:
            return set(sent) <= set(await receiver.seen())

        await until(arrived, f"{n} events at the receiver")
        seen = await receiver.seen()
    finally:
        await kafka.stop()
        producer.stop()
        dispatcher.stop()
        await asyncio.gather(*tasks)
    return [1000 * (seen[eid] - at) for eid, at in sent.items()]


async def _warm_up(
    producer: OutboundProducer, tenant: str, settings: Settings, kafka: Any, codec: Any,
    receiver: Receiver,
) -> None:  # fmt: skip
    """One command through the whole path first: the group join is not a latency."""
    c = command(tenant, -1)
    topic = settings.topic(RECOVERY_COMMANDS)
    await kafka.send_and_wait(
        topic, codec.encode(c, topic), invoice_key(c.tenant, c.invoice_ref).encode()
    )
    wanted = event_id(f"command:{c.command_id}")

    async def arrived() -> bool:
        return wanted in await receiver.seen()

    await until(arrived, "the warm-up event")


async def bare_latency(receiver: Receiver, tag: str, n: int, rate: float) -> list[float]:
    """ms from a bare POST's send to its receipt, one at a time at the same pace."""
    sent: dict[str, float] = {}
    async with httpx.AsyncClient(timeout=10) as client:
        for e in events("bare", f"lat{tag}", n):
            body = body_bytes(e.envelope())
            sent[e.id] = time.time()
            (
                await client.post(
                    f"{receiver.base}/hook", content=body, headers={"webhook-id": e.id}
                )
            ).raise_for_status()
            await asyncio.sleep(1 / rate)  # the workload's pace
    seen = await receiver.seen()
    return [1000 * (seen[eid] - at) for eid, at in sent.items()]


# -- report ----------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(
    args: argparse.Namespace, rates: list[Rate], lat: dict[str, list[float]], pg: str
) -> str:
    lines = [
        "## Outbound webhooks (issue 11): one Dispatcher, and decision-to-receipt latency",
        "",
        f"Command: `{' '.join(['.venv/bin/python bench/bench_outbound.py', *sys.argv[1:]])}`",
        f"Machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()},"
        f" PostgreSQL {pg}; Kafka and Postgres embedded; receiver: aiohttp on 127.0.0.1 in its"
        " own process.",
        "",
        "| sender | run | deliveries | deliveries/s | CPU ms per delivery (bench process) |",
        "|---|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(rates):
        lines.append(
            f"| {r.name} | {i} | {r.count:,} | {r.per_s:,.0f} | {1000 * r.cpu_s / r.count:.2f} |"
        )
    med = {
        n: statistics.median(r.per_s for r in rates if r.name == n) for n in {r.name for r in rates}
    }
    ratio = med["Dispatcher (1 endpoint)"] / med["bare httpx loop"]
    lines += [
        "",
        "Median deliveries/s: "
        + ", ".join(f"{n} {v:,.0f}" for n, v in sorted(med.items()))
        + f"; Dispatcher / bare loop (same run): **{ratio:.2f}x**",
        "",
        "| path | events | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, values in lat.items():
        lines.append(
            f"| {name} | {len(values):,} | {pct(values, 0.5):.1f} | {pct(values, 0.99):.1f}"
            f" | {max(values):.1f} |"
        )
    names = list(lat)
    added50 = pct(lat[names[0]], 0.5) - pct(lat[names[1]], 0.5)
    added99 = pct(lat[names[0]], 0.99) - pct(lat[names[1]], 0.99)
    lines += [
        "",
        f"Added by paywatch (same run): p50 **{added50:.1f} ms**, p99 **{added99:.1f} ms**",
    ]
    return "\n".join(lines)


async def measure(
    args: argparse.Namespace, ends: Endpoints, base: Settings, receiver: Receiver
) -> str:
    pool = await create_pool(ends.dsn, min_size=1, max_size=6)
    try:
        await until(_answers(receiver), "the receiver to answer")
        pg = str(await pool.fetchval("SHOW server_version"))
        rates: list[Rate] = []
        url = f"{receiver.base}/hook"
        for r in range(args.rounds):
            progress(f"round {r}: Dispatcher, {args.deliveries} deliveries")
            rates.append(
                await dispatcher_rate(pool, base, url, f"{os.getpid()}r{r}", args.deliveries)
            )
            progress(f"  {rates[-1].per_s:,.0f}/s")
            progress(f"round {r}: bare httpx loop")
            rates.append(await bare_rate(url, f"{os.getpid()}r{r}", args.deliveries))
            progress(f"  {rates[-1].per_s:,.0f}/s")
            await receiver.reset()
        progress(
            f"latency: {args.commands} commands at {args.rate}/s through producer + Dispatcher"
        )
        paywatch = await paywatch_latency(
            ends, pool, base, receiver, f"b{os.getpid()}", args.commands, args.rate
        )
        progress("latency: bare POSTs")
        bare = await bare_latency(receiver, str(os.getpid()), args.commands, args.rate)
        lat = {
            "command record -> receipt (producer + Dispatcher)": paywatch,
            "bare POST -> receipt": bare,
        }
        return report(args, rates, lat, pg)
    finally:
        await pool.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--commands", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    with own_stack() as (state, base, ends):
        logging.basicConfig(filename=state / "bench.log", level=logging.INFO)
        receiver = start_receiver()
        try:
            print(asyncio.run(measure(args, ends, base, receiver)))
        finally:
            receiver.proc.terminate()
            receiver.proc.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
