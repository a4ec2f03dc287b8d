"""Load generator of bench_e2e.py: signed webhooks at a fixed offered rate, one row per request.

Run (by bench_e2e.py): ``python bench/e2e_load.py --port P --path /webhooks/stripe/demo
--secret S --rate 1000 --seconds 60 --connections 64 --seed 7 --tag m --out rows.csv``.

Open loop: request i is due at start + i/rate whatever happened to the others; due requests
queue for one of ``--connections`` keep-alive HTTP/1.1 connections (a minimal client on
asyncio streams: building, signing and parsing cost a few µs, so the generator takes little
of the machine it measures). Each body is built and signed (Stripe's HMAC, timestamp now)
when its connection takes it. Requests still queued when the duration ends are not sent and
are counted as such. CSV columns: ``i,kind,due,sent,done,status,partition,offset,event_id``
(times in epoch seconds, ``partition``/``offset`` from the JSON answer, -1 when absent).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from e2e_mix import Mix, Webhook

from tests.builders.stripe import sign_stripe

COORDS = re.compile(rb'"partition"\s*:\s*(\d+)\s*,\s*"offset"\s*:\s*(\d+)')
STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})")


@dataclass
class Load:
    """What the generator sends and what it saw."""

    args: argparse.Namespace
    webhooks: Iterator[Webhook]
    queue: asyncio.Queue[tuple[int, float]] = field(default_factory=asyncio.Queue)
    rows: list[str] = field(default_factory=list)
    errors: int = 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--tag", default="m")
    p.add_argument("--created", type=int, default=int(time.time()))
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args(argv)


def request(load: Load, body: bytes) -> bytes:
    """The bytes of one signed POST."""
    a = load.args
    head = (
        f"POST {a.path} HTTP/1.1\r\nHost: {a.host}:{a.port}\r\n"
        "Content-Type: application/json\r\nUser-Agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)\r\n"
        f"Stripe-Signature: {sign_stripe(body, a.secret, int(time.time()))}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response with a Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    match = STATUS_LINE.match(head)
    status = int(match.group(1)) if match else 0
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return status, await reader.readexactly(length) if length else b""


async def connection(load: Load) -> None:
    """One keep-alive connection taking due requests until cancelled (reconnects on errors)."""
    a = load.args
    streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    try:
        while True:
            i, due = await load.queue.get()
            webhook = next(load.webhooks)
            sent = time.time()
            try:
                if streams is None:
                    streams = await asyncio.open_connection(a.host, a.port)
                streams[1].write(request(load, webhook.body))
                status, body = await response(streams[0])
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                load.errors += 1
                status, body = 0, b""
                if streams is not None:
                    streams[1].close()
                streams = None
            done = time.time()
            coords = COORDS.search(body)
            part, off = (coords.group(1).decode(), coords.group(2).decode()) if coords else (
                "-1", "-1")
            load.rows.append(
                f"{i},{webhook.kind},{due:.6f},{sent:.6f},{done:.6f},{status},{part},{off},"
                f"{webhook.event_id}")
            load.queue.task_done()
    finally:
        if streams is not None:
            streams[1].close()


async def schedule(load: Load) -> int:
    """Put request i in the queue at start + i/rate; return how many were due."""
    a = load.args
    start = time.time()
    due_count = int(a.rate * a.seconds)
    i = 0
    while i < due_count:
        now = time.time()
        while i < due_count and start + i / a.rate <= now:
            load.queue.put_nowait((i, start + i / a.rate))
            i += 1
        await asyncio.sleep(0.001)
    return due_count


async def run(args: argparse.Namespace) -> int:
    """Send, wait for what is in flight, write the rows; exit code."""
    load = Load(args, iter(Mix(args.seed, args.tag, args.created)))
    workers = [asyncio.create_task(connection(load)) for _ in range(args.connections)]
    due = await schedule(load)
    unsent = 0
    while not load.queue.empty():  # the duration is over: what has not started is not sent
        load.queue.get_nowait()
        load.queue.task_done()
        unsent += 1
    await load.queue.join()
    for task in workers:
        task.cancel()
    for task in workers:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    args.out.write_text("\n".join(load.rows) + "\n")
    print(f"due={due} sent={len(load.rows)} unsent={unsent} socket_errors={load.errors}")
    return 0


def main(argv: list[str]) -> int:
    """Entry point."""
    args = parse_args(argv)
    try:
        import uvloop

        return uvloop.run(run(args))
    except ImportError:
        return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
