"""Audit from the log (issue 10 items 4, 5) on real Kafka + Postgres: `paywatch audit invoice`
reads an invoice's trail from Kafka, operator actions land on ops.audit (and nowhere when
Kafka refuses them), and `paywatch replay --renormalize` finds and appends what changed."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from paywatch.api.ingest.app import create_app as create_ingest
from paywatch.api.query.app import create_app
from paywatch.kafka.codec import make_codec
from paywatch.ops.log_scan import partition_of
from paywatch.schemas.models import Decline, DeclineCategory, PaymentEvent
from paywatch.schemas.topics import invoice_key
from paywatch.settings import Settings
from paywatch.tenants.crypto import SecretBox
from paywatch.tenants.store import create_tenant, set_secrets
from tests.builders import stripe as samples
from tests.kafka_helpers import eventually, publish, topic_records
from tests.procs import log_tail, paywatch_process, settings_env

pytestmark = pytest.mark.integration

SECRET = "whsec_audit_secret"


def cli(settings: Settings, *args: str, env: dict[str, str] | None = None) -> Any:
    """`python -m paywatch <args>` as a user runs it; the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "paywatch", *args],
        env=env or settings_env(settings), capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def json_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


async def post_failure(settings: Settings, pg_dsn: str, tenant: str) -> bytes:
    """One signed invoice.payment_failed for in_A through ingest; the exact body posted."""
    now = int(time.time())
    doc = samples.stripe_event(
        "invoice.payment_failed",
        samples.stripe_invoice(basil=True, invoice_id="in_A", amount_due=4900, created=now),
        event_id="evt_A1",
        created=now,
    )
    body = samples.stripe_body(doc)
    app = create_ingest(settings, str(settings.kafka_bootstrap), pg_dsn)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            sig = samples.sign_stripe(body, SECRET, int(time.time()))
            r = await client.post(
                f"/webhooks/stripe/{tenant}", content=body, headers={"Stripe-Signature": sig}
            )
            assert r.status_code == 200, r.text
    return body


