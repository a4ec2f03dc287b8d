"""Outbound end to end: a signed Stripe failure -> ingest -> worker -> executor process ->
the tenant's webhook receiver, every delivery signed the Standard Webhooks way.

The processes run as a user runs them (`paywatch run ingest|worker|executor`) at
PAYWATCH_TIME_SCALE=43200 (a saga day is 2 s); the sandbox simulator recovers every soft
decline, so the day-1 retry recovers the invoice: the receiver gets the
``recovery.retry_due`` of that retry, then ``invoice.recovered``, and the tenant's Slack
endpoint a message linking the invoice's timeline under PAYWATCH_PUBLIC_API_URL.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiohttp import web
from standardwebhooks import Webhook

from paywatch.outbound.endpoints import TargetPolicy, add_endpoint
from paywatch.settings import Settings
from paywatch.tenants.crypto import SecretBox
from paywatch.tenants.store import create_tenant, set_secrets
from tests.builders import stripe as samples
from tests.integration.test_cli import paywatch
from tests.kafka_helpers import eventually
from tests.procs import log_tail, paywatch_process, settings_env

STRIPE_SECRET = "whsec_outbound_e2e"
SCALE = 43200.0


@dataclass
class Receiver:
    """A tenant's webhook endpoint on 127.0.0.1: every request's headers and body."""

    url: str = ""
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    slack: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    async def handle_slack(self, request: web.Request) -> web.Response:
        self.slack.append(json.loads(await request.read()))
        return web.Response(status=200, text="ok")

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.got]


@pytest.fixture
async def receiver(free_port: Callable[[], int]) -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hooks", found.handle)
    app.router.add_post("/slack", found.handle_slack)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    found.url = f"http://127.0.0.1:{port}/hooks"
    yield found
    await runner.cleanup()


async def tenant_with_endpoints(settings: Settings, dsn: str, tenant: str, url: str) -> str:
    """The tenant, its Stripe secret, a webhook endpoint at `url` and a Slack one at
    `url`'s /slack; the webhook's signing secret."""
    box = SecretBox(settings.secret_key.get_secret_value())
    conn = await asyncpg.connect(dsn)
    try:
        await create_tenant(conn, tenant)
        await set_secrets(conn, box, tenant, "stripe", {"signing_secret": STRIPE_SECRET})
        local = TargetPolicy(require_https=False, refuse_private=False)
        made = await add_endpoint(
            conn, box, tenant, url, ["recovery.retry_due", "invoice.recovered"], policy=local
        )
        slack = url.replace("/hooks", "/slack")
        await add_endpoint(
            conn, box, tenant, slack, ["invoice.recovered"], kind="slack", policy=local
        )
    finally:
        await conn.close()
    assert made.secret is not None
    return made.secret


def failure(invoice: str) -> bytes:
    charge = samples.stripe_charge_failed(
        basil=False, invoice=invoice, charge_id=f"ch_{invoice}", amount=4900,
        reason="insufficient_funds", network_decline_code="51",
    )  # fmt: skip
    charge["payment_method_details"]["card"]["fingerprint"] = f"fp_{invoice}"
    now = int(time.time())
    event = samples.stripe_event(
        "charge.failed", charge, event_id=f"evt_{invoice}", created=now, api_version="2024-06-20"
    )
    return samples.stripe_body(event)


async def test_a_stripe_failure_reaches_the_tenant_as_signed_retry_due_and_recovered(
    test_settings: Settings,
    pg_dsn: str,
    unique: str,
    tmp_path: Path,
    free_port: Callable[[], int],
    receiver: Receiver,
) -> None:
    settings = test_settings.model_copy(
        update={
            "ingest_port": free_port(),
            "time_scale": SCALE,
            "simulator_success": '{"SOFT": 1}',
        }
    )
    secret = await tenant_with_endpoints(settings, pg_dsn, unique, receiver.url)
    owned = paywatch(
        settings, "policy", "set", unique, "--file", "-", input='{"owners": {"stripe": "paywatch"}}'
    )
    assert owned.returncode == 0, owned.stderr
    logs = {name: tmp_path / f"{name}.log" for name in ("ingest", "worker", "executor")}
    env = settings_env(settings) | {"PAYWATCH_PUBLIC_API_URL": "https://paywatch.example.com"}
    with (
        paywatch_process(settings, "run", "ingest", log=logs["ingest"]) as ingest,
        paywatch_process(settings, "run", "worker", log=logs["worker"]) as worker,
        paywatch_process(settings, "run", "executor", log=logs["executor"], env=env) as executor,
    ):
        procs = {"ingest": ingest, "worker": worker, "executor": executor}

        def alive() -> None:
            for name, proc in procs.items():
                assert proc.poll() is None, f"{name} exited:\n{log_tail(logs[name])}"

        invoice = f"in_{unique}"
        body = failure(invoice)
        url = f"http://127.0.0.1:{settings.ingest_port}/webhooks/stripe/{unique}"
        async with httpx.AsyncClient(timeout=10) as client:

            async def accepted() -> bool:
                alive()
                sig = samples.sign_stripe(body, STRIPE_SECRET, int(time.time()))
                try:
                    resp = await client.post(url, content=body, headers={"Stripe-Signature": sig})
                except httpx.TransportError:
                    return False  # ingest still starting
                return resp.status_code == 200

            await eventually(accepted, timeout=120, what="ingest accepting the failure")

        async def told() -> list[dict[str, Any]] | None:
            alive()
            bodies = receiver.bodies()
            types = {b["type"] for b in bodies}
            wanted = {"recovery.retry_due", "invoice.recovered"} <= types and receiver.slack
            return bodies if wanted else None

        bodies = await eventually(
            told, timeout=240, what="retry_due and invoice.recovered, and the Slack message"
        )

    hook = Webhook(secret)
    for headers, raw in receiver.got:
        lowered = {k.lower(): v for k, v in headers.items()}
        assert hook.verify(raw, lowered) == json.loads(raw)  # raises on a bad signature
        assert lowered["webhook-id"] == json.loads(raw)["id"]
    ids = [b["id"] for b in bodies]
    assert len(ids) == len(set(ids)), ids  # each event once
    retry = next(b for b in bodies if b["type"] == "recovery.retry_due")
    data = retry["data"]
    assert (retry["tenant"], data["invoice_ref"]) == (unique, invoice)
    assert (data["amount_minor"], data["currency"], data["attempt"]) == (4900, "USD", 1)
    assert data["rule"]["id"] and data["rule"]["edition"]
    assert data["timeline"] == f"/v1/invoices/{invoice}/timeline"
    recovered = next(b for b in bodies if b["type"] == "invoice.recovered")
    assert recovered["data"]["state"] == "recovered"
    assert recovered["data"]["previous_state"] == "retrying"
    # The Slack endpoint got a message, not the envelope, linking the public API URL.
    [message] = receiver.slack
    assert "invoice.recovered" in message["text"] and invoice in message["text"]
    link = f"<https://paywatch.example.com/v1/invoices/{invoice}/timeline|"
    assert link in json.dumps(message["blocks"])
