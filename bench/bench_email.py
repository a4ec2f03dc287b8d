"""Customer email: emails/s from the EmailDispatcher to a local SMTP server, and a baseline.

Run: ``.venv/bin/python bench/bench_email.py [--emails 2000] [--rounds 2]``. Starts its own
embedded Postgres (``.paywatch/bench-email-<pid>``, a free port) and a real SMTP server in
a child process (aiosmtpd's ``Sink`` handler on 127.0.0.1: it accepts and discards, so the
server costs the same to both sides), then, alternating in the same run:

1. Dispatcher. ``--emails`` NOTIFY_CUSTOMER commands (one customer, one invoice each, so
   the daily limit lets every one through) are enqueued in one ``outbox.enqueue`` call, then
   one ``EmailDispatcher`` (as the executor runs it: claims with leases, per-tenant lookups,
   templates rendered in the sandbox, signed links, 4 connections to the server, every send
   recorded in Postgres) is timed from its start until the last email is recorded sent.
2. Baseline. aiosmtplib sends the same number of messages (built once by the same
   ``build_message`` from a rendering of the same template) over 4 connections: no
   database, no rendering, no links.

Prints a Markdown report; stops what it started by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import _repo  # noqa: F401  (puts tests on sys.path)
import aiosmtplib
import asyncpg
from pydantic import SecretStr

from paywatch.db import create_pool, migrate
from paywatch.email import outbox, store
from paywatch.email.dispatcher import PER_SERVER, EmailDispatcher
from paywatch.email.sender import Envelope, build_message
from paywatch.email.templates import BUILTIN, SAMPLE, render
from paywatch.ops.postgres import EmbeddedPostgres
from paywatch.schemas.models import CommandType, RecoveryCommand, RuleRef
from paywatch.settings import Settings
from paywatch.tenants.crypto import SecretBox
from paywatch.tenants.store import create_tenant
from tests.conftest import free_tcp_port

ROOT = Path(__file__).resolve().parents[1]
RULE = RuleRef(id="tenant.dunning", edition="1", source="bench")


def progress(message: str) -> None:
    """A progress line on stderr (the report goes to stdout)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def smtp_sink(port: int) -> subprocess.Popen[bytes]:
    """aiosmtpd with its discarding handler, in a child process (its own CPU time)."""
    return subprocess.Popen(
        [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}",
         "-c", "aiosmtpd.handlers.Sink"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


async def wait_for_port(port: int, within: float = 30.0) -> None:
    """Until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + within
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)  # poll interval of a deadline-bound wait
            continue
        writer.close()
        return


def commands(tenant: str, n: int, round_no: int) -> list[RecoveryCommand]:
    now = datetime.now(UTC)
    return [
        RecoveryCommand(
            command_id=f"{tenant}:{round_no}:{i}",
            type=CommandType.NOTIFY_CUSTOMER,
            tenant=tenant,
            invoice_ref=f"in_{round_no}_{i}",
            customer_ref="cus_1",
            due_at=now,
            reason="bench",
            rule=RULE,
            provider="generic",
            amount_minor=4900,
            currency="EUR",
        )
        for i in range(n)
    ]


async def dispatcher_round(
    settings: Settings, pool: asyncpg.Pool, tenant: str, n: int, round_no: int
) -> float:
    """Emails/s of one EmailDispatcher sending ``n`` enqueued emails."""
    async with pool.acquire() as conn, conn.transaction():
        said = await outbox.enqueue(conn, commands(tenant, n, round_no))
    assert set(said.values()) == {"pending"}, set(said.values())
    dispatcher = EmailDispatcher(settings, pool)
    started = time.perf_counter()
    task = asyncio.create_task(dispatcher.run())
    query = "SELECT count(*) FROM emails WHERE tenant = $1 AND status = 'sent'"
    while await pool.fetchval(query, tenant) < n * round_no:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)  # poll interval; the run ends when every email is sent
    elapsed = time.perf_counter() - started
    dispatcher.stop()
    await task
    failed = await pool.fetchval(
        "SELECT count(*) FROM emails WHERE tenant = $1 AND status <> 'sent'", tenant
    )
    assert failed == 0, f"{failed} emails not sent"
    return n / elapsed


async def baseline_round(port: int, n: int) -> float:
    """Emails/s of bare aiosmtplib sending ``n`` prebuilt messages over PER_SERVER
    connections."""
    rendered = render("payment_failed", BUILTIN["payment_failed"], SAMPLE)
    envelope = Envelope("billing@acme.example", "ada@example.com", "Acme", None,
                        SAMPLE["unsubscribe_url"], "em_baseline")  # fmt: skip
    message = build_message(envelope, rendered)

    async def one_connection(count: int) -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        for _ in range(count):
            await smtp.send_message(message)
        await smtp.quit()

    started = time.perf_counter()
    shares = [n // PER_SERVER + (1 if i < n % PER_SERVER else 0) for i in range(PER_SERVER)]
    await asyncio.gather(*(one_connection(k) for k in shares))
    return n / (time.perf_counter() - started)


async def run(args: argparse.Namespace, dsn: str, port: int) -> dict[str, list[float]]:
    settings = Settings(
        database_url=dsn, smtp_url=SecretStr(f"smtp://127.0.0.1:{port}?starttls=false"),
        public_api_url="https://paywatch.example",
    )  # fmt: skip
    pool = await create_pool(dsn, min_size=2, max_size=6)
    tenant = "bench"
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            await create_tenant(conn, tenant)
            await store.enable(
                conn, SecretBox.from_settings(settings), tenant,
                from_address="billing@acme.example", display_name="Acme",
                update_url="https://acme.example/billing", by="bench",
            )  # fmt: skip
            await store.set_contact(conn, tenant, "cus_1", "ada@example.com", name="Ada", by="b")
        rates: dict[str, list[float]] = {"dispatcher": [], "baseline": []}
        for round_no in range(1, args.rounds + 1):
            progress(f"round {round_no}: dispatcher, {args.emails} emails")
            rates["dispatcher"].append(
                await dispatcher_round(settings, pool, tenant, args.emails, round_no)
            )
            progress(f"round {round_no}: baseline (aiosmtplib alone)")
            rates["baseline"].append(await baseline_round(port, args.emails))
        return rates
    finally:
        await pool.close()


def report(args: argparse.Namespace, rates: dict[str, list[float]], pg_version: str) -> None:
    d, b = (statistics.median(rates[k]) for k in ("dispatcher", "baseline"))
    print("# Email: EmailDispatcher to a local SMTP server\n")
    print(f"{platform.node()}, {platform.python_version()}, Postgres {pg_version}, "
          f"{args.emails} emails x {args.rounds} rounds, {PER_SERVER} connections\n")  # fmt: skip
    print("| sender | emails/s (median) | rounds |")
    print("|---|---|---|")
    for name, median in (("EmailDispatcher (DB claim/record, render, links)", d),
                         ("baseline: aiosmtplib alone, prebuilt message", b)):  # fmt: skip
        key = "dispatcher" if name.startswith("Email") else "baseline"
        print(f"| {name} | {median:,.0f} | {', '.join(f'{r:,.0f}' for r in rates[key])} |")
    print(f"\nDispatcher / baseline: {d / b:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    state = ROOT / ".paywatch" / f"bench-email-{os.getpid()}"
    pg = EmbeddedPostgres(Settings(state_dir=state, embedded_pg_port=free_tcp_port()))
    port = free_tcp_port()
    sink = smtp_sink(port)
    try:
        progress(f"starting Postgres in {state} and an SMTP sink on :{port}")
        pg.start()
        asyncio.run(wait_for_port(port))
        rates = asyncio.run(run(args, pg.dsn, port))
        version = asyncio.run(_version(pg.dsn))
    finally:
        sink.terminate()
        sink.wait(10)
        pg.stop()
        shutil.rmtree(state, ignore_errors=True)
    report(args, rates, version)
    return 0


async def _version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main())