async def tenant_with_stripe(pg_dsn: str, settings: Settings, tenant: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await create_tenant(conn, tenant)
        box = SecretBox(settings.secret_key.get_secret_value())
        await set_secrets(conn, box, tenant, "stripe", {"signing_secret": SECRET})
    finally:
        await conn.close()


def kinds_of(lines: list[dict[str, Any]]) -> set[str]:
    return {line["kind"] for line in lines}


async def test_audit_invoice_and_renormalize_read_the_log(
    test_settings: Settings, pg_dsn: str, unique: str, tmp_path: Path
) -> None:
    s = test_settings
    await tenant_with_stripe(pg_dsn, s, unique)
    body = await post_failure(s, pg_dsn, unique)
    log = tmp_path / "worker.log"
    with paywatch_process(s, "run", "worker", log=log) as worker:
        said: list[str] = []

        async def trail() -> list[dict[str, Any]]:
            assert worker.poll() is None, log_tail(log)
            done = cli(s, "audit", "invoice", unique, "in_A", "--json")
            said[:] = [done.stdout[-2000:], done.stderr[-2000:]]
            lines = json_lines(done.stdout) if done.returncode == 0 else []
            return lines if {"transition", "command"} <= kinds_of(lines) else []

        try:
            lines = await eventually(
                trail, timeout=180, what="the invoice's transition and command"
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nlast audit: {said}\n{log_tail(log)}") from None

    assert kinds_of(lines) == {"raw_webhook", "event", "transition", "command"}
    assert all({"kind", "topic", "partition", "offset", "at"} <= set(x) for x in lines)
    assert [x["at"] for x in lines] == sorted(x["at"] for x in lines)
    raw = next(x for x in lines if x["kind"] == "raw_webhook")
    assert (raw["sha256"], raw["size"]) == (hashlib.sha256(body).hexdigest(), len(body))
    assert "body" not in raw and "whsec" not in json.dumps(lines)
    event = next(x for x in lines if x["kind"] == "event")
    assert event["raw"] == {k: raw[k] for k in ("topic", "partition", "offset")}
    transition = next(x for x in lines if x["kind"] == "transition")
    assert "@" in transition["rule"] and transition["to_state"]
    # The partition read is the one the worker's producer chose for the key.
    events = await topic_records(s.kafka_bootstrap, s.topic("payments.events"))
    key = invoice_key(unique, "in_A").encode()
    (on,) = {r.partition for r in events if r.key == key}
    assert event["partition"] == on == partition_of(key, 3)
    human = cli(s, "audit", "invoice", unique, "in_A")
    assert human.returncode == 0 and "raw_webhook" in human.stdout, human.stderr
    assert hashlib.sha256(body).hexdigest() in human.stdout
    missing = cli(s, "audit", "invoice", unique, "in_nope")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1, missing.stderr

    await check_renormalize(s, unique, event["event_id"])


async def check_renormalize(s: Settings, tenant: str, event_id: str) -> None:
    """Unchanged at first; an event logged by an 'older normalizer' is found, diffed,
    appended with its id, and then unchanged."""
    since = "2000-01-01"
    first = cli(s, "replay", "--renormalize", "--from", since, "--tenant", tenant, "--dry-run")
    assert first.returncode == 0, first.stderr
    assert "1 event(s): 1 unchanged, 0 changed, 0 new" in first.stdout, first.stdout
    codec = make_codec(s)
    (current,) = [
        e
        for r in await topic_records(s.kafka_bootstrap, s.topic("payments.events"))
        if (e := codec.decode(r.value, PaymentEvent)).event_id == event_id
    ]
    older = current.model_copy(
        update={"decline": Decline(code="old", category=DeclineCategory.HARD)}
    )
    await publish(s, s.kafka_bootstrap, [older])

    dry = cli(s, "replay", "--renormalize", "--from", since, "--tenant", tenant, "--dry-run",
              "--json")  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    (change,) = [x for x in json_lines(dry.stdout) if "status" in x]
    assert (change["status"], change["event_id"]) == ("changed", event_id)
    assert change["diff"]["decline.category"] == {"before": "HARD", "now": current.decline.category}
    assert json_lines(dry.stdout)[-1]["summary"]["would append"] == 1

    done = cli(s, "replay", "--renormalize", "--from", since, "--tenant", tenant)
    assert done.returncode == 0 and "appended 1 to payments.events" in done.stdout, done.stdout
    again = cli(s, "replay", "--renormalize", "--from", since, "--tenant", tenant, "--dry-run")
    assert "1 unchanged, 0 changed, 0 new" in again.stdout, again.stdout
    ops = json_lines(cli(s, "audit", "ops", "--tenant", tenant, "--json").stdout)
    assert [(x["action"], x["details"]["changed"]) for x in ops] == [("replay.renormalize", "1")]


async def count_keys(pg_dsn: str, tenant: str) -> int:
    conn = await asyncpg.connect(pg_dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM api_keys WHERE tenant = $1", tenant))
    finally:
        await conn.close()


async def test_operator_actions_are_on_ops_audit_or_not_done(
    test_settings: Settings, pg_dsn: str, unique: str, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    s = test_settings
    assert cli(s, "tenant", "create", unique).returncode == 0
    made = cli(s, "apikey", "create", unique, "--role", "admin")
    assert made.returncode == 0, made.stderr
    admin = made.stdout.splitlines()[-1]
    operator = cli(s, "apikey", "create", unique, "--role", "operator").stdout.splitlines()[-1]
    app = create_app(s, pg_dsn, s.kafka_bootstrap)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
            r = await api.post("/v1/apikeys", json={"role": "viewer"},
                               headers={"Authorization": f"Bearer {admin}"})  # fmt: skip
            assert r.status_code == 201, r.text
            viewer_id = r.json()["key_id"]
    ops = json_lines(cli(s, "audit", "ops", "--tenant", unique, "--json").stdout)
    assert [(x["action"], x["actor"].split(":")[0]) for x in ops] == [
        ("apikey.create", "cli"), ("apikey.create", "cli"), ("apikey.create", "api"),
    ]  # fmt: skip
    assert ops[2]["subject"] == viewer_id and ops[2]["details"] == {"role": "viewer"}
    assert all(x["topic"] == s.topic("ops.audit") for x in ops)

    await check_api_listing(s, pg_dsn, unique, admin, operator, viewer_id, tmp_path)

    before = await count_keys(pg_dsn, unique)
    dead = f"127.0.0.1:{free_port()}"
    down = create_app(s, pg_dsn, dead)
    async with down.router.lifespan_context(down):
        transport = httpx.ASGITransport(app=down)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
            r = await api.post("/v1/apikeys", json={"role": "viewer"},
                               headers={"Authorization": f"Bearer {admin}"})  # fmt: skip
    assert r.status_code == 503 and r.json()["error"] == "kafka_unavailable", r.text
    env = settings_env(s) | {"PAYWATCH_KAFKA_BOOTSTRAP": dead}
    refused = cli(s, "apikey", "create", unique, "--role", "viewer", env=env)
    assert refused.returncode == 1, refused.stdout
    assert "nothing was changed" in refused.stderr and refused.stderr.count("\n") == 1
    assert await count_keys(pg_dsn, unique) == before


async def check_api_listing(
    s: Settings, pg_dsn: str, tenant: str, admin: str, operator: str, viewer_id: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    """GET /v1/ops/audit lists the tenant's actions once the projector has them."""
    app = create_app(s, pg_dsn, s.kafka_bootstrap)
    log = tmp_path / "projector.log"
    with paywatch_process(s, "run", "projector", log=log) as projector:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:

                async def listed() -> list[dict[str, Any]]:
                    assert projector.poll() is None, log_tail(log)
                    r = await api.get("/v1/ops/audit",
                                      headers={"Authorization": f"Bearer {admin}"})  # fmt: skip
                    assert r.status_code == 200, r.text
                    data: list[dict[str, Any]] = r.json()["data"]
                    return data if len(data) == 3 else []

                data = await eventually(listed, timeout=120, what="three projected actions")
                assert data[0]["subject"] == viewer_id  # newest first
                assert data[0]["actor"].startswith("api:key_")
                assert data[0]["kafka"]["topic"] == s.topic("ops.audit")
                r = await api.get("/v1/ops/audit", headers={"Authorization": f"Bearer {operator}"})
                assert r.status_code == 403, r.text
                r = await api.get("/v1/ops/audit?action=Bad Action",
                                  headers={"Authorization": f"Bearer {admin}"})  # fmt: skip
                assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text
